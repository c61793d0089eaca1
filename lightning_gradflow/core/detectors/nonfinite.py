"""``nonfinite``: NaN or Inf in a gradient or in the loss, with the most likely origin.

It costs nothing: a NaN or Inf anywhere in a layer makes that layer's norm non-finite. The
backward pass runs from the output to the input and contaminates everything it passes after the
first bad value, so when the loss is finite the most likely origin is the **output-most**
affected layer. When the loss itself is NaN/Inf the problem is in the forward pass (inputs,
overflowing activations, weights already corrupted by an earlier update).

Under a float16 ``GradScaler`` the first steps routinely produce Inf gradients while the loss
scale calibrates (the scaler skips them), so the alert waits for ``amp_nonfinite_patience``
consecutive bad steps there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors.base import GradientDetector, StepContext, name_list
from lightning_gradflow.core.detectors.config import DetectorConfig

HINT = (
    "Find the first bad value: check the named layer's inputs and operations (log/sqrt/"
    "division near 0, overflow in float16), lower the learning rate, clip the gradient norm, "
    "or run one step with torch.autograd.set_detect_anomaly(True)."
)


class NonFiniteDetector(GradientDetector):
    """NaN or Inf in a gradient or in the loss.

    Names the affected layers and the most likely origin (see the module docstring).
    """

    kind = "nonfinite"
    hint = HINT
    order = 30

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._streak = 0

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        bad = record.nonfinite_layers
        loss_bad = record.loss is not None and not np.isfinite(record.loss)
        if bad.size == 0 and not loss_bad:
            self._streak = 0
            return []
        self._streak += 1
        if ctx.amp_scaler and self._streak < self.config.amp_nonfinite_patience:
            return []
        names = [ctx.layer_names[i] for i in bad]
        if loss_bad:
            origin = "the forward pass (the loss itself is non-finite)"
            if record.weight_norms is not None:
                corrupt = np.flatnonzero(~np.isfinite(record.weight_norms))
                if corrupt.size:
                    weights = name_list([ctx.layer_names[i] for i in corrupt])
                    origin += f"; weights already non-finite in {weights}"
        else:
            origin = f"{names[-1]} (the output-most affected layer)"
        where = f"in {len(names)} layer(s): {name_list(names)}" if names else "in no gradient"
        loss_text = f"loss = {record.loss}" if loss_bad else "loss finite"
        amp = f" on {self._streak} consecutive steps under AMP" if ctx.amp_scaler else ""
        return [
            self.alert(
                record.step,
                ctx.epoch,
                names,
                len(names),
                0.0,
                f"NaN/Inf gradient {where} ({loss_text}){amp}; likely origin: {origin}",
                severity="critical",
                variant="nonfinite",
                origin=names[-1] if names and not loss_bad else None,
                loss_nonfinite=bool(loss_bad),
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"streak": self._streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._streak = int(state["streak"])
