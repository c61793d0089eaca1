"""``stalled_layer``: a layer gets a real gradient, but the optimizer does not move its weights.

The symptom the textbooks give for a layer that does not learn is weights that do not change
from their initial values; usually the gradient never arrives (``vanishing``). Here it does, and
the update is lost on the way: the layer sits in a parameter group whose learning rate is zero
or far too small (a scheduler or a config that touched the wrong group, a backbone "frozen"
with ``lr=0``), or its updates fall below the resolution of its weights (a change smaller than
~0.2-0.4 % of a bfloat16 weight, or ~3-6e-8 of a float32 one, is rounded away).

Judged on the logged steps, where ``||Δθ|| / ||θ||`` is measured, among the layers one optimizer
updated at that step. A layer is stalled when another layer of that step

* moves visibly, ``||Δθ|| / ||θ|| >= 1e-5`` (healthy is ~1e-3), and
* has a gradient no more than 10 times larger relative to its weights, ``||g|| / ||θ||``,

yet the layer's own ratio is below ``stalled_ratio`` (1e-7) times that layer's. One learning rate
never puts them that far apart: SGD's ratio is ``lr · ||g|| / ||θ||``, so here at most 10 times
apart; Adam's is about ``lr / rms(θ)`` whatever the gradient, so apart by the weights' scales,
and the layers judged have an RMS of 1e-4 (the weight floor) to ~1. Intended spreads of
learning rates stay above it too: layer-wise decay, the largest in use (0.75-0.8 per block over
24 blocks), spans 1e-3 to 5e-3; only that combined with weight scales 1e-4 apart comes near.
The condition must hold on ``stalled_patience`` (5) consecutive logged steps of the layer.

Not judged: layers without a gradient (frozen with ``requires_grad=False``, unused, another
optimizer's), with an exactly zero or non-finite one, and layers whose weights' RMS is below
``weight_rms_floor`` (zero or near-zero by design). Steps where no layer moves visibly (learning
rate warm-up from 0, the end of a cosine schedule, a step the AMP scaler skipped) judge nothing,
and a layer's count of stalled steps goes on after them. A layer whose gradient is more than 10
times smaller, relative to its weights, than that of every layer that moves is not stalled: a
tiny gradient explains a tiny update (and float32 rounds the smallest updates away); that is
``vanishing``'s to judge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors.base import GradientDetector, StepContext, name_list
from lightning_gradflow.core.detectors.config import DetectorConfig

_MOVING = 1e-5
_GRADIENT_SPAN = 10.0

HINT = (
    "The layer gets a gradient but its weights do not change: check the learning rate of its "
    "parameter group (0 or far too small? a scheduler or config touching the wrong group?); "
    "with bfloat16/float16 weights, keep float32 master weights (mixed precision) so that "
    "small updates are not rounded away. Freeze a layer on purpose with requires_grad_(False)."
)


class StalledLayerDetector(GradientDetector):
    """A layer gets a real gradient, but its weights do not move while other layers' do.

    See the module docstring for the condition.
    """

    kind = "stalled_layer"
    hint = HINT
    order = 60

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._streaks = np.zeros(0, dtype=np.int64)

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        cfg = self.config
        ratios, weights = record.update_ratios, record.weight_norms
        if ratios is None or weights is None:
            return []  # not measured on this step
        if self._streaks.size != ratios.size:
            self._streaks = np.zeros(ratios.size, dtype=np.int64)  # pragma: no mutate (counts)
        norms, has = record.layer_norms, record.has_grad
        rms = record.weight_rms if record.weight_rms is not None else np.full(ratios.size, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative_grad = norms / weights
            judged = (
                has
                & np.isfinite(norms)
                & (norms > 0)
                & np.isfinite(ratios)
                & np.isfinite(relative_grad)
                & (rms >= cfg.weight_rms_floor)
            )
        movers = judged & (ratios >= _MOVING)
        if not movers.any():
            return []  # nothing moves: a learning rate near 0 for all, a skipped step
        # comparable[i, j]: layer j moves, with a gradient at most 10x layer i's (relative)
        comparable = movers[None, :] & (
            relative_grad[None, :] <= _GRADIENT_SPAN * relative_grad[:, None]
        )
        reference = np.where(comparable, ratios[None, :], 0.0).max(axis=1)  # 0: no reference
        stalled = judged & (ratios < cfg.stalled_ratio * reference)
        self._streaks[has] = np.where(stalled[has], self._streaks[has] + 1, 0)
        hit = np.flatnonzero(self._streaks >= cfg.stalled_patience)
        if hit.size == 0:
            return []
        layers = [ctx.layer_names[i] for i in hit]
        worst = int(hit[np.argmin(ratios[hit] / reference[hit])])
        mover = int(np.flatnonzero(comparable[worst] & (ratios == reference[worst]))[0])
        return [
            self.alert(
                record.step,
                ctx.epoch,
                layers,
                ratios[worst] / reference[worst],
                cfg.stalled_ratio,
                f"stalled: {len(layers)} layer(s) get a gradient but their weights do not move: "
                f"{name_list(layers)} (||Δθ||/||θ|| = {ratios[worst]:.3g} at "
                f"{ctx.layer_names[worst]}, while {ctx.layer_names[mover]} moves by "
                f"{reference[worst]:.3g} with a gradient at most {_GRADIENT_SPAN:g}x larger "
                f"relative to its weights) for {cfg.stalled_patience}+ logged steps",
                update_ratios={ctx.layer_names[i]: float(ratios[i]) for i in hit},
                reference_layer=ctx.layer_names[mover],
                reference_ratio=float(reference[worst]),
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"streaks": self._streaks.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._streaks = np.asarray(state["streaks"], dtype=np.int64)  # pragma: no mutate (ints)
