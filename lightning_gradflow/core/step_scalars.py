"""The scalars a logged step writes, under tags that keep depth order and read on a linear axis.

Per layer, the gradient norm is written as ``log10`` under a tag that starts with the layer's
zero-padded depth index (``grad_log10_norm/03.encoder.1``), so dashboards that sort tags as
text show the layers from input to output, and a gradient of 1e-16 reads as -16, not as "0".
An exactly zero gradient is written as :data:`ZERO_LOG10` (a decade below the histogram floor of
1e-12) instead of disappearing from a log axis; a NaN/Inf gradient is written as NaN.

Beside them, the depth summaries: the same tags for every architecture, so runs of different
depths compare in one chart.

==================================  ==============================================================
tag                                 value
==================================  ==============================================================
``grad_flow/first_last_ratio``      first/last layer norm (usable layers: finite, non-zero)
``grad_flow/log10_first_last_ratio`` its log10
``grad_flow/gamma``                 per-layer factor of the depth fit (< 1: shrinks to the input)
``grad_flow/dead_layers``           layers with a gradient below the vanishing floor (zero too)
``grad_flow/min_log10_norm``        lowest layer log10 norm (zero as ``ZERO_LOG10``)
``grad_flow/max_log10_norm``        highest layer log10 norm
==================================  ==============================================================

Example:
    >>> import numpy as np
    >>> depth_tags(["in", "hidden", "out"])
    ['00.in', '01.hidden', '02.out']
    >>> summary = depth_summary(np.array([1e-7, 1e-3, 1e-1]), np.array([True] * 3), floor=1e-5)
    >>> summary["grad_flow/dead_layers"], round(summary["grad_flow/log10_first_last_ratio"], 6)
    (1.0, -6.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.flow import fit_depth_profile
from lightning_gradflow.core.flow_history import ZERO_LOG10


def depth_tags(names: Sequence[str]) -> list[str]:
    """``<index>.<name>`` with the index zero-padded to the same width for every layer.

    Example:
        >>> depth_tags([f"l{i}" for i in range(101)])[7]
        '007.l7'
    """
    width = max(2, len(str(len(names) - 1)))
    return [f"{i:0{width}d}.{name}" for i, name in enumerate(names)]


def log10_norms(norms: np.ndarray) -> np.ndarray:
    """``log10`` of each norm; exact zeros as :data:`ZERO_LOG10`, NaN/Inf as NaN.

    Example:
        >>> log10_norms(np.array([0.0, 1e-3, np.inf])).tolist()
        [-13.0, -3.0, nan]
    """
    norms = np.asarray(norms, dtype=np.float64)
    finite = np.isfinite(norms)
    out = np.full(norms.shape, np.nan)
    positive = finite & (norms > 0)
    out[positive] = np.log10(norms[positive])
    out[finite & (norms == 0)] = ZERO_LOG10
    return out


def depth_summary(norms: np.ndarray, has_grad: np.ndarray, floor: float) -> dict[str, float]:
    """The ``grad_flow/*`` scalars of one step (see the module docstring).

    Args:
        norms: per-layer gradient norms in depth order.
        has_grad: which layers had a gradient (the others take no part).
        floor: the vanishing floor; a layer below it counts as dead.

    The ratio and ``gamma`` are left out when fewer than two layers are usable, the minimum and
    maximum when no layer's norm is finite.
    """
    norms = np.where(has_grad, np.asarray(norms, dtype=np.float64), np.nan)
    finite = np.isfinite(norms)
    summary = {"grad_flow/dead_layers": float(np.count_nonzero(finite & (norms < floor)))}
    if finite.any():
        logs = log10_norms(norms[finite])
        summary["grad_flow/min_log10_norm"] = float(logs.min())
        summary["grad_flow/max_log10_norm"] = float(logs.max())
    fit = fit_depth_profile(norms)
    if fit is not None:
        summary["grad_flow/first_last_ratio"] = fit.first_last_ratio
        summary["grad_flow/log10_first_last_ratio"] = float(np.log10(fit.first_last_ratio))
        summary["grad_flow/gamma"] = fit.gamma
    return summary


def alert_scalars(
    announced: Mapping[str, int], active_steps: Mapping[str, int]
) -> dict[str, float]:
    """``alerts/announced/<kind>`` (alerts shown) and ``alerts/active_steps/<kind>`` (steps the
    condition held, announced or not), for every kind seen so far.

    Example:
        >>> alert_scalars({"vanishing": 2}, {"vanishing": 40})
        {'alerts/announced/vanishing': 2.0, 'alerts/active_steps/vanishing': 40.0}
    """
    scalars: dict[str, float] = {}
    for kind in sorted(set(announced) | set(active_steps)):
        scalars[f"alerts/announced/{kind}"] = float(announced.get(kind, 0))
        scalars[f"alerts/active_steps/{kind}"] = float(active_steps.get(kind, 0))
    return scalars


def step_scalars(
    record: StepRecord,
    tags: Sequence[str],
    floor: float,
    suffix: str = "",
    weight_norms: bool = True,
) -> dict[str, float]:
    """Every per-step and per-layer scalar of a logged step.

    Args:
        record: the step's statistics.
        tags: :func:`depth_tags` of the layers.
        floor: the vanishing floor (for ``grad_flow/dead_layers``).
        suffix: ``_optimizer<k>`` when several optimizers step, appended to the step-wide tags.
        weight_norms: write the record's weight norms (``weight_norm/<layer>``); a record can
            hold them without their being asked for, because the update ratios need them.
    """
    metrics = {
        f"grad_norm/total{suffix}": record.total_norm,
        f"grad_nonfinite/layers{suffix}": float(len(record.nonfinite_layers)),
    }
    summary = depth_summary(record.layer_norms, record.has_grad, floor)
    metrics.update({f"{tag}{suffix}": value for tag, value in summary.items()})
    logs = log10_norms(record.layer_norms)
    ratios = None if record.update_ratios is None else log10_norms(record.update_ratios)
    for i, tag in enumerate(tags):
        if not record.has_grad[i]:
            continue
        metrics[f"grad_log10_norm/{tag}"] = float(logs[i])
        if weight_norms and record.weight_norms is not None:
            metrics[f"weight_norm/{tag}"] = float(record.weight_norms[i])
        if ratios is not None and np.isfinite(ratios[i]):  # a NaN/Inf ratio is left out
            metrics[f"update_ratio_log10/{tag}"] = float(ratios[i])
    return metrics
