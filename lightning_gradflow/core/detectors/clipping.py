"""``always_clipping``: norm clipping is active on almost every step.

Clipping is cheap insurance against a rare bad batch; when the pre-clip norm exceeds the clip
value on ``clipping_share`` (90 %) of the last ``clipping_window`` steps, every update is being
rescaled and clipping hides the real problem. Only norm clipping (Lightning's
``gradient_clip_algorithm="norm"``, the default) is judged; the norm is read before clipping.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors.base import GradientDetector, StepContext
from lightning_gradflow.core.detectors.config import DetectorConfig

HINT = (
    "Clipping on nearly every step hides a root cause: lower the learning rate or fix "
    "initialisation/normalisation, or set gradient_clip_val near the typical gradient norm."
)


class ClippingDetector(GradientDetector):
    """Gradient clipping is active on almost every step."""

    kind = "always_clipping"
    hint = HINT
    order = 40

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._clipped: deque[bool] = deque(maxlen=config.clipping_window)
        self._norms: deque[float] = deque(maxlen=config.clipping_window)

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        if ctx.clip_norm is None or not np.isfinite(record.total_norm):
            return []
        self._clipped.append(record.total_norm > ctx.clip_norm)
        self._norms.append(record.total_norm)
        if len(self._clipped) < self.config.clipping_window:
            return []
        share = sum(self._clipped) / len(self._clipped)
        if share < self.config.clipping_share:
            return []
        median = float(np.median(self._norms))
        return [
            self.alert(
                record.step,
                ctx.epoch,
                (),
                share,
                self.config.clipping_share,
                f"gradient norm exceeded the clip value {ctx.clip_norm:g} on {share:.0%} of "
                f"the last {len(self._clipped)} steps (median pre-clip norm {median:.3g})",
                variant="always_clipping",
                clip_norm=ctx.clip_norm,
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"clipped": list(self._clipped), "norms": list(self._norms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clipped.clear()
        self._clipped.extend(bool(v) for v in state["clipped"])
        self._norms.clear()
        self._norms.extend(float(v) for v in state["norms"])
