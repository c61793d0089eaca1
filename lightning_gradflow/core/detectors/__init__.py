"""Gradient pathology detectors, fed by the statistics the collector already computes.

Example:
    >>> import numpy as np
    >>> from lightning_gradflow.core.collector import StepRecord
    >>> detectors = GradientDetectors()
    >>> record = StepRecord(step=0, optimizer_index=0, layer_norms=np.array([np.nan, 1.0]),
    ...                     has_grad=np.array([True, True]), total_norm=float("nan"))
    >>> [a.kind for a in detectors.update(record, StepContext(layer_names=["a", "b"]))]
    ['nonfinite']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors.base import Detector, StepContext
from lightning_gradflow.core.detectors.clipping import ClippingDetector
from lightning_gradflow.core.detectors.config import DetectorConfig
from lightning_gradflow.core.detectors.exploding import ExplodingDetector
from lightning_gradflow.core.detectors.loss_spike import LossSpikeDetector
from lightning_gradflow.core.detectors.nonfinite import NonFiniteDetector
from lightning_gradflow.core.detectors.vanishing import VanishingDetector
from lightning_gradflow.core.validation import check_kinds

GRADIENT_KINDS: tuple[str, ...] = (
    "vanishing",
    "exploding",
    "nonfinite",
    "always_clipping",
    "loss_spike",
)
_CLASSES = (
    VanishingDetector,
    ExplodingDetector,
    NonFiniteDetector,
    ClippingDetector,
    LossSpikeDetector,
)


class GradientDetectors:
    """All gradient detectors, run in a fixed order on each step's record.

    Args:
        config: thresholds (defaults: :class:`DetectorConfig`).
        disable: kinds not to detect.

    Raises:
        ValueError: for an unknown kind in ``disable``.
    """

    def __init__(self, config: DetectorConfig | None = None, disable: Iterable[str] = ()) -> None:
        disable = check_kinds(disable, GRADIENT_KINDS)
        self.config = config or DetectorConfig()
        self.detectors: list[Detector] = [
            cls(self.config) for cls in _CLASSES if cls.kind not in disable
        ]

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        """Alerts of every detector for this step, nonfinite first."""
        alerts = [alert for d in self.detectors for alert in d.update(record, ctx)]
        return sorted(alerts, key=lambda a: a.kind != "nonfinite")

    def state_dict(self) -> dict[str, Any]:
        return {d.kind: d.state_dict() for d in self.detectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for detector in self.detectors:
            if detector.kind in state:
                detector.load_state_dict(state[detector.kind])


__all__ = [
    "GRADIENT_KINDS",
    "DetectorConfig",
    "GradientDetectors",
    "StepContext",
]
