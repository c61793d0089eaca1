"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot).

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure`; :func:`png` turns one
into PNG bytes.

Example:
    >>> from lightning_gradflow.report.runs import load_runs  # doctest: +SKIP
    >>> data = png(cross_run_figure(load_runs("lightning_logs")))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np

from lightning_gradflow.core.flow_history import ZERO_LOG10
from lightning_gradflow.report.runs import Predictions, Run
from lightning_gradflow.report.summary import DEAD_LOG10, mean_profile

LINE_STYLES = ("-", "--", "-.", ":")
SEVERITY_COLOURS = {"critical": "tab:red", "warning": "tab:orange"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def image_png(image: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` uint8 image as PNG bytes."""
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, image, format="png")
    return buffer.getvalue()


def run_styles(count: int) -> list[tuple[Any, str]]:
    """``(colour, line style)`` per run: 20 distinct colours (tab20), then the next style.

    Example:
        >>> styles = run_styles(24)
        >>> len(set(styles)), styles[20][1]
        (24, '--')
    """
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors if count > 10 else colormaps["tab10"].colors
    pairs = itertools.product(LINE_STYLES, colours)
    return [(colour, style) for style, colour in itertools.islice(pairs, count)]


def cross_run_figure(runs: Sequence[Run]) -> Any:
    """Relative depth (input 0 → output 1) against mean log10 gradient norm, one line per run."""
    fig = _figure(9.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    for run, (colour, style) in zip(runs, run_styles(len(runs)), strict=True):
        depth, mean = mean_profile(run)
        if depth.size:
            ax.plot(depth, mean, color=colour, ls=style, lw=1.6, marker=".", label=run.name)
    ax.axhline(DEAD_LOG10, color="tab:red", ls=":", lw=0.9, label="1e-5: effectively dead")
    ax.set_xlabel("relative depth (0 = input layer, 1 = output layer)")
    ax.set_ylabel("mean log10 ‖g‖ over training")
    ax.set_title("Gradient flow across runs")
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def heatmap_figure(run: Run) -> Any:
    """Layer × step, colour = log10 norm, drawn as the monitor draws ``grad_flow/heatmap`` (input
    layer at the bottom; zero gradients grey and hatched, NaN/Inf red)."""
    from lightning_gradflow.core.flow_history import NONFINITE_LOG10
    from lightning_gradflow.writers.flow_heatmap import flow_heatmap_figure

    logs = np.where(run.nonfinite, NONFINITE_LOG10, run.log10_norms).T  # (layers, steps)
    return flow_heatmap_figure(run.layers, run.steps, logs)


def last_picture(run: Run) -> bytes | None:
    """The last logged ``grad_flow/picture`` as PNG, else the picture drawn from the last
    step's norms; None without per-layer norms."""
    if run.picture is not None:
        return run.picture[0]
    if not run.steps.size:
        return None
    from lightning_gradflow.writers.flow_figure import render_gradient_flow

    logs = run.log10_norms[-1]
    norms = np.where(logs <= ZERO_LOG10, 0.0, 10.0 ** np.nan_to_num(logs, nan=0.0))
    norms[np.isnan(logs)] = np.nan
    image = render_gradient_flow(
        list(run.layers), norms, None, None, int(run.steps[-1]), nonfinite=run.nonfinite[-1]
    )
    return image_png(image)


def alerts_figure(run: Run) -> Any:
    """Step against alert kind, one marker per announced alert, coloured by severity."""
    kinds = sorted({a.kind for a in run.alerts})
    fig = _figure(9.5, 1.2 + 0.45 * len(kinds))
    ax = fig.add_subplot(1, 1, 1)
    for severity in sorted({a.severity for a in run.alerts}):
        marks = [a for a in run.alerts if a.severity == severity]
        ax.scatter(
            [a.step for a in marks],
            [kinds.index(a.kind) for a in marks],
            marker="D" if severity == "critical" else "o",
            s=36,
            color=SEVERITY_COLOURS.get(severity, "tab:gray"),
            label=severity or "alert",
            zorder=3,
        )
    ax.set_yticks(range(len(kinds)))
    ax.set_yticklabels(kinds)
    ax.set_ylim(-0.6, len(kinds) - 0.4)
    if run.steps.size:
        ax.set_xlim(run.steps[0] - 1, max(run.steps[-1], max(a.step for a in run.alerts)) + 1)
    ax.set_xlabel("step")
    ax.set_ylabel("alert kind")
    ax.set_title(f"{run.name}: alerts announced", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _dates(values: Sequence[str]) -> list[Any]:
    try:
        return [date.fromisoformat(v[:10]) for v in values]
    except ValueError:
        return list(range(len(values)))


def forecast_figure(name: str, predictions: Predictions) -> Any:
    """Realised variance proxy and the forecasts over the test period (log scale); the
    network (first forecast column) bold, the baselines thin."""
    x = _dates(predictions.dates)
    fig = _figure(9.5, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, predictions.realised, color="0.6", lw=0.8, label="realised")
    styles = run_styles(len(predictions.forecasts))
    for k, (column, values) in enumerate(predictions.forecasts.items()):
        ax.plot(x, values, color=styles[k][0], lw=1.6 if k == 0 else 0.9, label=column)
    positive = np.concatenate([predictions.realised, *predictions.forecasts.values()])
    if np.any(positive > 0):
        ax.set_yscale("log")
    ax.set_xlabel("date" if isinstance(x[0], date) else "test day")
    ax.set_ylabel("variance")
    ax.set_title(f"{name}: forecast vs realised, test period", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.autofmt_xdate()
    return fig
