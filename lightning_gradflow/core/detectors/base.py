"""What every gradient detector sees and implements.

A gradient detector subclasses :class:`GradientDetector` (see
:class:`~lightning_gradflow.core.detector.Detector` for ``kind``, ``hint`` and ``alert``). It is
fed one :class:`~lightning_gradflow.core.collector.StepRecord` per optimizer step, in order (the
statistics the collector already computed: no second pass over the gradients, no extra host
sync), and returns the alerts it sees at that step. Its windows and counters are plain Python
values exposed through ``state_dict``/``load_state_dict`` for checkpoints. Its thresholds are
fields of :class:`~lightning_gradflow.core.detectors.config.DetectorConfig`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detector import Detector
from lightning_gradflow.core.detectors.config import DetectorConfig

MAX_NAMES_IN_MESSAGE = 5


@dataclass(frozen=True)
class StepContext:
    """What detectors need to know beyond the record.

    Attributes:
        layer_names: layer names in depth order.
        epoch: the current epoch, if known.
        clip_norm: the gradient-norm clipping value in force, if any.
        amp_scaler: a float16 GradScaler is active (it skips steps with NaN/Inf gradients).
    """

    layer_names: Sequence[str]
    epoch: int | None = None
    clip_norm: float | None = None
    amp_scaler: bool = False


class GradientDetector(Detector):
    """A stateful detector of one alert kind, fed every optimizer step's record.

    Args:
        config: the thresholds of the gradient detectors (its own fields included).
    """

    family: ClassVar[str] = "gradient"
    config: DetectorConfig

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        """Alerts seen at this step (empty if none)."""
        raise NotImplementedError


def median_of(values: Iterable[float] | np.ndarray) -> float:
    """The median of finite values (at least one), as ``np.median`` gives it, ~4x faster.

    ``np.median``'s generic machinery (axes, NaN checks, a mean of the middle pair) costs more
    than the partition itself on the detectors' windows of ~50 values, and they take three
    medians every judged step.

    Example:
        >>> median_of([3.0, 1.0, 2.0]), median_of([4.0, 1.0, 2.0, 3.0])
        (2.0, 2.5)
    """
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    half = array.size // 2
    if array.size % 2:
        return float(np.partition(array, half)[half])
    middle = np.partition(array, (half - 1, half))
    return float((middle[half - 1] + middle[half]) / 2)


class History:
    """A bounded window of recent finite values with a median.

    Example:
        >>> h = History(3)
        >>> for v in (1.0, 2.0, float("nan"), 10.0, 3.0):
        ...     h.append(v)
        >>> h.values(), h.median()
        ([2.0, 10.0, 3.0], 3.0)
    """

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def append(self, value: float) -> None:
        if np.isfinite(value):
            self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> list[float]:
        return list(self._values)

    def median(self) -> float:
        """The median of the values held (at least one)."""
        return median_of(self._values)

    def load(self, values: Iterable[float]) -> None:
        self._values.clear()
        self._values.extend(values)


def name_list(names: Sequence[str]) -> str:
    """``a, b, c`` or ``a, b, c, d, e (+7 more)``."""
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    extra = len(names) - MAX_NAMES_IN_MESSAGE
    return f"{shown} (+{extra} more)" if extra > 0 else shown
