"""Thresholds of the gradient detectors, with defaults taken from practice.

==========================  =========  ======================================================
setting                     default    why
==========================  =========  ======================================================
``vanishing_floor``         1e-5       the practitioners' line below which a layer is dead
``vanishing_depth_ratio``   1e-3       input/output norm ratio; a sigmoid stack loses up to
                                       4x per layer, so 1e-3 is ~5 sigmoid layers' worth
``exploding_depth_ratio``   1e3        the mirror image: input side 1000x the output side
``update_ratio_limit``      10         ||Δθ||/||θ|| of one step; healthy is ~1e-3, 1 means
                                       the step replaced the layer; 10 leaves room for the
                                       first steps of a zero-initialised layer (~1/t under
                                       Adam, ~1.4 under SGD momentum 0.9) and Adam's sign-like
                                       first step (~lr·sqrt(3·fan_in): 0.55 at lr 1e-2 and
                                       fan-in 1024)
``weight_rms_floor``        1e-4       layers whose weights' RMS is below this are near-zero
                                       by design (LayerScale 1e-5/1e-6, ReZero): their first
                                       updates rewrite them; every standard init is >= ~1e-3
``spike_factor``            10         an order of magnitude above the recent median norm
``growth_decades``          3          1000x growth of the global norm within ``window``
``clipping_share``          0.9        clipping on 90 % of steps hides a root cause
``loss_spike_factor``       10         loss an order of magnitude above its recent median
``loss_spike_steps``        3          ... for this many consecutive steps (one bad batch
                                       is not a spike)
``patience``                10         steps a depth, floor or dead-layer condition must
                                       persist
``window``                  50         steps of history for medians and growth fits
``min_history``             20         steps seen before spike/growth/loss detectors judge
``clipping_window``         100        steps over which the clipping share is measured
``amp_nonfinite_patience``  10         consecutive NaN/Inf steps tolerated while a float16
                                       GradScaler is calibrating (it skips those steps)
``cooldown_steps``          100        a kind/layer alert is re-announced at most this often
``stalled_ratio``           1e-7       a layer's ||Δθ||/||θ|| below this times that of a
                                       layer that moves, with a gradient no more than 10x
                                       larger, is stalled: one learning rate never puts
                                       them that far apart (layer-wise LR decay: >= 1e-3)
``stalled_patience``        5          logged steps (where the ratio is measured) a layer
                                       must stay stalled
==========================  =========  ======================================================

Example:
    >>> DetectorConfig(vanishing_floor=1e-6).vanishing_floor
    1e-06
    >>> DetectorConfig(clipping_share=1.5)
    Traceback (most recent call last):
    ...
    ValueError: clipping_share=1.5 is not allowed: expected a number in (0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lightning_gradflow.core.validation import check_number, fail


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds and windows of the gradient detectors (see the module table)."""

    vanishing_floor: float = 1e-5
    vanishing_depth_ratio: float = 1e-3
    exploding_depth_ratio: float = 1e3
    update_ratio_limit: float = 10.0
    weight_rms_floor: float = 1e-4
    spike_factor: float = 10.0
    growth_decades: float = 3.0
    clipping_share: float = 0.9
    loss_spike_factor: float = 10.0
    loss_spike_steps: int = 3
    patience: int = 10
    window: int = 50
    min_history: int = 20
    clipping_window: int = 100
    amp_nonfinite_patience: int = 10
    cooldown_steps: int = 100
    stalled_ratio: float = 1e-7
    stalled_patience: int = 5

    def __post_init__(self) -> None:
        positive = ("vanishing_floor", "update_ratio_limit", "weight_rms_floor")
        below_one = ("vanishing_depth_ratio", "stalled_ratio")
        above_one = ("exploding_depth_ratio", "spike_factor", "loss_spike_factor")
        counts = (
            "loss_spike_steps",
            "patience",
            "window",
            "min_history",
            "clipping_window",
            "amp_nonfinite_patience",
            "stalled_patience",
        )
        for f in fields(self):
            value = getattr(self, f.name)
            check_number(f.name, value)
            if f.name in positive and not value > 0:
                fail(f.name, value, "a number > 0")
            if f.name in below_one and not 0 < value < 1:
                fail(f.name, value, "a number in (0, 1)")
            if f.name in above_one and not value > 1:
                fail(f.name, value, "a number > 1")
            if f.name == "clipping_share" and not 0 < value <= 1:
                fail(f.name, value, "a number in (0, 1]")
            if f.name == "growth_decades" and not value > 0:
                fail(f.name, value, "a number of decades > 0")
            if f.name in counts and (not isinstance(value, int) or value < 1):
                fail(f.name, value, "a positive integer")
            if f.name == "cooldown_steps" and (not isinstance(value, int) or value < 0):
                fail(f.name, value, "an integer >= 0")
        if self.window < 3:
            fail("window", self.window, "an integer >= 3 (a median needs history)")
