"""Where the monitor's output goes: one small interface every output implements.

A :class:`Sink` shows what it can and ignores the rest: a Lightning logger takes scalars, a
TensorBoard or W&B writer histograms, pictures and alerts, the console and the JSON-lines file
alerts only. :class:`Sinks` calls each of them and keeps a failing one from ending the run: it
warns once, naming the output, and carries on with the others.

Example:
    >>> class Scalars(Sink):
    ...     def __init__(self):
    ...         self.seen = []
    ...     def scalars(self, step, metrics):
    ...         self.seen.append((step, dict(metrics)))
    >>> class Full(Sink):
    ...     def scalars(self, step, metrics):
    ...         raise OSError(28, "No space left on device")
    >>> import warnings
    >>> good = Scalars()
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     Sinks([Full(), good]).scalars(3, {"grad_norm/total": 1.0})
    >>> good.seen, len(caught)
    ([(3, {'grad_norm/total': 1.0})], 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord

Histogram = tuple[np.ndarray, np.ndarray]
"""``(counts, edges)`` with ``len(edges) == len(counts) + 1``, as returned by ``np.histogram``."""


class GradFlowWarning(UserWarning):
    r"""The category of the console warnings the monitor prints (filter it like any warning).

    They print as one line each, without the source file and line that Python puts in front of
    a warning (they are about the user's run, not about a line of this library's code).

    Example:
        >>> warnings.formatwarning(GradFlowWarning("step 3: NaN"), GradFlowWarning, "x.py", 7)
        'GradFlowWarning: step 3: NaN\n'
    """


def _one_line_format(formatter: Callable[..., str]) -> Callable[..., str]:
    def format_warning(message, category, filename, lineno, line=None) -> str:
        if isinstance(category, type) and issubclass(category, GradFlowWarning):
            return f"{category.__name__}: {message}\n"
        return formatter(message, category, filename, lineno, line)

    format_warning.gradflow = True  # type: ignore[attr-defined]
    return format_warning


def install_one_line_format() -> None:
    """Print :class:`GradFlowWarning` as one line, over whatever format is installed.

    Done at import and again when a run starts: Lightning installs its own format when it is
    first imported, which may be after this library. Installing twice wraps once.
    """
    if not getattr(warnings.formatwarning, "gradflow", False):
        warnings.formatwarning = _one_line_format(warnings.formatwarning)


install_one_line_format()


class Sink:
    """An output. Every method is optional: the base ignores what a sink does not show."""

    @property
    def name(self) -> str:
        """How warnings name this output."""
        return type(self).__name__

    def start(self, num_optimizers: int) -> None:
        """Training starts with ``num_optimizers`` (a TensorBoard writer writes its layout)."""

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        """Numbers at ``step``."""

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        """One histogram per tag at ``step``."""

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An ``(height, width, 3)`` uint8 image at ``step``."""

    def alert(self, alert: Alert, count: int) -> None:
        """An announced alert; ``count`` is how often its kind occurred so far."""

    def record(self, record: StepRecord) -> None:
        """Every judged step's statistics, in order (for sinks that keep their own history)."""

    def finish(self, summary: Mapping[str, float]) -> None:
        """The fit ended: the run's summary numbers (``GradFlowEngine.run_summary``)."""


class ConsoleSink(Sink):
    """Alerts as one :class:`GradFlowWarning` each."""

    def alert(self, alert: Alert, count: int) -> None:
        warnings.warn(
            alert.format(),
            GradFlowWarning,
            stacklevel=2,  # pragma: no mutate (the one-line format prints no file or line)
        )


class Sinks:
    """Fans each call out to every sink; a failing sink warns once and is skipped that time."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks = list(sinks)
        self._failed: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            self._guarded(sink, getattr(sink, method), *args)

    def _guarded(self, sink: Sink, call: Callable[..., object], *args: Any) -> None:
        try:
            call(*args)
        except Exception as error:
            if sink.name not in self._failed:
                self._failed.add(sink.name)
                warnings.warn(
                    f"GradFlowMonitor: writing to {sink.name} failed "
                    f"({type(error).__name__}: {error}); training goes on, and alerts stay in "
                    "`monitor.alerts` and the other outputs.",
                    GradFlowWarning,
                    stacklevel=2,  # pragma: no mutate (as in ConsoleSink.alert)
                )

    def start(self, num_optimizers: int) -> None:
        self._each("start", num_optimizers)

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        self._each("scalars", step, metrics)

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        self._each("histograms", step, histograms)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self._each("image", step, tag, image)

    def alert(self, alert: Alert, count: int) -> None:
        self._each("alert", alert, count)

    def record(self, record: StepRecord) -> None:
        self._each("record", record)

    def finish(self, summary: Mapping[str, float]) -> None:
        self._each("finish", summary)
