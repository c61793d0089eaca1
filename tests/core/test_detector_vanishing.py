"""``vanishing`` at its edges: each threshold exactly at its boundary, when a count restarts, and
the fields of each variant's alert."""

import json

import numpy as np
import pytest

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext

NAMES = [f"l{i}" for i in range(4)]
FLAT = (1.0, 1.0, 1.0, 1.0)
VANISHING = (1e-5, 1e-4, 1e-2, 1.0)  # first/last 1e-5 < 1e-3, fitted as well; 1e-5 not < floor
FLOOR = (1.0, 1.0, 1e-6, 1.0)  # one layer below 1e-5 and below 1e-3 x the largest


def rec(step, norms=FLAT):
    norms = np.asarray(norms, dtype=float)
    total = float(np.sqrt(np.sum(norms**2)))
    return StepRecord(step, 0, norms, np.ones(len(norms), bool), total, 1.0)


def vanishing(records, epoch=0, variant=None):
    detectors = GradientDetectors(DetectorConfig())
    ctx = StepContext([f"l{i}" for i in range(len(records[0].layer_norms))], epoch=epoch)
    found = [a for r in records for a in detectors.update(r, ctx) if a.kind == "vanishing"]
    return [a for a in found if variant is None or a.details["variant"] == variant]


@pytest.mark.parametrize(
    ("profile", "fires"),
    [
        ((1e-3, 1e-2, 1e-1, 1.0), False),  # both ratios exactly 1e-3
        ((1e-3, 1e-3, 1e-1, 1.0), False),  # observed exactly 1e-3, fitted 5e-4
        ((0.1, 100.0, 1.0, 1e3), False),  # fitted exactly 1e-3, observed 1e-4
        ((1e-4, 1.0, 1.0, 1.0, 1.0, 1.0), False),  # one small input layer: fitted 1.4e-3
        ((1.01e-3, 1e-2, 1e-1, 1.0), False),
        ((0.99e-3, 1e-2, 1e-1, 1.0), True),
    ],
)
def test_vanishing_with_depth_needs_both_ratios_below_a_thousandth(profile, fires):
    found = vanishing([rec(s, profile) for s in range(10)], variant="depth")
    assert [a.step for a in found] == ([9] if fires else [])


@pytest.mark.parametrize(("profile", "variant"), [(VANISHING, "depth"), (FLOOR, "floor")])
@pytest.mark.parametrize("interruption", [FLAT, (1.0, 0.0, 0.0, 0.0)], ids=["healthy", "no fit"])
def test_a_step_without_the_condition_restarts_its_count(profile, variant, interruption):
    """A healthy step, or one with fewer than two usable layers (no depth profile): steps 6..15
    are the ten."""
    records = [rec(s, profile) for s in range(5)] + [rec(5, interruption)]
    records += [rec(s, profile) for s in range(6, 20)]
    assert vanishing(records, variant=variant)[0].step == 15


@pytest.mark.parametrize(
    ("norms", "fires"),
    [
        ((1.0, 1.0, 1e-5, 1.0), False),  # exactly the floor
        ((1e-3, 1e-3, 1e-6, 1e-3), False),  # below the floor, exactly 1e-3 x the largest
        ((1e-3, 1e-3, 0.99e-6, 1e-3), True),
    ],
)
def test_the_floor_is_strictly_below_1e_5_and_a_thousandth_of_the_largest(norms, fires):
    found = vanishing([rec(s, norms) for s in range(10)], variant="floor")
    assert [a.step for a in found] == ([9] if fires else [])


def test_a_depth_alert_reports_its_fit_and_the_layers_below_a_thousandth_of_the_largest():
    [alert, *_] = vanishing([rec(s, VANISHING) for s in range(10)], epoch=3)
    assert alert.layers == ("l0", "l1")  # below 1e-3 x the largest, 1.0
    assert alert.message == (
        "gradient norm falls from 1 at l3 to 1e-05 at l0 (ratio 1.0e-05 < 0.001; γ = 0.02 "
        "per layer over 4 layers) for 10+ steps"
    )
    assert (alert.value, alert.threshold, alert.severity, alert.epoch) == (
        1e-5,
        1e-3,
        "warning",
        3,
    )
    assert alert.details == {
        "variant": "depth",
        "gamma": pytest.approx(10**-1.7),  # log10 norms -5, -4, -2, 0: slope 1.7 per layer
        "first_last_ratio": 1e-5,
        "fitted_ratio": pytest.approx(10**-5.1),
    }


def test_a_floor_alert_reports_the_smallest_norm_against_the_floor():
    [alert, *_] = vanishing([rec(s, FLOOR) for s in range(10)], epoch=3)
    assert alert.layers == ("l2",)
    assert alert.message == "1 layer(s) below 1e-05: l2 for 10+ steps"
    assert (alert.value, alert.threshold, alert.epoch) == (1e-6, 1e-5, 3)
    assert alert.details["variant"] == "floor"


def test_a_dead_layer_and_vanishing_with_depth_on_one_step_are_both_reported():
    """l1 dies at step 0's end while the others fall 1e5 towards the input: one alert each."""
    records = [rec(0, (1e-5, 1e-3, 1e-2, 1.0))]
    records += [rec(s, (1e-5, 0.0, 1e-2, 1.0)) for s in range(1, 11)]
    alerts = vanishing(records, epoch=5)
    assert [(a.step, a.details["variant"]) for a in alerts[-2:]] == [(10, "dead"), (10, "depth")]
    dead = alerts[-2]
    assert (dead.value, dead.threshold, dead.epoch, dead.layers) == (0.0, 1e-5, 5, ("l1",))


def test_depth_and_floor_on_one_step_are_one_alert_telling_both():
    # log10 norms -6.3, -4, -2, 0: the fitted line rises 2.09 decades per layer
    [alert, *_] = vanishing([rec(s, (0.5e-6, 1e-4, 1e-2, 1.0)) for s in range(10)])
    assert alert.message == (
        "gradient norm falls from 1 at l3 to 5e-07 at l0 (ratio 5.0e-07 < 0.001; γ = 0.00812 per "
        "layer over 4 layers); 1 layer(s) below 1e-05: l0 for 10+ steps"
    )
    assert (alert.details["variant"], alert.value, alert.threshold) == ("depth", 0.5e-6, 1e-3)
    assert alert.severity == "critical"  # below 1e-3 squared


def test_a_checkpoint_saved_before_the_first_step_resumes():
    """Saved before any record came (a checkpoint at step 0): the restored detectors count like
    fresh ones."""
    records = [rec(s, (1.0, 0.0 if s >= 2 else 1.0, 1.0, 1.0)) for s in range(14)]
    restored = GradientDetectors(DetectorConfig())
    restored.load_state_dict(json.loads(json.dumps(GradientDetectors().state_dict())))
    ctx = StepContext(NAMES)
    found = [a.step for r in records for a in restored.update(r, ctx) if a.kind == "vanishing"]
    assert found[0] == 11  # zero on steps 2..11


def test_a_depth_alert_reports_the_ratio_whatever_the_scale_of_the_norms():
    """Norms 1e-3 .. 1e2: the value is the input/output ratio 1e-5, not the smallest norm."""
    [alert, *_] = vanishing([rec(s, (1e-3, 1e-2, 1.0, 1e2)) for s in range(10)])
    assert (alert.details["variant"], alert.value, alert.threshold) == ("depth", 1e-5, 1e-3)
