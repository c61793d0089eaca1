"""What the report says about each run: depth numbers, a verdict, the sweep's results table.

Pure functions of :class:`~lightning_gradflow.report.runs.Run` data; no files, no drawing.

Example:
    >>> flags = verdict(DepthSummary(step=9, first_last_ratio=2e-7, gamma=0.3, dead_layers=2),
    ...                 alerts={})
    >>> flags
    [('vanishing', 'first/last 2e-07, 2 dead layers at step 9')]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_gradflow.core.detectors.config import DetectorConfig
from lightning_gradflow.core.flow import fit_depth_profile
from lightning_gradflow.core.flow_history import ZERO_LOG10
from lightning_gradflow.report.runs import Run

VANISHING_RATIO = 1e-3  # first/last below this: the input side hardly learns
EXPLODING_RATIO = DetectorConfig().exploding_depth_ratio  # the mirror image (1e3)
DEAD_LOG10 = math.log10(DetectorConfig().vanishing_floor)  # below: a dead layer (1e-5)
EXPLODING_KINDS = ("exploding", "nonfinite")


@dataclass(frozen=True)
class DepthSummary:
    """Depth numbers of a run at its last logged step (None where unknown)."""

    step: int | None
    first_last_ratio: float | None
    gamma: float | None
    dead_layers: int | None


def _last(run: Run, tag: str) -> float | None:
    series = run.scalars.get(tag)
    if series is None or series[1].size == 0 or not math.isfinite(series[1][-1]):
        return None
    return float(series[1][-1])


def depth_summary(run: Run) -> DepthSummary:
    """First/last ratio, γ and dead layers at the last step: the logged ``grad_flow/*``
    scalars where present, else computed from the last step's per-layer norms."""
    step = int(run.steps[-1]) if run.steps.size else None
    if step is None and "grad_flow/gamma" in run.scalars:
        step = int(run.scalars["grad_flow/gamma"][0][-1])
    ratio, gamma, dead = (
        _last(run, "grad_flow/first_last_ratio"),
        _last(run, "grad_flow/gamma"),
        _last(run, "grad_flow/dead_layers"),
    )
    if run.steps.size:
        logs = run.log10_norms[-1]
        norms = np.where(logs <= ZERO_LOG10, 0.0, 10.0 ** np.nan_to_num(logs, nan=-np.inf))
        norms[np.isnan(logs)] = np.nan
        fit = fit_depth_profile(norms)
        if ratio is None and fit is not None:
            ratio = fit.first_last_ratio
        if gamma is None and fit is not None:
            gamma = fit.gamma
        if dead is None:
            dead = float(np.sum(logs[np.isfinite(logs)] < DEAD_LOG10))
    return DepthSummary(step, ratio, gamma, None if dead is None else int(dead))


def alert_counts(run: Run) -> dict[str, int]:
    """Announced alerts by kind, sorted by kind."""
    return dict(sorted(Counter(a.kind for a in run.alerts).items()))


def verdict(
    depth: DepthSummary, alerts: Mapping[str, int], nonfinite: bool = False
) -> list[tuple[str, str]]:
    """``[(pathology, reason), ...]`` for ``vanishing`` (first/last < 1e-3 or dead layers) and
    ``exploding`` (first/last > 1e3, NaN/Inf gradients, exploding/nonfinite alerts); empty
    when the run looks healthy.

    Example:
        >>> verdict(DepthSummary(5, 4e3, 2.0, 0), {"exploding": 2})
        [('exploding', 'first/last 4e+03 at step 5; alerts exploding:2')]
        >>> verdict(DepthSummary(5, 0.5, 1.1, 0), {})
        []
    """
    at = f" at step {depth.step}" if depth.step is not None else ""
    flags: list[tuple[str, str]] = []
    vanishing = []
    if depth.first_last_ratio is not None and depth.first_last_ratio < VANISHING_RATIO:
        vanishing.append(f"first/last {depth.first_last_ratio:.2g}")
    if depth.dead_layers:
        vanishing.append(f"{depth.dead_layers} dead layer{'s' * (depth.dead_layers > 1)}")
    if vanishing:
        flags.append(("vanishing", ", ".join(vanishing) + at))
    exploding = []
    if depth.first_last_ratio is not None and depth.first_last_ratio > EXPLODING_RATIO:
        exploding.append(f"first/last {depth.first_last_ratio:.2g}{at}")
    if nonfinite:
        exploding.append("NaN/Inf gradients")
    kinds = [f"{k}:{n}" for k, n in alerts.items() if k in EXPLODING_KINDS and n]
    if kinds:
        exploding.append("alerts " + " ".join(kinds))
    if exploding:
        flags.append(("exploding", "; ".join(exploding)))
    return flags


def run_verdict(run: Run) -> list[tuple[str, str]]:
    """:func:`verdict` of a run."""
    return verdict(depth_summary(run), alert_counts(run), bool(run.nonfinite.any()))


def mean_profile(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Relative depth (0 input … 1 output) and each layer's mean log10 norm over the run.

    Example:
        >>> from lightning_gradflow.report.runs import Run
        >>> run = Run("r", ".", ("00.a", "01.b", "02.c"), np.array([0, 1]),
        ...           np.array([[-4.0, -2.0, 0.0], [-6.0, np.nan, 0.0]]), np.zeros((2, 3), bool))
        >>> [a.tolist() for a in mean_profile(run)]
        [[0.0, 0.5, 1.0], [-5.0, -2.0, 0.0]]
    """
    count = len(run.layers)
    depth = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(count)
    logs = run.log10_norms
    present = np.isfinite(logs)
    sums = np.where(present, logs, 0.0).sum(axis=0)
    counts = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return depth, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


RESULT_COLUMNS = (
    "run",
    "model",
    "status",
    "test QLIKE",
    "ratio to HAR",
    "first/last",
    "γ",
    "alerts",
)


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else format(float(value), fmt)


def results_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """The sweep table: one row per job with ``metrics.json``, then the baselines (once per
    data set), all sorted by test QLIKE (best first; rows without one last). Empty when no run
    has ``metrics.json``. Alerts are those announced (``alerts_announced``, else the run's own).

    Example:
        >>> run = Run("model=mlp", "0", (), np.zeros(0, int), np.zeros((0, 0)),
        ...           np.zeros((0, 0), bool), metrics={"run": {"model": "mlp", "data": "sim"},
        ...           "status": "ok", "test": {"qlike": 1.7, "qlike_ratio_har": 1.1},
        ...           "gradient": {"first_last_ratio": 1e-6, "gamma": 0.4}, "alerts_announced":
        ...           {"vanishing": 3}, "baselines": [{"model": "har", "qlike": 1.5,
        ...           "ratio_har": 1.0}]})
        >>> [(r["run"], r["test QLIKE"], r["first/last"], r["alerts"]) for r in results_rows([run])]
        [('baseline: har', '1.5000', '', ''), ('model=mlp', '1.7000', '1e-06', 'vanishing:3')]
    """
    jobs = [r for r in runs if r.metrics is not None]
    rows: list[tuple[float, dict[str, str]]] = []
    for run in jobs:
        metrics = run.metrics or {}
        test, grad = metrics.get("test") or {}, metrics.get("gradient") or {}
        alerts = metrics.get("alerts_announced") or alert_counts(run)
        qlike = test.get("qlike")
        row = {
            "run": run.name,
            "model": str((metrics.get("run") or {}).get("model") or ""),
            "status": str(metrics.get("status", "")),
            "test QLIKE": _num(qlike, ".4f"),
            "ratio to HAR": _num(test.get("qlike_ratio_har"), ".3f"),
            "first/last": _num(grad.get("first_last_ratio"), ".2g"),
            "γ": _num(grad.get("gamma"), ".3g"),
            "alerts": " ".join(f"{k}:{n}" for k, n in sorted(alerts.items()) if n) or "none",
        }
        rows.append((math.inf if qlike is None else float(qlike), row))
    seen: set[Any] = set()
    datasets = {(r.metrics or {}).get("run", {}).get("data") for r in jobs}
    for run in jobs:
        data = (run.metrics or {}).get("run", {}).get("data")
        baselines = (run.metrics or {}).get("baselines") or []
        if data in seen or not baselines:
            continue
        seen.add(data)
        prefix = "baseline" if len(datasets) == 1 else f"baseline ({data})"
        for base in baselines:
            row = dict.fromkeys(RESULT_COLUMNS, "")
            row.update(
                run=f"{prefix}: {base['model']}",
                model=str(base["model"]),
                **{
                    "test QLIKE": _num(base.get("qlike"), ".4f"),
                    "ratio to HAR": _num(base.get("ratio_har"), ".3f"),
                },
            )
            qlike = base.get("qlike")
            rows.append((math.inf if qlike is None else float(qlike), row))
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]
