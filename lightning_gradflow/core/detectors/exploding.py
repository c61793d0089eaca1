"""``exploding``: four different stories, told apart because their fixes differ.

* **spike**: the global norm jumps above ``spike_factor`` times its median over the last
  ``window`` steps (after ``min_history`` steps): a learning-rate, data or clipping question.
* **depth**: the input-side layer's norm is above ``exploding_depth_ratio`` times the
  output-side layer's, in the observed and in the fitted line (γ > 1), for ``patience`` steps:
  an architecture or initialisation question (e.g. a recurrent matrix with spectral radius > 1).
* **growth**: log10 of the global norm rises by ``growth_decades`` or more, steadily (R² >= 0.8),
  over the last ``window`` steps: the run is diverging exponentially.
* **update**: one optimizer step changed a layer by ``update_ratio_limit`` (10) times its weights
  or more (``||Δθ|| / ||θ||``; healthy is ~1e-3): the step rewrote the layer, which often leaves
  it saturated or dead for good. It needs no history, so it also sees step 0. The ratio is
  measured on logged steps (step 0 is one). Where the weights' RMS is known on two consecutive
  steps (the engine reads the weights on check steps and the step after each, not on every step:
  that would read every parameter once more each step), its change bounds the ratio from below,
  ``||Δθ|| / ||θ|| >= |rms_after / rms - 1|``, so such a jump is reported one step late, on the
  step that shows it. Between those steps a one-off rewrite is seen by what it leaves behind (a
  loss spike, dead or exploding layers) rather than by this check. Layers whose weights are zero
  or below ``weight_rms_floor`` (near-zero by design, e.g. LayerScale, ReZero, a zero-initialised
  head) are not judged: their first updates rewrite them by design.
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
    name_list,
)
from lightning_gradflow.core.detectors.config import DetectorConfig
from lightning_gradflow.core.flow import fit_line

HINTS = {
    "spike": (
        "A sudden spike is a learning-rate, data or clipping question: lower the LR or add "
        "warm-up, look for a bad batch, or clip the gradient norm (1.0 is standard)."
    ),
    "depth": (
        "Growth with depth is an architecture/initialisation question: rescale the init "
        "(recurrent matrix spectral radius <= 1), use gated cells (LSTM/GRU), normalisation or "
        "residual connections; clipping only caps the damage."
    ),
    "growth": (
        "The norm grows exponentially over steps: the run is diverging; lower the learning "
        "rate and clip the gradient norm before the loss turns NaN."
    ),
    "update": (
        "One update rewrote the layer: a learning-rate far too high for it (add warm-up) or a "
        "huge gradient from a bad batch; clip the gradient norm (1.0 is standard), check that "
        "step's data, and restart from a checkpoint before it if the layer is now saturated."
    ),
}
_MIN_R2 = 0.8


class ExplodingDetector(GradientDetector):
    """A spike of the global norm, growth with depth, steady exponential growth over steps, or
    one update that rewrites a layer.

    See the module docstring for the four variants; each has its own hint.
    """

    kind = "exploding"
    hint = HINTS["spike"]
    hints = HINTS
    order = 20

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._totals = History(config.window)
        self._seen = 0
        self._depth_streak = 0
        self._last_rms: dict[
            int, tuple[int, np.ndarray, bool]
        ] = {}  # optimizer: step, rms, measured

    def update(self, record: StepRecord, ctx: StepContext) -> list[Alert]:
        found = (self._spike(record, ctx), self._depth(record, ctx), self._update(record, ctx))
        alerts = [a for a in found if a]
        self._totals.append(record.total_norm)
        self._seen += 1
        growth = self._growth(record, ctx)
        return [*alerts, growth] if growth else alerts

    def _alert(self, record, ctx, variant, severity, layers, value, threshold, message, extra):
        return self.alert(
            record.step, ctx.epoch, layers, value, threshold, message, severity,
            variant=variant, **extra,
        )  # fmt: skip

    def _spike(self, record: StepRecord, ctx: StepContext) -> Alert | None:
        cfg = self.config
        total = record.total_norm
        if self._seen < cfg.min_history or len(self._totals) < 3 or not np.isfinite(total):
            return None
        median = self._totals.median()
        if not (median > 0 and total > cfg.spike_factor * median):
            return None
        ratio = total / median
        norms = record.usable_norms
        # NaN (no usable gradient) sorts last; a model with fewer than three such layers names fewer
        top = [ctx.layer_names[i] for i in np.argsort(-norms)[:3] if np.isfinite(norms[i])]
        return self._alert(
            record, ctx, "spike", "critical" if ratio > cfg.spike_factor**2 else "warning",
            top, ratio, cfg.spike_factor,
            f"spike: global gradient norm {total:.3g} is {ratio:.0f}x its median {median:.3g} "
            f"over the last {len(self._totals)} steps (largest in {', '.join(top)})",
            {"total_norm": total, "median": median},
        )  # fmt: skip

    def _depth(self, record: StepRecord, ctx: StepContext) -> Alert | None:
        cfg = self.config
        norms = record.usable_norms
        fit = record.depth_fit
        if fit is None:
            self._depth_streak = 0
            return None
        fitted = fit.fitted_ratio
        hit = (
            fit.first_last_ratio > cfg.exploding_depth_ratio and fitted > cfg.exploding_depth_ratio
        )
        self._depth_streak = self._depth_streak + 1 if hit else 0
        if self._depth_streak < cfg.patience:
            return None
        big = norms > float(np.nanmin(norms)) * cfg.exploding_depth_ratio  # NaN compares False
        layers = [ctx.layer_names[i] for i in np.flatnonzero(big)] or [ctx.layer_names[fit.first]]
        first, last = ctx.layer_names[fit.first], ctx.layer_names[fit.last]
        ratio = fit.first_last_ratio
        return self._alert(
            record, ctx, "depth",
            "critical" if ratio > cfg.exploding_depth_ratio**2 else "warning",
            layers, ratio, cfg.exploding_depth_ratio,
            f"growth with depth: gradient norm grows from {norms[fit.last]:.2g} at {last} to "
            f"{norms[fit.first]:.2g} at {first} "
            f"(ratio {ratio:.1e} > {cfg.exploding_depth_ratio:g}; "
            f"γ = {fit.gamma:.3g} per layer) for {cfg.patience}+ steps",
            {"gamma": fit.gamma, "first_last_ratio": ratio, "fitted_ratio": fitted},
        )  # fmt: skip

    def _update(self, record: StepRecord, ctx: StepContext) -> Alert | None:
        cfg = self.config
        rms = record.weight_rms
        if rms is None:  # the weights were not read: the next RMS has nothing to pair with
            self._last_rms.pop(record.optimizer_index, None)
            return None
        last = self._last_rms.get(record.optimizer_index)
        measured = record.update_ratios is not None
        self._last_rms[record.optimizer_index] = (record.step, rms, measured)
        if measured:
            ratios, before, update_step = record.update_ratios, rms, record.step
        elif last is not None and not last[2]:  # else that update was measured and judged
            update_step, before, _ = last
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.abs(rms / before - 1.0)
        else:
            return None
        judged = np.isfinite(ratios) & np.isfinite(before) & (before >= cfg.weight_rms_floor)
        hit = np.flatnonzero(judged & (ratios >= cfg.update_ratio_limit))
        if hit.size == 0:
            return None
        layers = [ctx.layer_names[i] for i in hit]
        top = int(hit[np.argmax(ratios[hit])])
        ratio = float(ratios[top])
        if measured:
            seen = f"||Δθ||/||θ|| = {ratio:.3g} at {ctx.layer_names[top]}"
        else:
            seen = (
                f"the weights' RMS of {ctx.layer_names[top]} went from {before[top]:.3g} to "
                f"{rms[top]:.3g}, so ||Δθ||/||θ|| >= {ratio:.3g}"
            )
        return self._alert(
            record, ctx, "update",
            "critical" if ratio >= cfg.update_ratio_limit**2 else "warning",
            layers, ratio, cfg.update_ratio_limit,
            f"update: the update of step {update_step} rewrote {len(layers)} layer(s) "
            f"({name_list(layers)}): {seen} (limit {cfg.update_ratio_limit:g}; healthy is ~1e-3)",
            {
                "update_step": update_step,
                "measured": measured,
                "ratios": {ctx.layer_names[i]: float(ratios[i]) for i in hit},
            },
        )  # fmt: skip

    def _growth(self, record: StepRecord, ctx: StepContext) -> Alert | None:
        cfg = self.config
        values = self._totals.values()
        if self._seen < max(cfg.min_history, cfg.window) or len(values) < cfg.window:
            return None
        logs = np.log10(np.maximum(values, 1e-45))
        steps = np.arange(len(logs), dtype=np.float64)
        slope, intercept = fit_line(steps, logs)
        rise = float(slope) * (len(logs) - 1)
        if rise < cfg.growth_decades:
            return None
        # a rise > 0 has a spread > 0
        residual = logs - (slope * steps + intercept)
        r2 = 1.0 - float(np.sum(residual**2)) / float(np.sum((logs - logs.mean()) ** 2))
        if r2 < _MIN_R2:
            return None
        return self._alert(
            record, ctx, "growth", "critical", [], rise, cfg.growth_decades,
            f"steady growth: global gradient norm rose {rise:.1f} decades over the last "
            f"{len(logs)} steps (to {values[-1]:.3g}, R² = {r2:.2f})",
            {"decades": rise, "r2": r2, "total_norm": values[-1]},
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {
            "totals": self._totals.values(),
            "seen": self._seen,
            "depth_streak": self._depth_streak,
            "last_rms": [
                [index, step, rms.tolist(), measured]
                for index, (step, rms, measured) in self._last_rms.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._totals.load(state["totals"])
        self._seen = int(state["seen"])
        self._depth_streak = int(state["depth_streak"])
        self._last_rms = {}
        # none if saved before the update variant existed
        for index, step, rms, measured in state.get("last_rms", []):
            rms = np.asarray(rms, dtype=np.float64)  # pragma: no mutate (saved from floats)
            self._last_rms[int(index)] = (int(step), rms, bool(measured))
