"""Gradient pathology detectors, fed by the statistics the collector already computes.

One module per alert kind, each defining one :class:`~.base.GradientDetector` subclass; this
package imports every module it holds, and defining the class registers its kind (see
:mod:`~lightning_gradflow.core.detector`). ``GRADIENT_KINDS`` and :class:`GradientDetectors` are
read from that registry.

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
from lightning_gradflow.core.detector import alert_kinds, detector_classes, import_submodules
from lightning_gradflow.core.detectors.base import GradientDetector, StepContext
from lightning_gradflow.core.detectors.config import DetectorConfig
from lightning_gradflow.core.validation import check_kinds


class GradientDetectors:
    """All registered gradient detectors, run in the order of their kinds on each step's record.

    Args:
        config: thresholds (defaults: :class:`DetectorConfig`).
        disable: kinds not to detect.

    Raises:
        ValueError: for an unknown kind in ``disable``.
    """

    def __init__(self, config: DetectorConfig | None = None, disable: Iterable[str] = ()) -> None:
        classes = detector_classes("gradient")
        disable = check_kinds(disable, tuple(cls.kind for cls in classes))
        self.config = config or DetectorConfig()
        self.detectors: list[GradientDetector] = [
            cls(self.config) for cls in classes if cls.kind not in disable
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


def __getattr__(name: str) -> Any:
    """``GRADIENT_KINDS``: the registered gradient detectors' kinds, read when asked for."""
    if name == "GRADIENT_KINDS":
        return alert_kinds("gradient")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


import_submodules(__name__, __path__)  # every detector module here registers its class

__all__ = [
    "GRADIENT_KINDS",
    "DetectorConfig",
    "GradientDetector",
    "GradientDetectors",
    "StepContext",
]
