"""``exploding`` at its edges: each threshold exactly at its boundary, what a spike names, when a
depth count restarts, the update variant's fields, and growth measured on finite norms only."""

import warnings

import numpy as np
import pytest

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext

NAMES = [f"l{i}" for i in range(4)]
CTX = StepContext(layer_names=NAMES, epoch=0)
FLAT = (1.0, 1.0, 1.0, 1.0)
EXPLODING = (1e4, 1e2, 1.0, 1e-1)  # first/last 1e5 > 1e3, fitted as well


def rec(step, norms=FLAT, total=None, has=None, rms=None, ratios=None):
    norms = np.asarray(norms, dtype=float)
    has = np.ones(len(norms), bool) if has is None else np.asarray(has)
    if total is None:
        total = float(np.sqrt(np.sum(norms[has] ** 2)))
    return StepRecord(
        step,
        0,
        np.where(has, norms, np.nan),
        has,
        total,
        1.0,
        weight_rms=None if rms is None else np.asarray(rms, dtype=float),
        update_ratios=None if ratios is None else np.asarray(ratios, dtype=float),
    )


def exploding(records, config=None, variant=None):
    detectors = GradientDetectors(config or DetectorConfig())
    found = [a for r in records for a in detectors.update(r, CTX) if a.kind == "exploding"]
    return [a for a in found if variant is None or a.details["variant"] == variant]


# --- spike --------------------------------------------------------------------------------------


def test_an_infinite_norm_is_no_spike():
    """A non-finite norm is ``nonfinite``'s to report, not a spike of infinite size."""
    records = [rec(s) for s in range(30)] + [rec(30, (1.0, 1.0, 1.0, np.inf), total=np.inf)]
    assert exploding(records) == []


@pytest.mark.parametrize(("at", "fires"), [(2, False), (3, True)])
def test_the_norm_median_needs_three_norms_whatever_min_history(at, fires):
    records = [rec(s, total=50.0 if s == at else 2.0) for s in range(at + 1)]
    found = exploding(records, DetectorConfig(min_history=1), "spike")
    assert [a.step for a in found] == ([at] if fires else [])


def test_no_spike_against_a_median_of_zero():
    """Gradients exactly zero for 30 steps (nothing to learn yet): the first real one is not a
    spike of infinite size."""
    records = [rec(s, (0.0,) * 4) for s in range(30)] + [rec(30)]
    assert exploding(records) == []


def test_a_spike_names_only_layers_that_have_a_gradient():
    has = [True, True, False, False]  # l2 and l3 are frozen
    records = [rec(s, (0.5, 0.5, 0.0, 0.0), has=has) for s in range(30)]
    records.append(rec(30, (0.2, 40.0, 0.0, 0.0), has=has))
    [alert] = exploding(records)
    assert alert.layers == ("l1", "l0")
    assert alert.message.endswith("(largest in l1, l0)")


# --- depth: first/last ratio and the fitted line's both above 1e3, for 10 steps ----------------


@pytest.mark.parametrize(
    ("profile", "fires"),
    [
        ((1e3, 1e2, 1e1, 1.0), False),  # both ratios exactly 1000
        ((1e3, 1e3, 10.0, 1.0), False),  # observed exactly 1000, fitted 1995
        ((10.0, 1e-2, 1.0, 1e-3), False),  # fitted exactly 1000, observed 1e4
        ((1e4, 1.0, 1.0, 1.0, 1.0, 1.0), False),  # one large input layer: fitted 720
        ((0.99e3, 1e2, 1e1, 1.0), False),
        ((1.01e3, 1e2, 1e1, 1.0), True),
    ],
)
def test_growth_with_depth_needs_both_ratios_above_a_thousand(profile, fires):
    names = [f"l{i}" for i in range(len(profile))]
    detectors = GradientDetectors(DetectorConfig())
    found = [
        a
        for s in range(10)
        for a in detectors.update(rec(s, profile), StepContext(names))
        if a.kind == "exploding"
    ]
    assert [a.step for a in found] == ([9] if fires else [])


@pytest.mark.parametrize(
    "interruption", [rec(5), rec(5, (1.0, 0.0, 0.0, 0.0))], ids=["healthy", "no fit"]
)
def test_growth_with_depth_counts_again_after_a_step_without_it(interruption):
    """A healthy step, or one with fewer than two usable layers (no depth profile), restarts the
    count: steps 6..15 are the ten."""
    records = [rec(s, EXPLODING) for s in range(5)] + [interruption]
    records += [rec(s, EXPLODING) for s in range(6, 20)]
    assert exploding(records, variant="depth")[0].step == 15


def test_growth_with_depth_counts_from_its_first_step_after_healthy_ones():
    records = [rec(s) for s in range(5)] + [rec(s, EXPLODING) for s in range(5, 20)]
    assert exploding(records, variant="depth")[0].step == 14


def test_growth_with_depth_names_the_layers_more_than_a_thousand_times_the_smallest():
    """l1 is exactly 1000x the smallest: not named. The fit of log10 (3.3, 3, 0, 0) falls 1.19
    decades per layer: 3.57 decades over the three gaps."""
    [alert, *_] = exploding([rec(s, (2e3, 1e3, 1.0, 1.0)) for s in range(10)])
    assert alert.layers == ("l0",)
    assert alert.details == {
        "variant": "depth",
        "gamma": pytest.approx(7428.94 ** (1 / 3), rel=1e-5),
        "first_last_ratio": 2000.0,
        "fitted_ratio": pytest.approx(7428.94, rel=1e-5),
    }
    assert (alert.value, alert.threshold, alert.severity) == (2000.0, 1000.0, "warning")


# --- update -------------------------------------------------------------------------------------


def test_an_update_names_every_rewritten_layer_and_reports_the_largest():
    ratios = [1e-3, 20.0, 50.0, 1e-3]
    [alert] = exploding([rec(0, rms=[0.1] * 4, ratios=ratios)])
    assert alert.layers == ("l1", "l2") and alert.value == 50.0
    assert alert.message == (
        "update: the update of step 0 rewrote 2 layer(s) (l1, l2): ||Δθ||/||θ|| = 50 at l2 "
        "(limit 10; healthy is ~1e-3)"
    )
    assert alert.details["ratios"] == {"l1": 20.0, "l2": 50.0}


def test_an_unmeasured_update_reports_the_largest_jump():
    records = [rec(0, rms=[1.0] * 4), rec(1, rms=[1.0, 21.0, 51.0, 1.0])]
    [alert] = exploding(records)
    assert alert.layers == ("l1", "l2") and alert.value == 50.0
    assert alert.message == (
        "update: the update of step 0 rewrote 2 layer(s) (l1, l2): the weights' RMS of l2 went "
        "from 1 to 51, so ||Δθ||/||θ|| >= 50 (limit 10; healthy is ~1e-3)"
    )
    assert alert.details == {
        "variant": "update",
        "update_step": 0,
        "measured": False,
        "ratios": {"l1": 20.0, "l2": 50.0},
    }


@pytest.mark.parametrize(("before", "fires"), [(0.0, False), (0.99e-4, False), (1e-4, True)])
def test_weights_below_the_rms_floor_are_not_judged_between_logged_steps(before, fires):
    """Zero or LayerScale-like weights jumping to 0.5 on an unmeasured step: not judged, and no
    numpy warning about the division by zero."""
    records = [rec(0, rms=[before, 0.1, 0.1, 0.1]), rec(1, rms=[0.5, 0.1, 0.1, 0.1])]
    records.append(rec(2, rms=[0.5, 0.1, 0.1, 0.1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = exploding(records)
    assert [(a.step, a.layers) for a in found] == ([(1, ("l0",))] if fires else [])


def test_an_rms_jump_across_a_step_without_weights_is_not_one_update():
    """The weights were not read at step 1: steps 0 and 2 are two updates apart, and a 51x
    RMS there bounds neither (it could be healthy growth); the pair 2 -> 3 is judged again."""
    jump = [1.0, 51.0, 1.0, 1.0]
    records = [rec(0, rms=[1.0] * 4), rec(1), rec(2, rms=jump), rec(3, rms=[1.0, 2601.0, 1, 1])]
    assert [(a.step, a.details["update_step"]) for a in exploding(records)] == [(3, 2)]


def test_a_step_without_weights_is_forgotten_across_a_resume():
    first = GradientDetectors(DetectorConfig())
    for record in (rec(0, rms=[1.0] * 4), rec(1)):
        first.update(record, CTX)
    second = GradientDetectors(DetectorConfig())
    second.load_state_dict(first.state_dict())
    assert second.update(rec(2, rms=[1.0, 51.0, 1.0, 1.0]), CTX) == []


def test_zero_weights_that_stay_zero_raise_no_warning():
    records = [rec(s, rms=[0.0, 0.1, 0.1, 0.1]) for s in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert exploding(records) == []


# --- growth: 3 decades over the last 50 finite norms --------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 1e-6])
def test_steady_growth_is_seen_below_a_norm_of_one_too(scale):
    found = exploding([rec(s, total=scale * 1.2**s) for s in range(50)], variant="growth")
    assert [a.step for a in found] == [49]  # 49 x log10(1.2) = 3.9 decades
    assert found[0].value == pytest.approx(49 * np.log10(1.2))
    assert found[0].details["total_norm"] == pytest.approx(scale * 1.2**49)


def test_growth_is_fitted_over_fifty_finite_norms():
    """Five non-finite norms first: the window holds 50 finite ones from step 54 on."""
    records = [rec(s, total=np.nan if s < 5 else 1.2**s) for s in range(60)]
    assert exploding(records, variant="growth")[0].step == 54


def test_a_growth_alert_reports_the_rise_its_fit_and_the_last_norm():
    [alert] = exploding([rec(s, total=1.2**s) for s in range(50)], variant="growth")
    assert alert.message == (
        "steady growth: global gradient norm rose 3.9 decades over the last 50 steps "
        "(to 7.58e+03, R² = 1.00)"
    )
    assert alert.details == {
        "variant": "growth",
        "decades": pytest.approx(49 * np.log10(1.2)),
        "r2": pytest.approx(1.0),
        "total_norm": pytest.approx(1.2**49),
    }
    assert (alert.threshold, alert.severity, alert.layers) == (3.0, "critical", ())


SHORT = DetectorConfig(window=4, min_history=1)  # growth judged on the last four norms


@pytest.mark.parametrize(
    ("last", "fires"), [(999.0, False), (1000.0, True), (1001.0, True)], ids=str
)
def test_growth_at_three_decades(last, fires):
    """Norms 1, 10, 100, 1000 rise by exactly 3 decades along their fitted line."""
    totals = (1.0, 10.0, 100.0, last)
    found = exploding([rec(s, total=t) for s, t in enumerate(totals)], SHORT, "growth")
    assert [a.step for a in found] == ([3] if fires else [])


@pytest.mark.parametrize(
    ("decades", "fires"),
    [((0, 1, 4, 3), False), ((0, 0, 4, 4), True), ((0, 2, 2, 4), True)],
    ids=["R2 0.72", "R2 0.8", "R2 0.9"],
)
def test_growth_must_be_steady_r2_at_least_0_8(decades, fires):
    """Each rises 3.6 decades or more along its fitted line; R² is the squared correlation of
    log10 norm with the step."""
    totals = 10.0 ** np.array(decades, dtype=float)
    found = exploding([rec(s, total=t) for s, t in enumerate(totals)], SHORT, "growth")
    assert [a.step for a in found] == ([3] if fires else [])
    if fires:
        r2 = np.corrcoef(np.arange(4), decades)[0, 1] ** 2
        assert found[0].details["r2"] == pytest.approx(r2)


def test_the_spike_median_is_over_the_last_fifty_norms():
    """A norm level that moved from 100 to 1 sixty steps ago: the median of the last 50 is 1, so
    50 is a spike (a median over the whole run would be 100)."""
    totals = [100.0] * 70 + [1.0] * 60 + [50.0]
    found = exploding([rec(s, total=t) for s, t in enumerate(totals)], variant="spike")
    assert [a.step for a in found] == [130]
