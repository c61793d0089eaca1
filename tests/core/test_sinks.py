"""Sinks: every call reaches every output, and a failing output warns once and is skipped."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.sinks import (
    ConsoleSink,
    GradFlowWarning,
    Sink,
    Sinks,
    _one_line_format,
)
from lightning_gradflow.engine import GradFlowEngine, RunContext

METHODS = ("start", "scalars", "histograms", "image", "alert", "record", "finish")


class Recorder(Sink):
    """Keeps every call with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def start(self, num_optimizers: int) -> None:
        self.calls.append(("start", (num_optimizers,)))

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        self.calls.append(("scalars", (step, metrics)))

    def histograms(self, step: int, histograms: Mapping[str, Any]) -> None:
        self.calls.append(("histograms", (step, histograms)))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self.calls.append(("image", (step, tag, image)))

    def alert(self, alert: Alert, count: int) -> None:
        self.calls.append(("alert", (alert, count)))

    def record(self, record: StepRecord) -> None:
        self.calls.append(("record", (record,)))

    def finish(self, summary: Mapping[str, float]) -> None:
        self.calls.append(("finish", (summary,)))


class Broken(Sink):
    """Fails at every call."""

    def __init__(self, label: str = "disk") -> None:
        self.label = label
        self.attempts = 0

    @property
    def name(self) -> str:
        return f"Broken({self.label})"

    def _fail(self, *args: Any) -> None:
        self.attempts += 1
        raise OSError(28, "No space left on device")

    start = scalars = histograms = image = alert = record = finish = _fail


def _alert() -> Alert:
    return Alert(
        "nonfinite", "critical", 4, 1, ("fc",), float("nan"), 0.0, "NaN in fc", "Lower it."
    )


def _record() -> StepRecord:
    return StepRecord(4, 0, np.ones(2), np.ones(2, dtype=bool), 1.5)


def _call_every_method(sinks: Sinks) -> list[tuple[str, tuple[Any, ...]]]:
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    calls = [
        ("start", (2,)),
        ("scalars", (3, {"grad_norm/total": 1.0})),
        ("histograms", (3, {"h": (np.ones(2), np.arange(3.0))})),
        ("image", (3, "flow", image)),
        ("alert", (_alert(), 5)),
        ("record", (_record(),)),
        ("finish", ({"steps": 4.0},)),
    ]
    for method, args in calls:
        getattr(sinks, method)(*args)
    return calls


def test_every_call_reaches_every_sink_with_its_arguments():
    first, second = Recorder(), Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calls = _call_every_method(Sinks([first, second]))
    assert [m for m, _ in calls] == list(METHODS)
    for sink in (first, second):
        assert [m for m, _ in sink.calls] == list(METHODS)
        for (_, got), (_, sent) in zip(sink.calls, calls, strict=True):
            assert len(got) == len(sent) and all(a is b for a, b in zip(got, sent, strict=True))


def test_the_base_sink_ignores_everything_and_is_named_after_its_class():
    sinks = Sinks([Sink(), ConsoleSink()])
    assert [s.name for s in sinks.sinks] == ["Sink", "ConsoleSink"]
    assert Recorder().name == "Recorder"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _call_every_method(Sinks([Sink()]))
    assert caught == []


def test_emptiness():
    assert not Sinks() and not Sinks([]) and Sinks([Sink()])
    assert Sinks(iter([Sink(), Sink()])).sinks.__len__() == 2  # any iterable, kept as a list
    Sinks().alert(_alert(), 1)  # nothing to call


def test_a_failing_sink_warns_once_by_name_and_the_others_go_on():
    broken, other, good = Broken("disk"), Broken("net"), Recorder()
    sinks = Sinks([broken, good, other])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _call_every_method(sinks)
        _call_every_method(sinks)
    assert broken.attempts == other.attempts == 2 * len(METHODS)  # tried every time
    assert [m for m, _ in good.calls] == list(METHODS) * 2
    assert [w.category for w in caught] == [GradFlowWarning, GradFlowWarning]
    assert [str(w.message) for w in caught] == [
        f"GradFlowMonitor: writing to Broken({label}) failed (OSError: [Errno 28] No space left "
        "on device); training goes on, and alerts stay in `monitor.alerts` and the other outputs."
        for label in ("disk", "net")
    ]


def test_console_sink_warns_the_alert_in_one_line():
    with pytest.warns(GradFlowWarning) as caught:
        ConsoleSink().alert(_alert(), count=3)
    [warning] = caught
    assert str(warning.message) == _alert().format()
    line = warnings.formatwarning(warning.message, warning.category, "x.py", 7)
    assert line == f"GradFlowWarning: {_alert().format()}\n"


def test_the_one_line_format_applies_to_gradflow_warnings_and_their_subclasses_only():
    seen: list[tuple[Any, ...]] = []

    def formatter(*args: Any) -> str:
        seen.append(args)
        return "theirs"

    class Sub(GradFlowWarning):
        pass

    fmt = _one_line_format(formatter)
    assert fmt("NaN at step 3", GradFlowWarning, "a.py", 1) == "GradFlowWarning: NaN at step 3\n"
    assert fmt(Sub("x"), Sub, "a.py", 1) == "Sub: x\n"
    assert seen == []
    message = UserWarning("other")
    assert fmt(message, UserWarning, "a.py", 9) == "theirs"
    assert fmt(message, UserWarning, "b.py", 2, "code") == "theirs"
    assert fmt("odd", "not a class", "c.py", 3) == "theirs"  # a malformed category passes on
    assert seen == [
        (message, UserWarning, "a.py", 9, None),
        (message, UserWarning, "b.py", 2, "code"),
        ("odd", "not a class", "c.py", 3, None),
    ]


def test_a_run_start_installs_the_format_again_over_one_imported_since(monkeypatch):
    def lightnings_format(message, category, filename, lineno, line=None) -> str:
        return f"theirs: {message}"

    monkeypatch.setattr(warnings, "formatwarning", lightnings_format)  # as `import lightning` does
    GradFlowEngine().start(RunContext(sinks=[]))
    installed = warnings.formatwarning
    assert installed("step 3: NaN", GradFlowWarning, "x.py", 7) == "GradFlowWarning: step 3: NaN\n"
    assert installed("other", UserWarning, "x.py", 7) == "theirs: other"  # wrapped, not dropped
    GradFlowEngine().start(RunContext(sinks=[]))
    assert warnings.formatwarning is installed  # once
