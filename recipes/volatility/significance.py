"""Is a forecast significantly better? Diebold–Mariano with Newey–West variance, and the MCS.

Both work on per-observation losses (QLIKE, :func:`~recipes.volatility.metrics.
qlike_losses`) of forecasts of the same targets. ``arch`` (the ``recipes`` extra) provides the
Bartlett long-run variance and the Model Confidence Set (Hansen, Lunde & Nason 2011).

- :func:`diebold_mariano`: ``t = mean(d) / sqrt(LRV(d) / n)`` with ``d = loss_model - loss_ref``
  and ``LRV`` the Newey–West (Bartlett) long-run variance; negative ``t`` means the model has the
  lower loss. Two-sided normal p-value.
- :func:`model_confidence_set`: ``arch.bootstrap.MCS`` (range statistic, stationary bootstrap);
  the models in the set at level ``size`` and each model's MCS p-value.
- :func:`superior_predictive_ability`: ``arch.bootstrap.SPA`` (Hansen 2005) with a benchmark and
  a set of alternatives; its null is "no alternative has a lower expected loss than the
  benchmark", so a small p-value means some alternative beats the benchmark.

Example:
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.exponential(size=400)
    >>> dm = diebold_mariano(ref - 0.5, ref, bandwidth=0)
    >>> dm.t < -10 and dm.pvalue < 1e-6
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from recipes.volatility._optional import require
from recipes.volatility.metrics import qlike_losses


class DMResult(NamedTuple):
    """A Diebold–Mariano comparison (``t < 0``: the first loss series is lower)."""

    t: float
    pvalue: float
    mean_diff: float
    bandwidth: int


def newey_west_bandwidth(n: int, horizon: int = 1) -> int:
    """``floor(4 (n/100)^(2/9))`` (Newey & West 1994), at least ``horizon - 1``.

    Example:
        >>> newey_west_bandwidth(754), newey_west_bandwidth(754, horizon=22)
        (6, 21)
    """
    return max(int(4 * (n / 100) ** (2 / 9)), horizon - 1)


def diebold_mariano(
    loss: np.ndarray, reference: np.ndarray, bandwidth: int | None = None, horizon: int = 1
) -> DMResult:
    """Diebold–Mariano test of ``loss`` against ``reference`` with a Bartlett (Newey–West) HAC.

    Args:
        loss: per-observation losses of the model.
        reference: per-observation losses of the reference, same targets.
        bandwidth: Bartlett bandwidth (lags with weight > 0);
            ``None``: :func:`newey_west_bandwidth`.
        horizon: forecast horizon (overlapping targets need a bandwidth >= horizon - 1).

    Raises:
        ValueError: for series of different or too short length.
    """
    loss, reference = np.asarray(loss, float), np.asarray(reference, float)
    if loss.shape != reference.shape or loss.ndim != 1 or len(loss) < 3:
        raise ValueError(
            f"loss and reference need the same 1-d shape of >= 3; got {loss.shape}, "
            f"{reference.shape}"
        )
    kernel = require("arch.covariance.kernel")
    d = loss - reference
    n = len(d)
    bw = newey_west_bandwidth(n, horizon) if bandwidth is None else int(bandwidth)
    lrv = float(np.squeeze(kernel.Bartlett(d, bandwidth=bw).cov.long_run))
    mean = float(d.mean())
    if lrv <= 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / math.sqrt(lrv / n)
    pvalue = math.erfc(abs(t) / math.sqrt(2))  # two-sided, standard normal
    return DMResult(t, pvalue, mean, bw)


def model_confidence_set(
    losses: Mapping[str, np.ndarray],
    size: float = 0.1,
    reps: int = 1000,
    block_size: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``arch.bootstrap.MCS`` over the named loss series: per model its p-value and membership.

    Args:
        losses: model name -> per-observation losses (same targets, same order).
        size: the MCS level (a model with MCS p-value >= ``size`` is in the set).
        reps: bootstrap replications.
        block_size: mean block length of the stationary bootstrap; ``None``: ``ceil(n^(1/3))``.
        seed: bootstrap seed (the result is reproducible).

    Returns:
        ``{name: {"pvalue": float, "in_mcs": bool}}`` in the order of ``losses``.
    """
    if len(losses) < 2:
        raise ValueError(f"the MCS needs at least two models; got {list(losses)}")
    pd = require("pandas")
    bootstrap = require("arch.bootstrap")
    frame = pd.DataFrame({name: np.asarray(v, float) for name, v in losses.items()})
    n = len(frame)
    block = math.ceil(n ** (1 / 3)) if block_size is None else block_size
    mcs = bootstrap.MCS(frame, size=size, reps=reps, block_size=block, method="R", seed=seed)
    mcs.compute()
    pvalues = mcs.pvalues["Pvalue"]
    included = set(mcs.included)
    return {name: {"pvalue": float(pvalues[name]), "in_mcs": name in included} for name in losses}


def superior_predictive_ability(
    benchmark: np.ndarray,
    alternatives: Mapping[str, np.ndarray],
    size: float = 0.1,
    reps: int = 1000,
    block_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``arch.bootstrap.SPA``: does any of ``alternatives`` have a lower expected loss?

    Studentized test, stationary bootstrap (mean block ``ceil(n^(1/3))`` as for the MCS).

    Args:
        benchmark: per-observation losses of the benchmark.
        alternatives: name -> per-observation losses of the same targets.
        size: level at which ``better`` lists the alternatives that beat the benchmark.
        reps, block_size, seed: bootstrap replications, mean block length, seed.

    Returns:
        ``{"pvalue": consistent p-value, "pvalue_lower", "pvalue_upper", "better": [names of the
        alternatives significantly better than the benchmark at size], "size": size}``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> loss = rng.exponential(size=300)
        >>> out = superior_predictive_ability(loss, {"worse": loss + 1, "better": loss - 0.2})
        >>> out["pvalue"] < 0.01, out["better"]
        (True, ['better'])
    """
    if not alternatives:
        raise ValueError("the SPA test needs at least one alternative")
    pd = require("pandas")
    bootstrap = require("arch.bootstrap")
    models = pd.DataFrame({name: np.asarray(v, float) for name, v in alternatives.items()})
    bench = np.asarray(benchmark, float)
    if bench.shape != (len(models),):
        raise ValueError(f"benchmark has shape {bench.shape}; the alternatives {len(models)} rows")
    block = math.ceil(len(bench) ** (1 / 3)) if block_size is None else block_size
    spa = bootstrap.SPA(bench, models, block_size=block, reps=reps, seed=seed)
    spa.compute()
    pvalues = spa.pvalues
    names = list(models.columns)
    better = [
        names[i] if isinstance(i, int | np.integer) else str(i) for i in spa.better_models(size)
    ]
    return {
        "pvalue": float(pvalues["consistent"]),
        "pvalue_lower": float(pvalues["lower"]),
        "pvalue_upper": float(pvalues["upper"]),
        "better": better,
        "size": size,
    }


def significance(
    realised: np.ndarray,
    forecasts: Mapping[str, np.ndarray],
    models: Sequence[str],
    references: Sequence[str] = ("har", "log_har", "lhar"),
    *,
    horizon: int = 1,
    mcs_size: float = 0.1,
    mcs_reps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """DM (QLIKE) of each of ``models`` against each of ``references``, the MCS over all, and the
    SPA test of each of ``models`` as the benchmark against every forecast not in ``models``.

    Args:
        realised: realised variance proxy.
        forecasts: name -> variance forecast of ``realised`` (models and baselines together).
        models: the names tested against the references (e.g. the network).
        references: the reference names (those missing from ``forecasts`` are skipped).
        horizon: forecast horizon (sets the minimum DM bandwidth).
        mcs_size, mcs_reps, seed: MCS level, replications and bootstrap seed.

    Returns:
        ``{"dm": {model: {reference: {"t", "pvalue", "mean_diff", "bandwidth"}}},
        "mcs": {name: {"pvalue", "in_mcs"}}, "mcs_size": mcs_size,
        "spa": {model: superior_predictive_ability(...)}}`` (``spa`` empty without baselines):
        a small SPA p-value means some baseline beats the model.
    """
    losses = {name: qlike_losses(realised, f) for name, f in forecasts.items()}
    dm = {
        model: {
            ref: diebold_mariano(losses[model], losses[ref], horizon=horizon)._asdict()
            for ref in references
            if ref in losses and ref != model
        }
        for model in models
    }
    mcs = model_confidence_set(losses, size=mcs_size, reps=mcs_reps, seed=seed)
    others = {name: loss for name, loss in losses.items() if name not in models}
    spa = {
        model: superior_predictive_ability(
            losses[model], others, size=mcs_size, reps=mcs_reps, seed=seed
        )
        for model in models
        if others
    }
    return {"dm": dm, "mcs": mcs, "mcs_size": mcs_size, "spa": spa}
