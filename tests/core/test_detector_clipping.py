"""``always_clipping``: what its alert says, and steps with a non-finite norm (skipped by the
optimizer's clipping, never clipped) left out of its window."""

import numpy as np

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext

NAMES = [f"l{i}" for i in range(4)]


def rec(step, total):
    return StepRecord(step, 0, np.ones(4), np.ones(4, bool), total, 1.0)


def clipping(totals, clip_norm=1.0, epoch=0):
    detectors = GradientDetectors(DetectorConfig())
    ctx = StepContext(NAMES, epoch=epoch, clip_norm=clip_norm)
    found = [a for s, t in enumerate(totals) for a in detectors.update(rec(s, t), ctx)]
    return [a for a in found if a.kind == "always_clipping"]


def test_the_alert_reports_the_share_the_clip_value_and_the_median_norm():
    totals = [0.5] * 5 + [3.0] * 50 + [2.0] * 45  # median of the window: (2 + 3) / 2
    [alert] = clipping(totals, clip_norm=1.5, epoch=2)
    assert alert.message == (
        "gradient norm exceeded the clip value 1.5 on 95% of the last 100 steps "
        "(median pre-clip norm 2.5)"
    )
    assert (alert.step, alert.epoch, alert.layers) == (99, 2, ())
    assert (alert.value, alert.threshold, alert.severity) == (0.95, 0.9, "warning")
    assert alert.details == {"variant": "always_clipping", "clip_norm": 1.5}


def test_non_finite_norms_take_no_place_in_the_window():
    """Step 50's norm is NaN: the window holds 100 finite norms from step 100 on."""
    totals = [np.nan if s == 50 else 2.0 for s in range(101)]
    assert [a.step for a in clipping(totals)] == [100]
    infinite = [np.inf if s == 50 else 2.0 for s in range(101)]
    assert [a.step for a in clipping(infinite)] == [100]


def test_the_median_norm_is_that_of_the_last_hundred_steps():
    """Norms 10 for 100 steps, then 2: at step 199 the window holds only 2s (over the whole run
    the median would be 6)."""
    alerts = clipping([10.0] * 100 + [2.0] * 100)
    assert alerts[-1].step == 199 and alerts[-1].message.endswith("(median pre-clip norm 2)")
