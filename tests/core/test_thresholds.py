"""Every documented gradient-detector threshold at, just below and just above its boundary;
patience checked by the step of the first alert; every detector's state round-tripped mid-streak.

The numbers are the README's (Alerts table) and ``DetectorConfig``'s defaults: the tests use
the default config so that a changed default fails here too.
"""

import json

import numpy as np
import pytest

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext

NAMES = [f"l{i}" for i in range(4)]
CTX = StepContext(layer_names=NAMES, epoch=0)


def rec(step, norms=(1.0, 1.0, 1.0, 1.0), loss=1.0, total=None, rms=None):
    norms = np.asarray(norms, dtype=float)
    has = np.ones(len(norms), bool)
    if total is None:
        total = float(np.sqrt(np.sum(norms**2))) if np.isfinite(norms).all() else float("nan")
    return StepRecord(
        step,
        0,
        norms,
        has,
        total,
        loss,
        weight_rms=None if rms is None else np.asarray(rms, dtype=float),
    )


def alerts_of(records, ctx=CTX, detectors=None):
    detectors = detectors or GradientDetectors(DetectorConfig())
    return [a for r in records for a in detectors.update(r, ctx)]


def steps(alerts, kind, variant=None):
    return [
        a.step
        for a in alerts
        if a.kind == kind and (variant is None or a.details.get("variant") == variant)
    ]


# --- always_clipping: norm > clip on >= 90 % of the last 100 steps ---------------------------


@pytest.mark.parametrize(("clipped", "fires"), [(89, False), (90, True), (91, True)])
def test_always_clipping_at_ninety_percent_of_a_hundred_steps(clipped, fires):
    ctx = StepContext(NAMES, clip_norm=1.0)
    records = [rec(s, total=0.5 if s < 100 - clipped else 2.0) for s in range(100)]
    alerts = alerts_of(records, ctx)
    assert steps(alerts, "always_clipping") == ([99] if fires else [])
    if fires:
        assert alerts[0].value == pytest.approx(clipped / 100) and alerts[0].threshold == 0.9


def test_always_clipping_waits_for_a_full_window():
    ctx = StepContext(NAMES, clip_norm=1.0)
    alerts = alerts_of([rec(s, total=2.0) for s in range(101)], ctx)
    assert steps(alerts, "always_clipping") == [99, 100]  # 100 steps seen, then every step


def test_a_norm_equal_to_the_clip_value_is_not_clipped():
    """``clip_grad_norm_`` rescales only a norm above ``max_norm``."""
    ctx = StepContext(NAMES, clip_norm=1.0)
    assert alerts_of([rec(s, total=1.0) for s in range(150)], ctx) == []


def test_value_clipping_is_not_judged():
    """No ``clip_norm`` in the context (clip-by-value or no clipping): never always_clipping."""
    assert alerts_of([rec(s, total=2.0) for s in range(150)], StepContext(NAMES)) == []


# --- loss_spike: loss > 10 x the recent median for 3 consecutive steps -----------------------


@pytest.mark.parametrize(("loss", "fires"), [(9.99, False), (10.0, False), (10.01, True)])
def test_loss_spike_at_ten_times_the_median(loss, fires):
    records = [rec(s, loss=loss if s >= 30 else 1.0) for s in range(40)]
    assert steps(alerts_of(records), "loss_spike") == (list(range(32, 40)) if fires else [])


@pytest.mark.parametrize(("spiking", "first"), [(2, None), (3, 32), (4, 32)])
def test_loss_spike_patience_is_three_consecutive_steps(spiking, first):
    records = [rec(s, loss=50.0 if 30 <= s < 30 + spiking else 1.0) for s in range(40)]
    found = steps(alerts_of(records), "loss_spike")
    assert (found[0] if found else None) == first


def test_loss_spike_streak_is_broken_by_one_normal_step():
    losses = {30: 50.0, 31: 50.0, 32: 1.0, 33: 50.0, 34: 50.0, 35: 50.0}
    records = [rec(s, loss=losses.get(s, 1.0)) for s in range(40)]
    assert steps(alerts_of(records), "loss_spike") == [35]


def test_loss_spike_needs_twenty_steps_of_history():
    records = [rec(s, loss=50.0 if s >= 17 else 1.0) for s in range(25)]
    # judged from step 20 on: steps 20, 21, 22 are the three consecutive spiking steps
    # (the median of 17 ones and the 50s seen so far is still 1)
    assert steps(alerts_of(records), "loss_spike")[:1] == [22]


# --- nonfinite: at once, or after 10 consecutive bad steps under a float16 GradScaler ---------


@pytest.mark.parametrize(("bad", "first"), [(9, None), (10, 9), (12, 9)])
def test_nonfinite_amp_patience_is_ten_steps(bad, first):
    ctx = StepContext(NAMES, amp_scaler=True)
    records = [rec(s, norms=[np.inf] * 4 if s < bad else [1.0] * 4) for s in range(20)]
    found = steps(alerts_of(records, ctx), "nonfinite")
    assert (found[0] if found else None) == first


def test_nonfinite_without_amp_is_reported_at_once():
    records = [rec(s, norms=[1.0, np.nan, 1.0, 1.0] if s == 3 else [1.0] * 4) for s in range(6)]
    assert steps(alerts_of(records), "nonfinite") == [3]


# --- vanishing: depth / floor / dead, each for 10 steps ---------------------------------------

VANISHING = (1e-5, 1e-4, 1e-2, 1.0)  # first/last 1e-5 < 1e-3, fitted as well; 1e-5 not < floor
FLOOR = (1.0, 1.0, 1e-6, 1.0)  # one layer below 1e-5 and below 1e-3 x the largest


@pytest.mark.parametrize(("profile", "variant"), [(VANISHING, "depth"), (FLOOR, "floor")])
@pytest.mark.parametrize(("persisting", "first"), [(9, None), (10, 9), (11, 9)])
def test_vanishing_patience_is_ten_steps(profile, variant, persisting, first):
    records = [rec(s, norms=profile if s < persisting else [1.0] * 4) for s in range(20)]
    found = steps(alerts_of(records), "vanishing", variant)
    assert (found[0] if found else None) == first


@pytest.mark.parametrize(("low", "fires"), [(1.01e-5, False), (0.99e-5, True)])
def test_vanishing_floor_at_1e_5(low, fires):
    records = [rec(s, norms=(1.0, 1.0, low, 1.0)) for s in range(10)]
    assert steps(alerts_of(records), "vanishing", "floor") == ([9] if fires else [])


@pytest.mark.parametrize(("zero_steps", "first"), [(9, None), (10, 14), (11, 14)])
def test_dead_patience_is_ten_zero_steps(zero_steps, first):
    records = [
        rec(s, norms=(1.0, 0.0 if 5 <= s < 5 + zero_steps else 1.0, 1.0, 1.0)) for s in range(30)
    ]
    found = steps(alerts_of(records), "vanishing", "dead")
    assert (found[0] if found else None) == first


# --- exploding: spike 10 x median; depth 1e3 for 10 steps ------------------------------------


@pytest.mark.parametrize(("factor", "fires"), [(9.99, False), (10.0, False), (10.01, True)])
def test_exploding_spike_at_ten_times_the_median(factor, fires):
    records = [rec(s, total=factor if s == 30 else 1.0) for s in range(31)]
    assert steps(alerts_of(records), "exploding", "spike") == ([30] if fires else [])


def test_no_spike_before_twenty_steps_of_history():
    records = [rec(s, total=100.0 if s in (19, 20) else 1.0) for s in range(21)]
    assert steps(alerts_of(records), "exploding", "spike") == [20]


EXPLODING = (1e4, 1e2, 1.0, 1e-1)  # first/last 1e5 > 1e3, fitted as well


@pytest.mark.parametrize(("persisting", "first"), [(9, None), (10, 9), (11, 9)])
def test_exploding_depth_patience_is_ten_steps(persisting, first):
    records = [rec(s, norms=EXPLODING if s < persisting else [1.0] * 4) for s in range(20)]
    found = steps(alerts_of(records), "exploding", "depth")
    assert (found[0] if found else None) == first


# --- cooldown: one condition announced at most once per 100 steps ----------------------------


def _nan(step):
    return Alert("nonfinite", "critical", step, 0, ("l0",), 1.0, 0.0, "NaN", "fix")


def test_cooldown_is_a_hundred_steps_by_default():
    assert DetectorConfig().cooldown_steps == 100
    manager = AlertManager(cooldown_steps=DetectorConfig().cooldown_steps)
    announced = [a.step for s in (0, 1, 99, 100, 150, 199, 200) for a in manager.submit([_nan(s)])]
    assert announced == [0, 100, 200]
    assert manager.counts["nonfinite"] == 7


# --- state round trips: resumed mid-streak, the next alert comes at the same step -------------


def _resume_check(records, split, kind, variant=None, ctx=CTX):
    """Detectors restored (through JSON) at ``split`` give the alerts of those that kept running;
    fresh detectors do not (so the state is what carries the streak)."""
    kept = GradientDetectors(DetectorConfig())
    for r in records[:split]:
        kept.update(r, ctx)
    restored = GradientDetectors(DetectorConfig())
    restored.load_state_dict(json.loads(json.dumps(kept.state_dict())))
    fresh = GradientDetectors(DetectorConfig())
    rest = records[split:]
    expected = alerts_of(rest, ctx, kept)
    assert alerts_of(rest, ctx, restored) == expected
    assert steps(alerts_of(rest, ctx, fresh), kind, variant) != steps(expected, kind, variant)
    return steps(expected, kind, variant)


def test_vanishing_depth_streak_survives_a_resume():
    records = [rec(s, norms=VANISHING) for s in range(12)]
    assert _resume_check(records, 5, "vanishing", "depth")[0] == 9


def test_vanishing_floor_streak_survives_a_resume():
    records = [rec(s, norms=FLOOR) for s in range(12)]
    assert _resume_check(records, 5, "vanishing", "floor")[0] == 9


def test_dead_streak_survives_a_resume():
    records = [rec(s, norms=(1.0, 0.0 if s >= 5 else 1.0, 1.0, 1.0)) for s in range(20)]
    assert _resume_check(records, 8, "vanishing", "dead")[0] == 14


def test_exploding_spike_history_survives_a_resume():
    records = [rec(s, total=50.0 if s == 30 else 1.0) for s in range(32)]
    assert _resume_check(records, 25, "exploding", "spike") == [30]


def test_exploding_depth_streak_survives_a_resume():
    records = [rec(s, norms=EXPLODING) for s in range(12)]
    assert _resume_check(records, 5, "exploding", "depth")[0] == 9


def test_exploding_growth_window_survives_a_resume():
    records = [rec(s, total=1.2**s) for s in range(60)]
    assert _resume_check(records, 45, "exploding", "growth")[0] == 49


def test_exploding_update_survives_a_resume():
    records = [rec(0, rms=[0.1] * 4), rec(1, rms=[0.1, 5.0, 0.1, 0.1])]
    assert _resume_check(records, 1, "exploding", "update") == [1]


def test_nonfinite_amp_streak_survives_a_resume():
    ctx = StepContext(NAMES, amp_scaler=True)
    records = [rec(s, norms=[np.inf] * 4) for s in range(12)]
    assert _resume_check(records, 6, "nonfinite", ctx=ctx)[0] == 9


def test_always_clipping_window_survives_a_resume():
    ctx = StepContext(NAMES, clip_norm=1.0)
    records = [rec(s, total=2.0) for s in range(102)]
    assert _resume_check(records, 60, "always_clipping", ctx=ctx)[0] == 99


def test_loss_spike_streak_survives_a_resume():
    records = [rec(s, loss=50.0 if s >= 30 else 1.0) for s in range(36)]
    # saved after two spiking steps (30, 31): the third, step 32, alerts
    assert _resume_check(records, 32, "loss_spike")[0] == 32


def test_always_clipping_window_slides_over_the_last_hundred_steps():
    """100 steps without clipping, then clipping on every step: the last 100 steps hold 90
    clipped ones at step 189 (a share over the whole run would still be 0.47 there)."""
    ctx = StepContext(NAMES, clip_norm=1.0)
    records = [rec(s, total=0.5 if s < 100 else 2.0) for s in range(190)]
    assert steps(alerts_of(records, ctx), "always_clipping") == [189]


def test_loss_spike_median_is_over_the_last_fifty_losses():
    """A loss level that moved from 100 to 1 sixty steps ago: the median of the last 50 is 1, so
    a jump to 50 is a spike (a median over the whole run would be 100)."""
    losses = [100.0] * 70 + [1.0] * 60 + [50.0] * 3
    records = [rec(s, loss=loss) for s, loss in enumerate(losses)]
    assert steps(alerts_of(records), "loss_spike") == [132]


def test_a_measured_update_stays_judged_across_a_resume():
    """Saved right after a measured step that rewrote l1: the next (unmeasured) step shows the
    jump of the weights' RMS, but that update was judged already, resumed or not."""
    records = [
        StepRecord(0, 0, np.ones(4), np.ones(4, bool), 2.0, 1.0, weight_rms=np.full(4, 0.1),
                   update_ratios=np.array([1e-3, 50.0, 1e-3, 1e-3])),
        rec(1, rms=[0.1, 5.0, 0.1, 0.1]),
        rec(2, rms=[0.1, 5.0, 0.1, 0.1]),
    ]  # fmt: skip
    kept = GradientDetectors(DetectorConfig())
    assert steps(alerts_of(records[:1], detectors=kept), "exploding", "update") == [0]
    restored = GradientDetectors(DetectorConfig())
    restored.load_state_dict(json.loads(json.dumps(kept.state_dict())))
    assert alerts_of(records[1:], detectors=restored) == alerts_of(records[1:], detectors=kept)
    assert steps(alerts_of(records[1:], detectors=restored), "exploding") == []


@pytest.mark.parametrize("layers", [1, 4])
def test_a_checkpoint_saved_before_the_dead_and_update_variants_resumes(layers):
    """Checkpoints from before ``vanishing``/dead and ``exploding``/update kept only the depth
    and floor streaks and the norm history: they load, the streaks they hold carry on, and the
    new variants start counting afresh."""
    names = [f"l{i}" for i in range(layers)]
    ctx = StepContext(names, epoch=0)
    profile = VANISHING if layers == 4 else (1e-6,)
    records = [rec(s, norms=profile, rms=[0.1] * layers) for s in range(12)]
    kept = GradientDetectors(DetectorConfig())
    alerts_of(records[:5], ctx, kept)
    state = json.loads(json.dumps(kept.state_dict()))
    old = {
        "vanishing": {k: state["vanishing"][k] for k in ("depth_streak", "floor_streak")},
        "exploding": {k: state["exploding"][k] for k in ("totals", "seen", "depth_streak")},
    }
    restored = GradientDetectors(DetectorConfig())
    restored.load_state_dict(old)
    expected = alerts_of(records[5:], ctx, kept)
    assert alerts_of(records[5:], ctx, restored) == expected
    assert steps(expected, "vanishing", "depth") == ([9, 10, 11] if layers == 4 else [])


def test_every_exploding_variant_carries_the_epoch():
    ctx = StepContext(NAMES, epoch=7)
    spike = [rec(s, total=50.0 if s == 30 else 1.0) for s in range(31)]
    depth = [rec(s, norms=EXPLODING) for s in range(10)]
    growth = [rec(s, total=1.2**s) for s in range(50)]
    update = [rec(0, rms=[0.1] * 4), rec(1, rms=[0.1, 5.0, 0.1, 0.1])]
    for records, variant in ((spike, "spike"), (depth, "depth"), (growth, "growth"),
                             (update, "update")):  # fmt: skip
        found = [a for a in alerts_of(records, ctx) if a.details["variant"] == variant]
        assert found and {a.epoch for a in found} == {7}, variant


@pytest.mark.parametrize(("dead", "more"), [(5, ""), (6, " (+1 more)"), (7, " (+2 more)")])
def test_a_message_lists_five_layers_then_counts_the_rest(dead, more):
    names = [f"l{i}" for i in range(8)]
    norms = lambda s: [0.0 if i < dead and s >= 1 else 1.0 for i in range(8)]  # noqa: E731
    alerts = alerts_of([rec(s, norms=norms(s)) for s in range(11)], StepContext(names, epoch=0))
    [alert] = [a for a in alerts if a.details["variant"] == "dead"]
    assert alert.message == (
        f"dead layer: the gradient of {dead} layer(s) is exactly zero for 10+ steps after it "
        f"was not: l0, l1, l2, l3, l4{more}"
    )


# --- severity: critical from the square of the threshold on ------------------------------------


def _severity(records, kind, variant=None):
    found = [
        a
        for a in alerts_of(records)
        if a.kind == kind and (variant is None or a.details["variant"] == variant)
    ]
    return found[0].severity


@pytest.mark.parametrize(
    ("total", "severity"), [(99.9, "warning"), (100.0, "warning"), (100.1, "critical")]
)
def test_a_spike_is_critical_above_a_hundred_times_the_median(total, severity):
    records = [rec(s, total=total if s == 30 else 1.0) for s in range(31)]
    assert _severity(records, "exploding", "spike") == severity


@pytest.mark.parametrize(
    ("first", "severity"), [(0.99e6, "warning"), (1e6, "warning"), (1.01e6, "critical")]
)
def test_growth_with_depth_is_critical_above_a_million(first, severity):
    records = [rec(s, norms=(first, 1e4, 1e2, 1.0)) for s in range(10)]
    assert _severity(records, "exploding", "depth") == severity


@pytest.mark.parametrize(("ratio", "severity"), [(99.9, "warning"), (100.0, "critical")])
def test_an_update_is_critical_from_a_hundred_times_the_weights(ratio, severity):
    ratios = np.array([1e-3, ratio, 1e-3, 1e-3])
    records = [StepRecord(0, 0, np.ones(4), np.ones(4, bool), 2.0, 1.0,
                          weight_rms=np.full(4, 0.1), update_ratios=ratios)]  # fmt: skip
    assert _severity(records, "exploding", "update") == severity


@pytest.mark.parametrize(
    ("first", "severity"), [(1.01e-6, "warning"), (1e-6, "warning"), (0.99e-6, "critical")]
)
def test_vanishing_is_critical_below_a_millionth(first, severity):
    records = [rec(s, norms=(first, 1e-4, 1e-2, 1.0)) for s in range(10)]
    assert _severity(records, "vanishing", "depth") == severity


@pytest.mark.parametrize(
    ("loss", "severity"), [(99.9, "warning"), (100.0, "warning"), (100.1, "critical")]
)
def test_a_loss_spike_is_critical_above_a_hundred_times_the_median(loss, severity):
    records = [rec(s, loss=loss if s >= 30 else 1.0) for s in range(33)]
    assert _severity(records, "loss_spike") == severity


def test_a_finite_step_under_amp_starts_the_count_of_ten_again():
    ctx = StepContext(NAMES, amp_scaler=True)
    bad = [rec(s, norms=[np.inf] * 4) for s in range(5)]
    good = [rec(5)]
    again = [rec(s, norms=[np.inf] * 4) for s in range(6, 20)]
    found = steps(alerts_of(bad + good + again, ctx), "nonfinite")
    assert found[0] == 15  # steps 6..15 are the ten consecutive bad steps


@pytest.mark.parametrize(
    ("weights", "origin"),
    [
        ([1.0, np.inf, 1.0, np.nan], "; weights already non-finite in l1, l3"),
        ([1.0, 1.0, 1.0, 1.0], ""),
    ],
)
def test_a_nonfinite_loss_names_the_weights_already_corrupt(weights, origin):
    record = StepRecord(3, 0, np.full(4, np.nan), np.ones(4, bool), float("nan"), float("nan"),
                        weight_norms=np.array(weights))  # fmt: skip
    [alert] = alerts_of([record])
    assert alert.message == (
        "NaN/Inf gradient in 4 layer(s): l0, l1, l2, l3 (loss = nan); likely origin: the forward "
        f"pass (the loss itself is non-finite){origin}"
    )
    assert alert.details == {"variant": "nonfinite", "origin": None, "loss_nonfinite": True}


def test_nonfinite_messages():
    ctx = StepContext(NAMES, epoch=2)
    [grad] = alerts_of([rec(0, norms=[1.0, np.nan, np.inf, 1.0])], ctx)
    assert grad.message == (
        "NaN/Inf gradient in 2 layer(s): l1, l2 (loss finite); likely origin: l2 (the output-most "
        "affected layer)"
    )
    assert (grad.severity, grad.epoch, grad.layers) == ("critical", 2, ("l1", "l2"))
    assert (grad.value, grad.threshold) == (2, 0.0)  # affected layers; any is one too many
    assert grad.details == {"variant": "nonfinite", "origin": "l2", "loss_nonfinite": False}
    [loss] = alerts_of([rec(0, loss=float("inf"))], ctx)
    assert loss.message == (
        "NaN/Inf gradient in no gradient (loss = inf); likely origin: the forward pass (the loss "
        "itself is non-finite)"
    )
    amp = StepContext(NAMES, epoch=2, amp_scaler=True)
    alerts = alerts_of([rec(s, norms=[np.nan] * 4) for s in range(10)], amp)
    assert alerts[0].message == (
        "NaN/Inf gradient in 4 layer(s): l0, l1, l2, l3 (loss finite) on 10 consecutive steps "
        "under AMP; likely origin: l3 (the output-most affected layer)"
    )


def test_a_spike_names_the_three_largest_layers():
    records = [rec(s, norms=(0.5, 0.5, 0.5, 0.5)) for s in range(30)]
    records.append(rec(30, norms=(1.0, 40.0, 3.0, 20.0)))  # total 44.8, 44.8x the median 1
    [alert] = [a for a in alerts_of(records, CTX) if a.kind == "exploding"]
    assert alert.layers == ("l1", "l3", "l2") and alert.threshold == 10.0
    assert alert.message == (
        "spike: global gradient norm 44.8 is 45x its median 1 over the last 30 steps "
        "(largest in l1, l3, l2)"
    )
    assert alert.details == {
        "variant": "spike",
        "total_norm": pytest.approx(44.83, abs=0.01),
        "median": 1.0,
    }


def test_growth_with_depth_names_the_layers_a_thousand_times_the_smallest():
    [alert] = alerts_of([rec(s, norms=(1e4, 1e3, 1.0, 0.1)) for s in range(10)])
    assert alert.layers == ("l0", "l1") and alert.value == pytest.approx(1e5)
    assert alert.message == (
        "growth with depth: gradient norm grows from 0.1 at l3 to 1e+04 at l0 "
        "(ratio 1.0e+05 > 1000; γ = 63.1 per layer) for 10+ steps"
    )


@pytest.mark.parametrize(("loss", "fires"), [(20.0, False), (20.1, True)])
def test_loss_spike_at_ten_times_a_median_of_two(loss, fires):
    records = [rec(s, loss=loss if s >= 30 else 2.0) for s in range(33)]
    assert steps(alerts_of(records), "loss_spike") == ([32] if fires else [])


@pytest.mark.parametrize(("loss", "fires"), [(13.3, False), (13.4, True)])
def test_around_zero_the_spread_sets_the_scale(loss, fires):
    """Losses -1, 1, -1, ...: median 0, MAD 1, so the scale is 1.4826 and a spike is a loss more
    than 9 x 1.4826 = 13.34 above the median."""
    detectors = GradientDetectors(DetectorConfig(loss_spike_steps=1))  # judged on one step
    records = [rec(s, loss=loss if s == 30 else (-1.0) ** s) for s in range(31)]
    assert steps(alerts_of(records, detectors=detectors), "loss_spike") == ([30] if fires else [])


def test_a_loss_that_never_moved_has_no_scale_to_spike_against():
    records = [rec(s, loss=1e-3 if s >= 30 else 0.0) for s in range(40)]
    assert steps(alerts_of(records), "loss_spike") == []


def test_a_nonfinite_loss_neither_counts_nor_breaks_a_spike():
    losses = {30: 50.0, 31: 50.0, 32: float("nan"), 33: 50.0}
    records = [rec(s, loss=losses.get(s, 1.0)) for s in range(34)]
    assert steps(alerts_of(records), "loss_spike") == [33]


@pytest.mark.parametrize(("spiking_from", "first"), [(2, None), (3, 5)])
def test_the_loss_median_needs_three_losses_whatever_min_history(spiking_from, first):
    """min_history=1: losses 1, 1, 1 then 50s; judged from the fourth loss on."""
    detectors = GradientDetectors(DetectorConfig(min_history=1))
    records = [rec(s, loss=50.0 if s >= spiking_from else 1.0) for s in range(6)]
    found = steps(alerts_of(records, detectors=detectors), "loss_spike")
    assert (found[0] if found else None) == first


def test_a_loss_spike_alert_reports_the_loss_its_median_and_their_ratio():
    records = [rec(s, loss=50.0 if s >= 30 else 2.0) for s in range(33)]
    [alert] = alerts_of(records, StepContext(NAMES, epoch=4))
    assert (alert.value, alert.threshold, alert.epoch, alert.layers) == (25.0, 10.0, 4, ())
    assert alert.details == {"variant": "loss_spike", "loss": 50.0, "median": 2.0}
    assert alert.message == "training loss 50 is 25x its recent median 2 for 3 consecutive steps"


def test_nonfinite_comes_first_among_one_steps_alerts():
    ratios = np.array([1e-3, 50.0, 1e-3, 1e-3])  # l1 rewritten by its update: exploding
    norms = np.array([np.nan, 1.0, 1.0, 1.0])
    record = StepRecord(0, 0, norms, np.ones(4, bool), float("nan"), 1.0,
                        weight_rms=np.full(4, 0.1), update_ratios=ratios)  # fmt: skip
    assert [a.kind for a in alerts_of([record])] == ["nonfinite", "exploding"]
