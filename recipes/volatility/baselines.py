"""Classical variance forecasts on the same origins as the neural models, and one results table.

Every baseline forecasts the target of origin ``t``, ``mean(P_{t+1..t+h})`` with ``P`` the daily
Parkinson proxy, from data through day ``t`` only. Parameters are fit on ``fit_origins`` (by default
train + validation, i.e. targets through 2015) and applied unchanged to ``eval_origins``.

- ``har``: Corsi (2009) OLS of the target on ``[1, P_t, mean P_{t-4..t}, mean P_{t-21..t}]``.
- ``log_har``: the same regression on ``ln P``; variance forecast ``exp(yhat + s^2/2)`` with
  ``s^2`` the in-sample residual variance.
- ``lhar``: log-HAR plus the leverage terms of Corsi & Renò (2012): the negative part of the
  daily return, ``r^- = min(r, 0)``, averaged over 1, 5 and 22 days; fit in logs, bias-corrected
  like ``log_har``.
- ``har_x``: ``lhar`` plus everything else the networks see: the signed return and
  ``ln GK`` (Garman–Klass), each averaged over 1, 5 and 22 days (needs ``garman_klass``).
- ``garch``: ``arch`` GARCH(1,1) on returns (needs the ``recipes`` extra), one-step filtered
  forecasts times the fit-period ratio ``mean(P) / mean(r^2)`` (squared returns -> range proxy).
- ``ewma``: RiskMetrics (lambda 0.94) of *squared returns*, rescaled by the same ratio.
- floors: ``yesterday`` (``P_t``), ``mean_5`` and ``mean_22`` (trailing means), ``train_mean``.

Example:
    >>> proxy = np.exp(np.sin(np.arange(200) / 7.0))
    >>> fc = har(proxy, np.arange(21, 150), np.arange(150, 199))
    >>> fc.variance.shape
    (49,)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from recipes.volatility._optional import require
from recipes.volatility.metrics import evaluate_forecast
from recipes.volatility.sources import VARIANCE_FLOOR

BASELINES = (
    "har",
    "log_har",
    "lhar",
    "har_x",
    "garch",
    "ewma",
    "yesterday",
    "mean_5",
    "mean_22",
    "train_mean",
)
FIT_SPLITS = ("train", "val")
"""Splits whose origins fit the baselines' parameters and the forecaster's HAR reference."""


class Forecast(NamedTuple):
    """A variance forecast and, for models fit on logs, their forecast of the log target."""

    variance: np.ndarray
    log: np.ndarray | None = None


def targets(proxy: np.ndarray, origins: np.ndarray, horizon: int = 1) -> np.ndarray:
    """Realised ``mean(proxy[t+1 .. t+horizon])`` for each origin ``t``.

    Example:
        >>> targets(np.array([1.0, 2.0, 4.0, 8.0]), np.array([0, 1]), horizon=2).tolist()
        [3.0, 6.0]
    """
    return np.stack([proxy[origins + k] for k in range(1, horizon + 1)]).mean(axis=0)


def trailing_mean(x: np.ndarray, days: int) -> np.ndarray:
    """``mean(x[t-days+1 .. t])``; NaN for the first ``days - 1`` entries.

    Example:
        >>> trailing_mean(np.array([1.0, 3.0, 5.0]), 2).tolist()
        [nan, 2.0, 4.0]
    """
    csum = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(len(x), np.nan)
    out[days - 1 :] = (csum[days:] - csum[:-days]) / days
    return out


def har_design(x: np.ndarray) -> np.ndarray:
    """HAR regressors ``[1, x_t, mean x_{t-4..t}, mean x_{t-21..t}]`` (NaN before day 21)."""
    return np.column_stack(
        [np.ones(len(x)), x, trailing_mean(x, 5), trailing_mean(x, 22)],
    )


def _check_origins(fit_origins: np.ndarray, eval_origins: np.ndarray, horizon: int) -> None:
    if len(fit_origins) == 0 or len(eval_origins) == 0:
        raise ValueError("fit_origins and eval_origins must be non-empty")
    if fit_origins.min() < 21:
        raise ValueError(f"fit origins start at {fit_origins.min()}; HAR needs origins >= 21")
    if fit_origins.max() + horizon > eval_origins.min():
        raise ValueError(
            f"the last fit target (day {fit_origins.max() + horizon}) must come no later than the "
            f"first evaluation origin (day {eval_origins.min()})"
        )


def _ols(x: np.ndarray, fit_origins: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    design = har_design(x)
    coef = np.linalg.lstsq(design[fit_origins], y, rcond=None)[0]
    return coef, design


def har(
    proxy: np.ndarray, fit_origins: np.ndarray, eval_origins: np.ndarray, horizon: int = 1
) -> Forecast:
    """HAR on the variance scale; forecasts below ``VARIANCE_FLOOR`` are floored."""
    _check_origins(fit_origins, eval_origins, horizon)
    coef, design = _ols(proxy, fit_origins, targets(proxy, fit_origins, horizon))
    return Forecast(np.maximum(design[eval_origins] @ coef, VARIANCE_FLOOR))


def log_har(
    proxy: np.ndarray, fit_origins: np.ndarray, eval_origins: np.ndarray, horizon: int = 1
) -> Forecast:
    """HAR on logs with the log-normal bias correction ``exp(yhat + s^2 / 2)``."""
    _check_origins(fit_origins, eval_origins, horizon)
    y = np.log(targets(proxy, fit_origins, horizon))
    coef, design = _ols(np.log(proxy), fit_origins, y)
    s2 = np.var(y - design[fit_origins] @ coef)
    log_fc = design[eval_origins] @ coef
    return Forecast(np.exp(log_fc + s2 / 2), log_fc)


def _log_regression(
    proxy: np.ndarray,
    regressors: np.ndarray,
    fit_origins: np.ndarray,
    eval_origins: np.ndarray,
    horizon: int,
) -> Forecast:
    """OLS of the log target on ``regressors``; ``exp(yhat + s^2/2)`` like ``log_har``."""
    _check_origins(fit_origins, eval_origins, horizon)
    y = np.log(targets(proxy, fit_origins, horizon))
    coef = np.linalg.lstsq(regressors[fit_origins], y, rcond=None)[0]
    s2 = np.var(y - regressors[fit_origins] @ coef)
    log_fc = regressors[eval_origins] @ coef
    return Forecast(np.exp(log_fc + s2 / 2), log_fc)


def _cascade(x: np.ndarray) -> np.ndarray:
    """``[x_t, mean x_{t-4..t}, mean x_{t-21..t}]`` (the HAR cascade without the constant)."""
    return har_design(x)[:, 1:]


def lhar(
    proxy: np.ndarray,
    returns: np.ndarray,
    fit_origins: np.ndarray,
    eval_origins: np.ndarray,
    horizon: int = 1,
) -> Forecast:
    """Log-HAR with the cascade of negative returns ``min(r, 0)`` (leverage HAR)."""
    design = np.column_stack([har_design(np.log(proxy)), _cascade(np.minimum(returns, 0.0))])
    return _log_regression(proxy, design, fit_origins, eval_origins, horizon)


def har_x(
    proxy: np.ndarray,
    returns: np.ndarray,
    garman_klass: np.ndarray,
    fit_origins: np.ndarray,
    eval_origins: np.ndarray,
    horizon: int = 1,
) -> Forecast:
    """``lhar`` plus the cascades of the signed return and of ``ln GK``: the networks' inputs."""
    design = np.column_stack(
        [
            har_design(np.log(proxy)),
            _cascade(np.minimum(returns, 0.0)),
            _cascade(returns),
            _cascade(np.log(garman_klass)),
        ]
    )
    return _log_regression(proxy, design, fit_origins, eval_origins, horizon)


def _return_to_proxy_ratio(returns: np.ndarray, proxy: np.ndarray, last_day: int) -> float:
    return float(proxy[: last_day + 1].mean() / np.mean(returns[: last_day + 1] ** 2))


def garch(
    returns: np.ndarray,
    proxy: np.ndarray,
    fit_origins: np.ndarray,
    eval_origins: np.ndarray,
    horizon: int = 1,
) -> Forecast:
    """GARCH(1,1) fit on returns through the last fit day, filtered forward with fixed parameters.

    ``arch`` labels a forecast by the day it is made (its ``align="origin"``): the row for day ``t``
    holds the variance of ``t+1 .. t+h``, which is exactly the target of origin ``t``.
    """
    _check_origins(fit_origins, eval_origins, horizon)
    arch = require("arch")
    last_day = int(fit_origins.max()) + horizon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fit is checked in the tests
        result = arch.arch_model(returns, vol="GARCH", p=1, q=1).fit(
            last_obs=last_day + 1, disp="off"
        )
        first = int(eval_origins.min())
        paths = result.forecast(horizon=horizon, start=first, reindex=False).variance
    variance = paths.to_numpy()[eval_origins - first].mean(axis=1)
    return Forecast(variance * _return_to_proxy_ratio(returns, proxy, last_day))


def ewma(
    returns: np.ndarray,
    proxy: np.ndarray,
    fit_origins: np.ndarray,
    eval_origins: np.ndarray,
    horizon: int = 1,
    lam: float = 0.94,
) -> Forecast:
    """RiskMetrics EWMA of squared returns (flat over the horizon), rescaled to the proxy.

    The recursion starts from the mean squared return of the first 22 days.
    """
    _check_origins(fit_origins, eval_origins, horizon)
    if not 0 < lam < 1:
        raise ValueError(f"lam={lam} is not allowed; need 0 < lam < 1")
    sq = returns**2
    level = np.empty(len(sq))  # level[t]: forecast made at the end of day t
    state = sq[:22].mean()
    for t, value in enumerate(sq):
        state = lam * state + (1 - lam) * value
        level[t] = state
    ratio = _return_to_proxy_ratio(returns, proxy, int(fit_origins.max()) + horizon)
    return Forecast(level[eval_origins] * ratio)


def baseline_forecasts(
    returns: np.ndarray,
    proxy: np.ndarray,
    fit_origins: np.ndarray,
    eval_origins: np.ndarray,
    horizon: int = 1,
    names: Sequence[str] = BASELINES,
    garman_klass: np.ndarray | None = None,
) -> dict[str, Forecast]:
    """Forecasts of the named baselines (``BASELINES``) for ``eval_origins``.

    Raises:
        ValueError: for an unknown name, or ``har_x`` without ``garman_klass``.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {list(BASELINES)}")
    if "har_x" in names and garman_klass is None:
        raise ValueError("the har_x baseline needs garman_klass (the daily Garman–Klass variance)")
    _check_origins(fit_origins, eval_origins, horizon)
    builders = {
        "har": lambda: har(proxy, fit_origins, eval_origins, horizon),
        "log_har": lambda: log_har(proxy, fit_origins, eval_origins, horizon),
        "lhar": lambda: lhar(proxy, returns, fit_origins, eval_origins, horizon),
        "har_x": lambda: har_x(proxy, returns, garman_klass, fit_origins, eval_origins, horizon),
        "garch": lambda: garch(returns, proxy, fit_origins, eval_origins, horizon),
        "ewma": lambda: ewma(returns, proxy, fit_origins, eval_origins, horizon),
        "yesterday": lambda: Forecast(proxy[eval_origins]),
        "mean_5": lambda: Forecast(trailing_mean(proxy, 5)[eval_origins]),
        "mean_22": lambda: Forecast(trailing_mean(proxy, 22)[eval_origins]),
        "train_mean": lambda: Forecast(
            np.full(len(eval_origins), targets(proxy, fit_origins, horizon).mean())
        ),
    }
    return {name: builders[name]() for name in names}


def evaluate_forecasts(
    realised: np.ndarray,
    forecasts: Mapping[str, Forecast],
    reference: str = "har",
    also: Sequence[str] = ("lhar",),
) -> list[dict[str, Any]]:
    """One row per forecast: ``model, qlike, mse_log, mz_r2, n, ratio_<reference>``.

    A ``ratio_<name>`` column is added for each of ``also`` that is among the forecasts.

    Example:
        >>> y = np.array([1.0, 2.0, 3.0])
        >>> rows = evaluate_forecasts(y, {"har": Forecast(y + 1), "oracle": Forecast(y)})
        >>> [(r["model"], round(r["ratio_har"], 3)) for r in rows]
        [('har', 1.0), ('oracle', 0.0)]
    """
    if reference not in forecasts:
        raise ValueError(f"reference={reference!r} is not among the forecasts {list(forecasts)}")
    rows = []
    for name, fc in forecasts.items():
        scores = evaluate_forecast(realised, fc.variance)
        rows.append({"model": name, **scores, "n": len(realised)})
    for ref_name in dict.fromkeys([reference, *(a for a in also if a in forecasts)]):
        ref = next(r["qlike"] for r in rows if r["model"] == ref_name)
        for row in rows:
            row[f"ratio_{ref_name}"] = row["qlike"] / ref
    return rows


def split_origins(split_indices: Mapping[str, np.ndarray], splits: Sequence[str]) -> np.ndarray:
    """The origins of ``splits`` together, in time order.

    Example:
        >>> split_origins({"train": np.array([0, 1]), "val": np.array([2])}, FIT_SPLITS).tolist()
        [0, 1, 2]
    """
    return np.sort(np.concatenate([split_indices[s] for s in splits]))


class Evaluation(NamedTuple):
    """Scores of one split: table rows, every forecast scored and the realised proxy."""

    rows: list[dict[str, Any]]
    forecasts: dict[str, Forecast]
    realised: np.ndarray


def evaluate_split(
    datamodule: Any,
    *,
    fit_splits: Sequence[str] = FIT_SPLITS,
    split: str = "test",
    names: Sequence[str] = BASELINES,
    extra: Mapping[str, Forecast] | None = None,
) -> Evaluation:
    """Fit the baselines on ``fit_splits`` of a set-up ``VolatilityDataModule``, score ``split``.

    Args:
        datamodule: provides ``returns``, ``proxy``, ``garman_klass``, ``split_indices`` and
            ``horizon``.
        fit_splits: splits whose origins fit the parameters (default: through 2015).
        split: the evaluated split.
        names: baselines to include; ``"har"`` is always added as the ratio reference.
        extra: more forecasts for ``split`` (e.g. a network's) to put in the same table.

    Returns:
        Rows as in :func:`evaluate_forecasts` (format them with :func:`format_table`), the
        forecasts and the realised proxy.
    """
    fit = split_origins(datamodule.split_indices, fit_splits)
    origins = datamodule.split_indices[split]
    names = list(dict.fromkeys(["har", *names]))
    forecasts = baseline_forecasts(
        datamodule.returns,
        datamodule.proxy,
        fit,
        origins,
        datamodule.horizon,
        names,
        garman_klass=datamodule.garman_klass,
    )
    forecasts.update(extra or {})
    realised = targets(datamodule.proxy, origins, datamodule.horizon)
    return Evaluation(evaluate_forecasts(realised, forecasts), forecasts, realised)


def evaluate_baselines(datamodule: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The rows of :func:`evaluate_split` (same arguments)."""
    return evaluate_split(datamodule, **kwargs).rows


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3
) -> str:
    """A markdown table of result rows (floats rounded to ``digits``).

    Example:
        >>> print(format_table([{"model": "har", "qlike": 0.49123}]))
        | model | qlike |
        | --- | --- |
        | har | 0.491 |
    """
    columns = list(columns or rows[0])

    def cell(value: Any) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
