"""``vanishing``: gradients shrink by orders of magnitude on their way back to the input.

Three conditions, each of which must hold for ``patience`` consecutive steps:

* **depth**: the input-side layer's norm is below ``vanishing_depth_ratio`` times the output-side
  layer's, and so is the ratio of the straight line fitted to log10 norm over depth (so one odd
  layer, e.g. an input layer fed by small-scale features, does not trigger it alone);
* **floor**: a layer's norm is below ``vanishing_floor`` (1e-5, "effectively dead") *and* below
  ``vanishing_depth_ratio`` times the largest layer norm of the step: a model whose gradients
  are all small because its loss is small is not vanishing.
* **dead**: a layer that has had a non-zero gradient gets an exactly zero one (its units are
  saturated or dead), counted over the steps it has a gradient at all. A layer that has never had
  a non-zero gradient is not judged (a layer upstream of a zero-initialised head until the head
  moves, or one kept in the loss as ``0 * output`` on purpose), nor is a step on which every
  gradient is zero (nothing to learn from that batch), nor a layer without a gradient (frozen,
  unused, or another optimizer's).

Exactly zero and missing gradients take no part in the depth and floor conditions. Those alerts
report γ, the per-layer factor of the fitted line (< 1 here).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors.base import (
    GradientDetector,
    StepContext,
    name_list,
)
from lightning_gradflow.core.detectors.config import DetectorConfig

HINT = (
    "Use ReLU/GELU with He init instead of sigmoid/tanh, add normalisation or residual "
    "connections (each sigmoid layer passes at most 0.25 of the gradient back)."
)
DEAD_HINT = (
    "A layer with an exactly zero gradient learns nothing: its units are saturated (sigmoid/tanh "
    "tails) or dead (ReLU never active), often after one oversized update or unscaled inputs; "
    "lower the learning rate, clip the gradient norm, normalise inputs and activations, use "
    "He init with ReLU/LeakyReLU/GELU, and restart from a checkpoint before it died. Freeze a "
    "layer that is unused on purpose (requires_grad=False)."
)


class VanishingDetector(GradientDetector):
    """Gradient norms fall by orders of magnitude towards the input, below a dead floor, or a
    layer's gradient stays exactly zero.

    See the module docstring for the three conditions.
    """

    kind = "vanishing"
    hint = HINT
    hints: ClassVar[dict[str, str]] = {"dead": DEAD_HINT}
    order = 10

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._depth_streak = 0
        self._floor_streak = 0
        # sized on the first step (no record has 0 layers): these empty arrays are only ever saved
        self._flowed = np.zeros(0, dtype=bool)  # pragma: no mutate
        self._zero_streaks = np.zeros(0, dtype=np.int64)  # pragma: no mutate

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        dead = self._dead(record, ctx)
        return [dead, *self._shrinking(record, ctx)] if dead else self._shrinking(record, ctx)

    def _dead(self, record: StepRecord, ctx: StepContext) -> Alert | None:
        norms, has = record.layer_norms, record.has_grad
        if self._flowed.size != norms.size:
            self._flowed = np.zeros(norms.size, dtype=bool)
            # counts: as floats they would count, compare and save (as 1.0 for 1) the same
            self._zero_streaks = np.zeros(norms.size, dtype=np.int64)  # pragma: no mutate
        zero = has & (norms == 0)
        if (zero | ~has).all():
            return None  # every gradient zero or missing: nothing to learn from this batch
        self._zero_streaks[zero & self._flowed] += 1
        self._zero_streaks[has & ~zero] = 0
        self._flowed |= has & np.isfinite(norms) & (norms > 0)
        patience = self.config.patience
        dead = np.flatnonzero(self._zero_streaks >= patience)
        if dead.size == 0:
            return None
        names = [ctx.layer_names[i] for i in dead]
        return self.alert(
            record.step,
            ctx.epoch,
            names,
            0.0,
            self.config.vanishing_floor,
            f"dead layer: the gradient of {len(names)} layer(s) is exactly zero for "
            f"{patience}+ steps after it was not: {name_list(names)}",
            severity="critical",
            variant="dead",
            zero_steps={ctx.layer_names[i]: int(self._zero_streaks[i]) for i in dead},
        )

    def _shrinking(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        cfg = self.config
        norms = record.usable_norms
        fit = record.depth_fit
        if fit is None:
            self._depth_streak = self._floor_streak = 0
            return []
        observed, fitted = fit.first_last_ratio, fit.fitted_ratio
        depth_hit = observed < cfg.vanishing_depth_ratio and fitted < cfg.vanishing_depth_ratio
        largest = float(np.nanmax(norms))
        below = norms < largest * cfg.vanishing_depth_ratio  # NaN compares False
        low = below & (norms < cfg.vanishing_floor)
        self._depth_streak = self._depth_streak + 1 if depth_hit else 0
        self._floor_streak = self._floor_streak + 1 if low.any() else 0
        depth_on = self._depth_streak >= cfg.patience
        floor_on = self._floor_streak >= cfg.patience
        if not (depth_on or floor_on):
            return []
        names = [ctx.layer_names[i] for i in np.flatnonzero(below)] or [ctx.layer_names[fit.first]]
        first, last = ctx.layer_names[fit.first], ctx.layer_names[fit.last]
        parts = []
        if depth_on:
            parts.append(
                f"gradient norm falls from {norms[fit.last]:.2g} at {last} to "
                f"{norms[fit.first]:.2g} at {first} "
                f"(ratio {observed:.1e} < {cfg.vanishing_depth_ratio:g}; "
                f"γ = {fit.gamma:.3g} per layer over {fit.num_layers} layers)"
            )
        if floor_on:
            dead = [ctx.layer_names[i] for i in np.flatnonzero(low)]
            parts.append(f"{len(dead)} layer(s) below {cfg.vanishing_floor:g}: {name_list(dead)}")
        severity = "critical" if observed < cfg.vanishing_depth_ratio**2 else "warning"
        return [
            self.alert(
                record.step,
                ctx.epoch,
                names,
                observed if depth_on else float(np.nanmin(norms)),
                cfg.vanishing_depth_ratio if depth_on else cfg.vanishing_floor,
                "; ".join(parts) + f" for {cfg.patience}+ steps",
                severity=severity,
                variant="depth" if depth_on else "floor",
                gamma=fit.gamma,
                first_last_ratio=observed,
                fitted_ratio=fitted,
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "depth_streak": self._depth_streak,
            "floor_streak": self._floor_streak,
            "flowed": self._flowed.tolist(),
            "zero_streaks": self._zero_streaks.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._depth_streak = int(state["depth_streak"])
        self._floor_streak = int(state["floor_streak"])
        # saved before the dead-layer condition existed: no flags or counts, they start afresh
        flowed, zero_streaks = state.get("flowed", []), state.get("zero_streaks", [])
        # the dtypes are those JSON and torch.save give back already
        self._flowed = np.asarray(flowed, dtype=bool)  # pragma: no mutate
        self._zero_streaks = np.asarray(zero_streaks, dtype=np.int64)  # pragma: no mutate
