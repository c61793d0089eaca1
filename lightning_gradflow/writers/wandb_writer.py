"""Weights & Biases writer: histograms from on-device counts, images and alerts.

Every call logs ``trainer/global_step`` beside its values, the step metric that Lightning's
``WandbLogger`` declares, so W&B plots these against the same x-axis as the scalars.

Example:
    >>> import wandb  # doctest: +SKIP
    >>> writer = WandbWriter(wandb.init(mode="offline"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.writers.base import Histogram

STEP_KEY = "trainer/global_step"


class WandbWriter:
    """Writes to a ``wandb`` run (what ``WandbLogger.experiment`` returns)."""

    def __init__(self, run: Any) -> None:
        import wandb

        self._wandb = wandb
        self.run = run

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        data = {
            tag: self._wandb.Histogram(np_histogram=(np.asarray(c), np.asarray(e)))
            for tag, (c, e) in histograms.items()
        }
        if data:
            self.run.log({**data, STEP_KEY: step})

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self.run.log({tag: self._wandb.Image(image), STEP_KEY: step})

    def alert(self, alert: Alert) -> None:
        level = (
            self._wandb.AlertLevel.ERROR
            if alert.severity == "critical"
            else (self._wandb.AlertLevel.WARN)
        )
        self.run.alert(
            title=f"gradflow: {alert.kind} at step {alert.step}",
            text=f"{alert.message}\nThreshold {alert.threshold:g}. Fix: {alert.hint}",
            level=level,
            wait_duration=0,
        )
        self.run.log({f"alerts/{alert.kind}_record": alert.to_dict(), STEP_KEY: alert.step})
