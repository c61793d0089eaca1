"""``build_report``: read a log directory, draw the figures, write ``report.html`` and the PNGs.

Example:
    >>> from lightning_gradflow.report import build_report
    >>> build_report("outputs/multiruns/2026-12-02/08-00-00")  # doctest: +SKIP
    PosixPath('outputs/multiruns/2026-12-02/08-00-00/report.html')
"""

from __future__ import annotations

import re
from pathlib import Path

from lightning_gradflow.report._optional import require_report_dependencies

REPORT_FILE = "report.html"
OVERVIEW_FILE = "gradient_flow_runs.png"


def _slug(index: int, name: str) -> str:
    """A file-name stem for a run: its position and its name without odd characters.

    Example:
        >>> _slug(3, "model=resnet,model.depth=20")
        '03_model=resnet,model.depth=20'
    """
    return f"{index:02d}_" + re.sub(r"[^A-Za-z0-9=.,+_-]+", "_", name).strip("_")[:80]


def build_report(log_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` (self-contained) and its PNGs for every run under ``log_dir``.

    Args:
        log_dir: a directory holding TensorBoard event files written with the monitor, at any
            depth (a user's ``lightning_logs``, a recipe sweep directory ...).
        out_dir: where to write; defaults to ``log_dir``.

    Returns:
        The path of ``report.html``.

    Raises:
        ImportError: without TensorBoard or matplotlib (the ``tensorboard`` extra).
        FileNotFoundError: if no event files with the monitor's tags are under ``log_dir``.
    """
    require_report_dependencies()
    from lightning_gradflow.report import figures
    from lightning_gradflow.report.html import Image, render_html
    from lightning_gradflow.report.runs import load_runs

    log_dir = Path(log_dir)
    runs = load_runs(log_dir)
    out = Path(out_dir) if out_dir is not None else log_dir
    out.mkdir(parents=True, exist_ok=True)
    images: list[Image] = []

    def image(file: str, data: bytes | None, alt: str) -> Image | None:
        if data is None:
            return None
        images.append(Image(file, data, alt))
        return images[-1]

    overview = image(
        OVERVIEW_FILE,
        figures.png(figures.cross_run_figure(runs)),
        "mean log10 gradient norm against relative depth, one line per run",
    )
    per_run = []
    for i, run in enumerate(runs):
        stem = _slug(i, run.name)
        drawn = {
            "heatmap": image(
                f"{stem}_heatmap.png",
                figures.png(figures.heatmap_figure(run)) if run.steps.size else None,
                f"{run.name}: log10 gradient norm per layer over training",
            ),
            "picture": image(
                f"{stem}_picture.png",
                figures.last_picture(run),
                f"{run.name}: gradient flow at the last picture"
                + (f" (step {run.picture[1]})" if run.picture else " (drawn from the last step)"),
            ),
            "alerts": image(
                f"{stem}_alerts.png",
                figures.png(figures.alerts_figure(run)) if run.alerts else None,
                f"{run.name}: alerts announced, by step and kind",
            ),
            "forecast": image(
                f"{stem}_forecast.png",
                figures.png(figures.forecast_figure(run.name, run.predictions))
                if run.predictions
                else None,
                f"{run.name}: forecast against realised variance, test period",
            ),
        }
        per_run.append({k: v for k, v in drawn.items() if v is not None})
    for img in images:
        (out / img.file).write_bytes(img.data)
    path = out / REPORT_FILE
    path.write_text(render_html(str(log_dir), runs, overview, per_run), encoding="utf-8")
    return path
