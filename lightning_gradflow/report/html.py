"""One self-contained HTML page: inline CSS, every image a base64 data URI, nothing fetched.

Example:
    >>> page = render_html("logs", runs=[], overview=None, per_run=[])
    >>> page.startswith("<!DOCTYPE html>") and "No run shows" in page
    True
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from lightning_gradflow.report.runs import Run
from lightning_gradflow.report.summary import (
    RESULT_COLUMNS,
    alert_counts,
    depth_summary,
    results_rows,
    run_verdict,
)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.5em}
h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}th{background:#f3f3f3}
tr.vanishing td:first-child{border-left:5px solid #1f77b4}
tr.exploding td:first-child{border-left:5px solid #d62728}
tr.baseline{color:#555;font-style:italic}
.summary{border:2px solid #888;border-radius:6px;padding:.5em 1em;background:#fafafa}
.summary h2{margin-top:.5em;border:none}
.bad{color:#b00}.ok{color:#070}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#666}
code{background:#f3f3f3;padding:0 .2em}
"""


@dataclass(frozen=True)
class Image:
    """A PNG written beside ``report.html`` (``file``) and embedded in it (``data``)."""

    file: str
    data: bytes
    alt: str


def _img(image: Image) -> str:
    uri = "data:image/png;base64," + base64.b64encode(image.data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{escape(image.alt)}">'
        f"<figcaption>{escape(image.alt)} ({escape(image.file)})</figcaption></figure>"
    )


def _num(value: float | None, fmt: str = ".2g") -> str:
    return "–" if value is None else format(value, fmt)


def _anchor(index: int) -> str:
    return f"run-{index}"


def _table(
    columns: Sequence[str], rows: Sequence[Mapping[str, str]], classes: Sequence[str]
) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{cell}</td>" for cell in row.values()) + "</tr>"
        for row, cls in zip(rows, classes, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(runs: Sequence[Run], flags: Sequence[list[tuple[str, str]]]) -> str:
    parts = ['<div class="summary" id="summary">']
    for pathology in ("vanishing", "exploding"):
        hits = [
            (i, run, reason)
            for i, (run, fl) in enumerate(zip(runs, flags, strict=True))
            for kind, reason in fl
            if kind == pathology
        ]
        if hits:
            items = "".join(
                f'<li><a href="#{_anchor(i)}"><b>{escape(run.name)}</b></a>: {escape(reason)}</li>'
                for i, run, reason in hits
            )
            parts.append(
                f'<h2 class="bad">{pathology.capitalize()} gradients: {len(hits)} of '
                f"{len(runs)} run{'s' * (len(runs) != 1)}</h2><ul>{items}</ul>"
            )
    healthy = [run.name for run, fl in zip(runs, flags, strict=True) if not fl]
    if len(healthy) == len(runs):
        parts.append('<p class="ok">No run shows vanishing or exploding gradients.</p>')
    elif healthy:
        names = ", ".join(f"<b>{escape(n)}</b>" for n in healthy)
        parts.append(f'<p class="ok">No vanishing or exploding gradients in: {names}.</p>')
    parts.append(
        "<p>Vanishing: first/last-layer gradient-norm ratio &lt; 1e-3 or layers below 1e-5 at "
        "the last step. Exploding: ratio &gt; 1e3, NaN/Inf gradients or exploding/nonfinite "
        "alerts.</p></div>"
    )
    return "".join(parts)


def _runs_table(runs: Sequence[Run], flags: Sequence[list[tuple[str, str]]]) -> str:
    columns = ("run", "layers", "steps", "first/last", "γ", "dead layers", "alerts", "verdict")
    rows, classes = [], []
    for i, (run, fl) in enumerate(zip(runs, flags, strict=True)):
        depth = depth_summary(run)
        counts = alert_counts(run)
        rows.append(
            {
                "run": f'<a href="#{_anchor(i)}">{escape(run.name)}</a>',
                "layers": str(len(run.layers)),
                "steps": str(run.steps.size),
                "first/last": _num(depth.first_last_ratio),
                "γ": _num(depth.gamma, ".3g"),
                "dead layers": _num(depth.dead_layers, "d"),
                "alerts": escape(" ".join(f"{k}:{n}" for k, n in counts.items()) or "none"),
                "verdict": escape(", ".join(k for k, _ in fl) or "healthy"),
            }
        )
        classes.append(fl[0][0] if fl else "")
    return _table(columns, rows, classes)


def _results(runs: Sequence[Run]) -> str:
    rows = results_rows(runs)
    if not rows:
        return ""
    classes = ["baseline" if r["run"].startswith("baseline") else "" for r in rows]
    escaped = [{k: escape(v) for k, v in r.items()} for r in rows]
    return (
        '<h2 id="results">Sweep results (test period, sorted by QLIKE, lower is better)</h2>'
        + _table(RESULT_COLUMNS, escaped, classes)
    )


def _run_section(index: int, run: Run, flags: list[tuple[str, str]], images: Mapping) -> str:
    depth = depth_summary(run)
    verdict = "; ".join(f"{k}: {r}" for k, r in flags) or "healthy"
    parts = [
        f'<section id="{_anchor(index)}"><h2>{escape(run.name)}</h2>',
        f"<p>Event files: <code>{escape(run.path)}</code>. {len(run.layers)} layers, "
        f"{run.steps.size} logged steps. At step {_num(depth.step, 'd')}: first/last "
        f"{_num(depth.first_last_ratio)}, γ {_num(depth.gamma, '.3g')}, dead layers "
        f'{_num(depth.dead_layers, "d")}. <b class="{"bad" if flags else "ok"}">'
        f"{escape(verdict)}</b></p>",
    ]
    for key in ("heatmap", "picture", "alerts", "forecast"):
        if key in images:
            parts.append(_img(images[key]))
    if not run.alerts:
        parts.append("<p>No alerts announced.</p>")
    elif run.alerts_source:
        parts.append(f"<p>Alerts read from {escape(run.alerts_source)}.</p>")
    parts.append("</section>")
    return "".join(parts)


def render_html(
    title: str,
    runs: Sequence[Run],
    overview: Image | None,
    per_run: Sequence[Mapping[str, Image]],
) -> str:
    """The report page.

    Args:
        title: what the report is about (the log directory).
        runs: the runs, in display order.
        overview: the cross-run gradient-flow figure.
        per_run: per run, its figures by key (``heatmap``, ``picture``, ``alerts``,
            ``forecast``).
    """
    flags = [run_verdict(run) for run in runs]
    toc = "".join(
        f'<li><a href="#{_anchor(i)}">{escape(run.name)}</a></li>' for i, run in enumerate(runs)
    )
    body = [
        f"<h1>Gradient-flow report: {escape(title)}</h1>",
        f"<p>{len(runs)} run{'s' * (len(runs) != 1)}.</p>",
        _summary(runs, flags),
        _runs_table(runs, flags) if runs else "",
        _img(overview) if overview else "",
        _results(runs),
        f"<h2>Runs</h2><ul>{toc}</ul>" if runs else "",
        *(
            _run_section(i, run, fl, images)
            for i, (run, fl, images) in enumerate(zip(runs, flags, per_run, strict=True))
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>Gradient-flow report: {escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
