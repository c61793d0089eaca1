"""Read a log directory into one :class:`Run` per TensorBoard event directory.

A run is a directory holding ``events.out.tfevents.*`` with the monitor's tags (see the dashboard
contract: ``grad_log10_norm/<index>.<name>``, ``grad_flow/*``, ``alerts/*``). Next to it, in the
directories that belong to it alone, the report also reads ``gradflow_alerts.jsonl`` and, for a
recipe job, ``metrics.json`` and ``predictions.csv``.

Example:
    >>> runs = load_runs("outputs/multiruns/2026-12-02/08-00-00")  # doctest: +SKIP
    >>> [run.name for run in runs]  # doctest: +SKIP
    ['model=mlp', 'model=resnet']
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_gradflow.writers.alert_file import ALERTS_FILE

EVENTS_GLOB = "events.out.tfevents.*"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
LOG10_PREFIX = "grad_log10_norm/"
PICTURE_TAG = "grad_flow/picture"
# the run-level scalars kept (the per-layer families are read into the matrix only)
_KEPT_SCALARS = ("grad_flow/", "grad_norm/total", "grad_nonfinite/", "alerts/")
_INDEX = re.compile(r"^(\d+)\.")
_SEVERITY = re.compile(r"^\*\*(\w+)\*\*")


@dataclass(frozen=True)
class AlertMark:
    """One announced alert: when, what, how bad."""

    step: int
    kind: str
    severity: str
    message: str


@dataclass(frozen=True)
class Predictions:
    """The test-period forecasts of a recipe job (``predictions.csv``).

    Attributes:
        dates: the ``date`` column as written.
        realised: the realised variance proxy.
        forecasts: forecast columns by name, the network's first (file order).
    """

    dates: tuple[str, ...]
    realised: np.ndarray
    forecasts: dict[str, np.ndarray]


@dataclass(frozen=True)
class Run:
    """What the report knows about one run.

    Attributes:
        name: the name shown everywhere (see :func:`run_names`).
        path: the event directory relative to the log directory (``.`` for the root).
        layers: layer labels ``<index>.<name>`` in depth order (input first).
        steps: the logged steps, ascending.
        log10_norms: ``(steps, layers)`` log10 gradient norms; NaN where nothing was logged or
            the gradient was not finite; ``ZERO_LOG10`` for an exactly zero gradient.
        nonfinite: ``(steps, layers)`` True where the logged value was NaN/Inf.
        scalars: run-level scalar series by tag: ``(steps, values)``.
        picture: the last ``grad_flow/picture`` as PNG bytes and its step, if any.
        alerts: the announced alerts, by step.
        alerts_source: where they were read from (a file name or ``TensorBoard text``).
        metrics: the recipe job's ``metrics.json``, if any.
        predictions: the recipe job's ``predictions.csv``, if any.
    """

    name: str
    path: str
    layers: tuple[str, ...]
    steps: np.ndarray
    log10_norms: np.ndarray
    nonfinite: np.ndarray
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    picture: tuple[bytes, int] | None = None
    alerts: tuple[AlertMark, ...] = ()
    alerts_source: str | None = None
    metrics: dict[str, Any] | None = None
    predictions: Predictions | None = None


def natural_key(path: Path | str) -> tuple[tuple[int, Any], ...]:
    """Sort key that puts ``2`` before ``10`` in every path component.

    Example:
        >>> sorted(["10/a", "2/a", "b"], key=natural_key)
        ['2/a', '10/a', 'b']
    """
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in Path(path).parts)


def run_names(paths: Sequence[tuple[str, ...]], root: str = "run") -> list[str]:
    """Names for runs at these relative paths: the shortest unique tails, after dropping the
    trailing components every run shares (``version_0``); a single run keeps its whole path.

    Example:
        >>> run_names([("0", "tensorboard", "model=mlp", "version_0"),
        ...            ("1", "tensorboard", "model=resnet", "version_0")])
        ['model=mlp', 'model=resnet']
        >>> run_names([("a", "version_0"), ("a", "version_1"), ("b", "version_0")])
        ['a/version_0', 'a/version_1', 'b/version_0']
        >>> run_names([()], root="logs"), run_names([("lightning_logs", "version_0")])
        (['logs'], ['lightning_logs/version_0'])
    """
    if len(paths) <= 1:
        return ["/".join(p) or root for p in paths]
    trimmed = [tuple(p) for p in paths]
    while all(len(p) > 1 for p in trimmed) and len({p[-1] for p in trimmed}) == 1:
        trimmed = [p[:-1] for p in trimmed]
    for k in range(1, max(map(len, trimmed)) + 1):
        tails = ["/".join(p[-k:]) or root for p in trimmed]
        if len(set(tails)) == len(tails):
            return tails
    return ["/".join(p) or root for p in paths]


def layer_order(tags: Sequence[str]) -> list[str]:
    """``grad_log10_norm/<index>.<name>`` tags in depth order (index, then name).

    Example:
        >>> layer_order(["grad_log10_norm/10.head", "grad_log10_norm/02.net.0", "grad_norm/x"])
        ['grad_log10_norm/02.net.0', 'grad_log10_norm/10.head']
    """

    def key(tag: str) -> tuple[int, str]:
        label = tag[len(LOG10_PREFIX) :]
        match = _INDEX.match(label)
        return (int(match.group(1)) if match else math.inf, label)  # type: ignore[return-value]

    return sorted((t for t in tags if t.startswith(LOG10_PREFIX)), key=key)


def norm_matrix(
    series: Sequence[Sequence[tuple[int, float]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer ``(step, value)`` series to steps, a ``(steps, layers)`` matrix (NaN where
    missing or not finite) and the mask of non-finite values. A step logged twice (a resumed
    run) keeps its last value.

    Example:
        >>> steps, values, bad = norm_matrix([[(0, -1.0), (2, -2.0)], [(2, float("nan"))]])
        >>> steps.tolist(), values.tolist(), bad.tolist()
        ([0, 2], [[-1.0, nan], [-2.0, nan]], [[False, False], [False, True]])
    """
    steps = np.array(sorted({s for layer in series for s, _ in layer}), dtype=np.int64)
    row = {int(s): i for i, s in enumerate(steps)}
    values = np.full((steps.size, len(series)), np.nan)
    bad = np.zeros(values.shape, dtype=bool)
    for j, layer in enumerate(series):
        for step, value in layer:
            finite = math.isfinite(value)
            values[row[step], j] = value if finite else np.nan
            bad[row[step], j] = not finite
    return steps, values, bad


def parse_alert_text(step: int, kind: str, text: str) -> AlertMark:
    """An ``alerts/<kind>`` TensorBoard text (``**severity** at step N: message ...``).

    Example:
        >>> parse_alert_text(7, "vanishing", "**warning** at step 7: net.0 norm 1e-09\\n\\nfix")
        AlertMark(step=7, kind='vanishing', severity='warning', message='net.0 norm 1e-09')
    """
    match = _SEVERITY.match(text)
    first = text.split("\n", 1)[0]
    message = first.split(": ", 1)[1] if ": " in first else first
    return AlertMark(step, kind, match.group(1) if match else "", message.strip())


def read_alerts_file(path: Path) -> tuple[AlertMark, ...]:
    """The alerts of a ``gradflow_alerts.jsonl`` (one ``Alert.to_dict()`` per line)."""
    marks = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            marks.append(
                AlertMark(
                    int(record["step"]),
                    str(record["kind"]),
                    str(record.get("severity", "")),
                    str(record.get("message", "")),
                )
            )
    return tuple(sorted(marks, key=lambda a: a.step))


def read_predictions(path: Path) -> Predictions | None:
    """``predictions.csv`` (``date,realised,<model>,har,...``); None if it has no rows."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    columns = [c for c in rows[0] if c not in ("date", "realised")]

    def column(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r[name] not in ("", None) else np.nan for r in rows])

    return Predictions(
        dates=tuple(r["date"] for r in rows),
        realised=column("realised"),
        forecasts={c: column(c) for c in columns},
    )


def event_dirs(log_dir: Path) -> list[Path]:
    """Every directory under ``log_dir`` (itself included) holding an event file."""
    found = {p.parent for p in log_dir.rglob(EVENTS_GLOB) if p.is_file()}
    return sorted(found, key=lambda d: natural_key(d.relative_to(log_dir)))


def _owned_dirs(event_dir: Path, log_dir: Path, others: Sequence[Path]) -> list[Path]:
    """The directories from ``event_dir`` up to ``log_dir`` that hold no other run."""
    owned = [event_dir]
    for parent in event_dir.relative_to(log_dir).parents:
        candidate = log_dir / parent
        if any(o != event_dir and o.is_relative_to(candidate) for o in others):
            break
        owned.append(candidate)
    return owned


def _nearest(dirs: Sequence[Path], name: str) -> Path | None:
    return next((d / name for d in dirs if (d / name).is_file()), None)


def _load_events(event_dir: Path) -> dict[str, Any] | None:
    """Scalars, last picture and alert texts of one event directory; None without our tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(event_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    reader_log = logging.getLogger("tensorboard")  # INFO per event file, where logging is set up
    level = reader_log.level
    reader_log.setLevel(logging.WARNING)
    try:
        events.Reload()
    finally:
        reader_log.setLevel(level)
    tags = events.Tags()
    scalar_tags = tags.get("scalars", [])
    layer_tags = layer_order(scalar_tags)
    kept = [t for t in scalar_tags if t.startswith(_KEPT_SCALARS)]
    if not layer_tags and not kept:
        return None
    series = [[(e.step, e.value) for e in events.Scalars(t)] for t in layer_tags]
    steps, values, bad = norm_matrix(series)
    picture = None
    if PICTURE_TAG in tags.get("images", []):
        last = events.Images(PICTURE_TAG)[-1]
        picture = (bytes(last.encoded_image_string), int(last.step))
    texts = []
    for tag in tags.get("tensors", []):
        kind = tag.removeprefix("alerts/").removesuffix("/text_summary")
        if tag.startswith("alerts/") and "/" not in kind:
            for e in events.Tensors(tag):
                text = e.tensor_proto.string_val[0].decode("utf-8", "replace")
                texts.append(parse_alert_text(int(e.step), kind, text))
    return {
        "layers": tuple(t[len(LOG10_PREFIX) :] for t in layer_tags),
        "steps": steps,
        "log10_norms": values,
        "nonfinite": bad,
        "scalars": {
            t: (
                np.array([e.step for e in events.Scalars(t)], dtype=np.int64),
                np.array([e.value for e in events.Scalars(t)], dtype=np.float64),
            )
            for t in kept
        },
        "picture": picture,
        "texts": tuple(sorted(texts, key=lambda a: a.step)),
    }


def load_runs(log_dir: str | Path) -> list[Run]:
    """Every run under ``log_dir``, in natural path order.

    Raises:
        FileNotFoundError: if no event directory under ``log_dir`` holds the monitor's tags.
    """
    log_dir = Path(log_dir).resolve()
    if not log_dir.is_dir():
        raise FileNotFoundError(f"log directory {log_dir} does not exist")
    loaded = [(d, _load_events(d)) for d in event_dirs(log_dir)]
    loaded = [(d, data) for d, data in loaded if data is not None]
    if not loaded:
        raise FileNotFoundError(
            f"no TensorBoard event files with gradient-flow tags under {log_dir} "
            "(written by lightning_gradflow's monitor with a TensorBoard logger)"
        )
    dirs = [d for d, _ in loaded]
    names = run_names([d.relative_to(log_dir).parts for d in dirs], root=log_dir.name)
    runs = []
    for name, (event_dir, data) in zip(names, loaded, strict=True):
        owned = _owned_dirs(event_dir, log_dir, dirs)
        metrics_path = _nearest(owned, METRICS_FILE)
        metrics = json.loads(metrics_path.read_text()) if metrics_path else None
        alerts_path = None
        if metrics_path and (metrics or {}).get("alerts_file"):
            alerts_path = metrics_path.parent / metrics["alerts_file"]
        if alerts_path is None or not alerts_path.is_file():
            alerts_path = _nearest(owned, ALERTS_FILE)
        predictions_path = _nearest(owned, PREDICTIONS_FILE)
        texts = data.pop("texts")
        source = ALERTS_FILE if alerts_path else ("TensorBoard text" if texts else None)
        runs.append(
            Run(
                name=name,
                path=str(event_dir.relative_to(log_dir)),
                **data,
                alerts=read_alerts_file(alerts_path) if alerts_path else texts,
                alerts_source=source,
                metrics=metrics,
                predictions=read_predictions(predictions_path) if predictions_path else None,
            )
        )
    return runs
