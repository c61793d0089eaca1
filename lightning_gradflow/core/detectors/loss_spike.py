"""``loss_spike``: the training loss jumps far above its recent level and stays there.

A step counts as spiking when ``loss - median > (loss_spike_factor - 1) * scale`` with ``scale``
the larger of ``|median|`` and the robust spread (1.4826 MAD) of the last ``window`` losses, i.e.
for positive losses ``loss > loss_spike_factor * median``. One bad batch is not a spike: the
alert needs ``loss_spike_steps`` consecutive spiking steps, after ``min_history`` steps. A loss
that keeps climbing (divergence) keeps the condition on. Non-finite losses are left to
``nonfinite``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors.base import (
    GradientDetector,
    History,
    StepContext,
    median_of,
)
from lightning_gradflow.core.detectors.config import DetectorConfig

HINT = (
    "Lower the learning rate (or add warm-up), clip the gradient norm, and check the batches "
    "of these steps for bad data."
)


class LossSpikeDetector(GradientDetector):
    """The training loss jumps far above its recent level for several steps, or diverges."""

    kind = "loss_spike"
    hint = HINT
    order = 50

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._losses = History(config.window)
        self._seen = 0
        self._streak = 0

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        cfg = self.config
        loss = record.loss
        if loss is None or not np.isfinite(loss):
            return []
        alert = None  # pragma: no mutate (an empty string is as false)
        if self._seen >= cfg.min_history and len(self._losses) >= 3:
            values = np.asarray(self._losses.values())
            median = median_of(values)
            spread = 1.4826 * median_of(np.abs(values - median))
            scale = max(abs(median), spread)
            spiking = scale > 0 and loss - median > (cfg.loss_spike_factor - 1) * scale
            self._streak = self._streak + 1 if spiking else 0
            if self._streak >= cfg.loss_spike_steps:
                ratio = (loss - median) / scale + 1.0
                alert = self.alert(
                    record.step,
                    ctx.epoch,
                    (),
                    ratio,
                    cfg.loss_spike_factor,
                    f"training loss {loss:.4g} is {ratio:.0f}x its recent median "
                    f"{median:.4g} for {self._streak} consecutive steps",
                    severity="critical" if ratio > cfg.loss_spike_factor**2 else "warning",
                    variant="loss_spike",
                    loss=loss,
                    median=median,
                )
        self._losses.append(loss)
        self._seen += 1
        return [alert] if alert else []

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self._losses.values(), "seen": self._seen, "streak": self._streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._losses.load(state["losses"])
        self._seen = int(state["seen"])
        self._streak = int(state["streak"])
