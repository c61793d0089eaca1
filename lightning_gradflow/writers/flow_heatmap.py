"""The gradient-flow heatmap: layer (input at the bottom) by optimizer step, colour = log10 norm.

The colormap is viridis (perceptually uniform, dark = small): vanishing gradients show as a dark
band along the input side, exploding ones as a bright band. Cells with an exactly zero gradient
(:data:`~lightning_gradflow.core.flow_history.ZERO_LOG10`) are grey and hatched, cells with a
NaN/Inf gradient (``+inf``) red, cells without a gradient (NaN) left blank; the legend says so.
Drawn with matplotlib's object API on the Agg canvas, like :mod:`.flow_figure`.

Example:
    >>> import numpy as np
    >>> logs = np.array([[-6.0, -7.0, -13.0], [-1.0, -1.0, np.inf]])
    >>> image = render_flow_heatmap(["in", "out"], [0, 10, 20], logs)  # doctest: +SKIP
    >>> image.dtype, image.shape[2]  # doctest: +SKIP
    (dtype('uint8'), 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lightning_gradflow.core.flow_history import ZERO_LOG10
from lightning_gradflow.writers.flow_figure import figure_to_rgb, new_figure, short_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORMAP = "viridis"
ZERO_COLOR = "0.6"
ZERO_HATCH_COLOR = "0.35"
NONFINITE_COLOR = "red"
_MAX_NAMED_TICKS = 40


def _edges(steps: np.ndarray) -> np.ndarray:
    """Column ``j`` spans ``[steps[j], steps[j + 1])``; the last one as wide as the one before."""
    last = steps[-1] - steps[-2] if steps.size > 1 else 1
    return np.append(steps, steps[-1] + max(last, 1)).astype(np.float64)


MIN_SPAN = 6.0
"""Decades the default colour scale spans at least, down from the largest norm: a healthy run,
whose layers are within a decade or two of each other, reads as uniformly bright instead of
having its small differences stretched over the whole colour map."""


def _colour_range(logs: np.ndarray) -> tuple[float, float]:
    """From the largest finite non-zero value down to the smallest, or ``MIN_SPAN`` decades."""
    values = logs[np.isfinite(logs) & (logs != ZERO_LOG10)]
    if not values.size:
        return (-MIN_SPAN, 0.0)
    high = float(values.max())
    return (min(float(values.min()), high - MIN_SPAN), high)


def _paint(ax, x: np.ndarray, y: np.ndarray, cells: np.ndarray, colour: str, **style) -> None:
    """Fill the ``cells`` of the grid in one ``colour``, one rectangle per run of cells along a
    row (few patches, so hatching given in ``style`` stays fast)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    rectangles = []
    for row in range(cells.shape[0]):
        flips = np.flatnonzero(np.diff(np.concatenate([[0], cells[row].astype(np.int8), [0]])))
        for start, stop in zip(flips[::2], flips[1::2], strict=True):
            rectangles.append(Rectangle((x[start], y[row]), x[stop] - x[start], 1.0))
    if rectangles:
        ax.add_collection(PatchCollection(rectangles, facecolor=colour, **style))


def flow_heatmap_figure(
    layer_names: Sequence[str],
    steps: Sequence[int] | np.ndarray,
    log10_norms: np.ndarray,
    value_range: tuple[float, float] | None = None,
) -> Figure:
    """The heatmap as a matplotlib figure on an Agg canvas.

    Args:
        layer_names: names in depth order (input side first).
        steps: the first optimizer step of each column, increasing.
        log10_norms: ``(layers, columns)`` log10 gradient norms as
            :meth:`~lightning_gradflow.core.flow_history.FlowHistory.log10_norms` gives them
            (``ZERO_LOG10`` exact zero, ``+inf`` NaN/Inf gradient, NaN no gradient).
        value_range: fixed colour limits in log10 units, so heatmaps compare across runs; by
            default from the largest finite non-zero value down to the smallest, or 6 decades.

    Raises:
        ValueError: if the grid is empty or its shape does not match the names and steps.
    """
    from matplotlib.patches import Patch

    logs = np.asarray(log10_norms, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.int64)
    if logs.shape != (len(layer_names), steps.size) or not logs.size:
        raise ValueError(
            f"flow_heatmap_figure: log10_norms of shape {logs.shape} for {len(layer_names)} "
            f"layers and {steps.size} steps; expected a non-empty (layers, steps) grid"
        )
    count = len(layer_names)
    fig = new_figure(9.0, float(np.clip(2.0 + 0.14 * count, 4.0, 8.0)))
    ax = fig.add_subplot(1, 1, 1)
    x = _edges(steps)
    y = np.arange(count + 1) - 0.5
    zero = logs == ZERO_LOG10
    nonfinite = np.isinf(logs)
    low, high = value_range if value_range is not None else _colour_range(logs)
    mesh = ax.pcolormesh(
        x,
        y,
        np.ma.masked_where(zero | ~np.isfinite(logs), logs),
        cmap=COLORMAP,
        vmin=low,
        vmax=high,
    )
    _paint(ax, x, y, zero, ZERO_COLOR, hatch="///", edgecolor=ZERO_HATCH_COLOR, linewidth=0.0)
    _paint(ax, x, y, nonfinite, NONFINITE_COLOR)
    fig.colorbar(mesh, ax=ax, label="log10 ‖g‖", extend="both" if value_range else "neither")
    handles = [
        Patch(facecolor=ZERO_COLOR, edgecolor=ZERO_HATCH_COLOR, hatch="///", label="zero gradient"),
        Patch(facecolor=NONFINITE_COLOR, label="NaN/Inf gradient"),
        Patch(facecolor="white", edgecolor="0.5", label="no gradient"),
    ]
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=3,
        fontsize=7,
        frameon=False,
    )
    ax.set_title(
        f"Gradient flow over training, steps {steps[0]}–{steps[-1]}", fontsize=10, loc="left"
    )
    ax.set_xlabel("optimizer step")
    if count <= _MAX_NAMED_TICKS:
        ax.set_yticks(np.arange(count))
        ax.set_yticklabels([short_name(n) for n in layer_names], fontsize=7)
        ax.set_ylabel("layer (input at the bottom)")
    else:
        ax.set_ylabel(f"layer index, input at the bottom ({count} layers)")
    ax.set_ylim(y[0], y[-1])
    fig.tight_layout()
    return fig


def render_flow_heatmap(
    layer_names: Sequence[str],
    steps: Sequence[int] | np.ndarray,
    log10_norms: np.ndarray,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """:func:`flow_heatmap_figure` drawn as an ``(H, W, 3)`` uint8 image (same arguments)."""
    return figure_to_rgb(flow_heatmap_figure(layer_names, steps, log10_norms, value_range))
