"""The gradient-flow picture: layer index (input to output) against log10 gradient norm.

Rendered with matplotlib's object API on the Agg canvas (no pyplot state, no display), and
returned as an RGB array that every backend can store as an image. Zero-gradient layers are
marked at the bottom edge, NaN/Inf ones at the top; ``log10_range`` fixes the y-axis so pictures
compare across steps and runs.

Example:
    >>> import numpy as np
    >>> image = render_gradient_flow(  # doctest: +SKIP
    ...     ["0", "2"], latest=np.array([1e-3, 1e-1]), low=None, high=None, step=10)
    >>> image.shape  # doctest: +SKIP
    (450, 600, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lightning_gradflow.core.flow import fit_depth_profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEAD_LINE = 1e-5
_MAX_NAMED_TICKS = 40


def short_name(name: str, width: int = 28) -> str:
    """``name`` cut to its last ``width`` characters, with a leading ellipsis if cut."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _block(name: str) -> str | None:
    """``encoder.layers.3`` for ``encoder.layers.3.linear1``: the prefix up to the first index."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def _shade_blocks(ax, names: Sequence[str]) -> list[tuple[int, str]]:
    """Shade every other repeated block; return (first layer index, block name) of each."""
    starts: list[tuple[int, str]] = []
    for i, name in enumerate(names):
        block = _block(name)
        if block is not None and (not starts or starts[-1][1] != block):
            starts.append((i, block))
    for k, (start, block) in enumerate(starts):
        end = next((j for j in range(start, len(names)) if _block(names[j]) != block), len(names))
        if k % 2 == 0:
            ax.axvspan(start - 0.5, end - 0.5, color="0.92", zorder=0)
    return starts


def gradient_flow_figure(
    layer_names: Sequence[str],
    latest: np.ndarray,
    low: np.ndarray | None,
    high: np.ndarray | None,
    step: int,
    nonfinite: np.ndarray | None = None,
    log10_range: tuple[float, float] | None = None,
) -> Figure:
    """Per-layer gradient norms in depth order, as a matplotlib figure on an Agg canvas.

    Layers whose gradient is exactly zero at ``step`` are marked at the bottom edge, layers with a
    NaN/Inf gradient during the interval at the top edge (both stay visible on any y-range).

    Args:
        layer_names: names in depth order.
        latest: gradient norm of each layer at ``step`` (NaN where the layer had none).
        low: smallest finite norm of each layer over the interval since the last picture.
        high: largest finite norm of each layer over that interval.
        step: the optimizer step of ``latest``.
        nonfinite: boolean mask of layers whose gradient held NaN/Inf during the interval.
        log10_range: fixed y-axis limits in log10 units, so pictures compare across steps and
            runs; by default the data's range.
    """
    count = len(layer_names)
    x = np.arange(count)
    fig = new_figure(float(np.clip(6 + 0.08 * count, 6, 16)), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_latest = np.where(latest > 0, np.log10(latest), np.nan)
        if low is not None and high is not None:
            lo = np.where(low > 0, np.log10(low), np.nan)
            hi = np.where(high > 0, np.log10(high), np.nan)
            ax.fill_between(
                x,
                lo,
                hi,
                alpha=0.25,
                color="tab:blue",
                step="mid",
                label="range since last picture",
            )
    marker = "o" if count <= 60 else None
    ax.plot(
        x, log_latest, color="tab:blue", marker=marker, markersize=3, lw=1.2, label=f"step {step}"
    )
    ax.axhline(
        np.log10(DEAD_LINE), color="tab:red", ls="--", lw=0.8, label="1e-5: effectively dead"
    )
    edge = ax.get_xaxis_transform()  # x in data units, y in axes units (0 bottom, 1 top)
    zero = np.asarray(latest) == 0
    if zero.any():
        ax.scatter(
            x[zero],
            np.full(int(zero.sum()), 0.03),
            transform=edge,
            marker="v",
            color="0.35",
            zorder=3,
            clip_on=False,
            label="zero gradient",
        )
    if nonfinite is not None and nonfinite.any():
        ax.scatter(
            x[nonfinite],
            np.full(int(nonfinite.sum()), 0.97),
            transform=edge,
            marker="x",
            color="tab:red",
            zorder=3,
            clip_on=False,
            label="NaN/Inf gradient",
        )
    if log10_range is not None:
        ax.set_ylim(*log10_range)
    fit = fit_depth_profile(latest)
    title = f"Gradient flow, step {step}"
    if fit is not None:
        title += (
            f": γ = {fit.gamma:.3g} per layer (output → input), "
            f"first/last = {fit.first_last_ratio:.2g}"
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("log10 ‖g‖")
    if count <= _MAX_NAMED_TICKS:
        ax.set_xticks(x)
        ax.set_xticklabels([short_name(n) for n in layer_names], rotation=90, fontsize=7)
    else:
        starts = _shade_blocks(ax, layer_names)
        if 3 <= len(starts) <= 60:
            ax.set_xticks([i for i, _ in starts])
            ax.set_xticklabels([short_name(b, 18) for _, b in starts], rotation=90, fontsize=7)
            ax.set_xlabel(f"layer, input → output ({count} layers; shaded: alternate blocks)")
        else:
            stride = int(np.ceil(count / 25))
            ax.set_xticks(x[::stride])
            ax.set_xticklabels([str(i) for i in x[::stride]], fontsize=7)
            ax.set_xlabel(f"layer index, input → output ({count} layers; names in the tags)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def render_gradient_flow(
    layer_names: Sequence[str],
    latest: np.ndarray,
    low: np.ndarray | None,
    high: np.ndarray | None,
    step: int,
    nonfinite: np.ndarray | None = None,
    log10_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """:func:`gradient_flow_figure` drawn as an ``(H, W, 3)`` uint8 image (same arguments)."""
    return figure_to_rgb(
        gradient_flow_figure(layer_names, latest, low, high, step, nonfinite, log10_range)
    )


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches at 100 dpi on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Draw ``fig`` and return its pixels as an ``(H, W, 3)`` uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
