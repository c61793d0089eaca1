"""Daily OHLC sources and range-based variance proxies.

Sources are the two indices shipped with ``arch`` (S&P 500 and NASDAQ, 1999-01-04 .. 2018-12-31)
and a seeded GARCH(1,1) simulator whose OHLC comes from simulated intraday paths. Everything is in
percent: returns ``r_t = 100 ln(C_t / C_{t-1})`` and variances in %^2.

Example:
    >>> ohlc = simulate_garch_ohlc(300, seed=1)
    >>> series = daily_series(ohlc)
    >>> len(series.dates) == len(ohlc.dates) - 1  # the first day has no previous close
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recipes.volatility._optional import require
from recipes.volatility.validation import check_choice

SOURCES = ("sp500", "nasdaq", "garch_sim")
OHLC_COLUMNS = ("Open", "High", "Low", "Close")
#: Floor (in %^2) applied to variance proxies before taking logs. The shipped data never reaches it
#: (smallest S&P Parkinson value is ~0.008 %^2) but a day with High == Low, or Garman–Klass on data
#: whose Open lies outside [Low, High], would give log(0) or log of a negative number.
VARIANCE_FLOOR = 1e-4
_PARKINSON_SCALE = 1e4 / (4 * np.log(2))  # (ln H/L)^2 -> %^2 Parkinson variance
_GK_C = 2 * np.log(2) - 1


@dataclass(frozen=True)
class OHLC:
    """Daily prices with business-day dates (``datetime64[D]``, strictly increasing).

    Example:
        >>> days = np.array(["2020-01-02", "2020-01-03"], dtype="datetime64[D]")
        >>> OHLC(days, np.ones(2), np.full(2, 1.1), np.full(2, 0.9), np.ones(2)).close.shape
        (2,)
    """

    dates: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.dates)
        for name in ("open", "high", "low", "close"):
            values = getattr(self, name)
            if values.shape != (n,):
                raise ValueError(f"OHLC.{name} has shape {values.shape}; expected ({n},)")
            if not np.all(np.isfinite(values) & (values > 0)):
                raise ValueError(f"OHLC.{name} must be finite and positive")
        if n > 1 and not np.all(np.diff(self.dates) > np.timedelta64(0, "D")):
            raise ValueError("OHLC.dates must be strictly increasing")

    @classmethod
    def from_frame(cls, frame: Any) -> OHLC:
        """Build from a pandas DataFrame indexed by date with Open/High/Low/Close columns.

        Raises:
            ValueError: if a column is missing.
        """
        missing = [c for c in OHLC_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(
                f"missing columns {missing}; the frame needs {list(OHLC_COLUMNS)}, "
                f"got {list(frame.columns)}"
            )
        dates = np.asarray(frame.index.values).astype("datetime64[D]")
        return cls(dates, *(frame[c].to_numpy(dtype=np.float64) for c in OHLC_COLUMNS))


@dataclass(frozen=True)
class DailySeries:
    """Per-day returns (%) and variance proxies (%^2), aligned on ``dates``."""

    dates: np.ndarray
    returns: np.ndarray
    parkinson: np.ndarray
    garman_klass: np.ndarray
    parkinson_gap: np.ndarray | None = None


def daily_series(ohlc: OHLC, variance_floor: float = VARIANCE_FLOOR) -> DailySeries:
    """Close-to-close returns and floored Parkinson / Garman–Klass variances.

    The first day is dropped (it has no previous close). Parkinson uses only High/Low; Garman–Klass
    also uses Open, which in the early S&P 500 file mostly equals the previous Close
    (see VOLATILITY.md). ``parkinson_gap`` is Parkinson on the range widened to include the
    previous Close, ``ln(max(H, C_prev) / min(L, C_prev))``: the S&P 500 file's High/Low contain
    the previous Close whenever its Open is a copy of it (96% of 1999–2005 days, a quarter of
    2012–2013, almost none from 2014), so plain Parkinson changes meaning there (it includes the
    overnight gap on those days only); the widened range includes it on every day.

    Example:
        >>> s = daily_series(simulate_garch_ohlc(50, seed=0))
        >>> bool((s.parkinson >= VARIANCE_FLOOR).all())
        True
    """
    hl = np.log(ohlc.high / ohlc.low)
    co = np.log(ohlc.close / ohlc.open)
    parkinson = hl**2 * _PARKINSON_SCALE
    prev = ohlc.close[:-1]
    gap_range = np.log(np.maximum(ohlc.high[1:], prev) / np.minimum(ohlc.low[1:], prev))
    gk = (0.5 * hl**2 - _GK_C * co**2) * 1e4
    return DailySeries(
        dates=ohlc.dates[1:],
        returns=100 * np.diff(np.log(ohlc.close)),
        parkinson=np.maximum(parkinson[1:], variance_floor),
        garman_klass=np.maximum(gk[1:], variance_floor),
        parkinson_gap=np.maximum(gap_range**2 * _PARKINSON_SCALE, variance_floor),
    )


def simulate_garch_ohlc(
    n_days: int = 5031,
    *,
    omega: float = 0.02,
    alpha: float = 0.08,
    beta: float = 0.9,
    steps_per_day: int = 78,
    end: str = "2018-12-31",
    seed: int = 0,
) -> OHLC:
    """Seeded GARCH(1,1) daily returns with OHLC from simulated intraday Brownian paths.

    Day ``t`` has variance ``s2_t = omega + alpha r_{t-1}^2 + beta s2_{t-1}`` (%^2, started at the
    unconditional level). Its log price moves by a Brownian path of ``steps_per_day`` Gaussian steps
    with total variance ``s2_t``; Open is the previous Close (no overnight gap), High/Low the path's
    extremes, so Parkinson and Garman–Klass are defined (Parkinson is slightly biased low by the
    discrete sampling). Dates are the ``n_days`` business days ending at ``end``, so the default
    date split (train <= 2012, val 2013–2015, test 2016–2018) works for any ``n_days`` reaching
    back before 2013; a longer series only lengthens the training period.

    Example:
        >>> ohlc = simulate_garch_ohlc(10, seed=0)
        >>> inside = (ohlc.low <= ohlc.close) & (ohlc.close <= ohlc.high)
        >>> str(ohlc.dates[-1]), bool(inside.all())
        ('2018-12-31', True)
    """
    if n_days < 2:
        raise ValueError(f"n_days={n_days} is too short; need at least 2")
    if omega <= 0 or alpha < 0 or beta < 0 or alpha + beta >= 1:
        raise ValueError(
            f"GARCH parameters omega={omega}, alpha={alpha}, beta={beta} are not allowed; "
            "need omega > 0, alpha >= 0, beta >= 0 and alpha + beta < 1"
        )
    if steps_per_day < 1:
        raise ValueError(f"steps_per_day={steps_per_day} is not allowed; need >= 1")
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n_days, steps_per_day))
    shocks = steps.sum(axis=1) / np.sqrt(steps_per_day)
    var = np.empty(n_days)
    var[0] = omega / (1 - alpha - beta)
    for t in range(1, n_days):
        var[t] = omega + (alpha * shocks[t - 1] ** 2 + beta) * var[t - 1]
    # intraday log-price paths in %, starting at 0 at the open
    paths = np.cumsum(steps, axis=1) * np.sqrt(var / steps_per_day)[:, None]
    paths = np.concatenate([np.zeros((n_days, 1)), paths], axis=1)
    log_open = np.log(100.0) + np.concatenate([[0.0], np.cumsum(paths[:-1, -1])]) / 100
    last = np.datetime64(end, "D")
    first = np.busday_offset(last, -(n_days - 1), roll="backward")
    days = np.arange(first, last + 1, dtype="datetime64[D]")
    return OHLC(
        dates=days[np.is_busday(days)],
        open=np.exp(log_open),
        high=np.exp(log_open + paths.max(axis=1) / 100),
        low=np.exp(log_open + paths.min(axis=1) / 100),
        close=np.exp(log_open + paths[:, -1] / 100),
    )


def load_ohlc(source: str, *, seed: int = 0, n_days: int = 5031) -> OHLC:
    """Load ``"sp500"`` or ``"nasdaq"`` from ``arch`` (needs the ``recipes`` extra) or simulate.

    Args:
        source: one of ``SOURCES``.
        seed: seed of the ``"garch_sim"`` source.
        n_days: length of the ``"garch_sim"`` source.

    Raises:
        ValueError: for an unknown source.

    Example:
        >>> len(load_ohlc("garch_sim", n_days=30).dates)
        30
    """
    if source == "garch_sim":
        return simulate_garch_ohlc(n_days, seed=seed)
    check_choice("source", source, SOURCES)
    module = require(f"arch.data.{source}")
    return OHLC.from_frame(module.load())
