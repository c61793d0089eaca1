"""Gradient detectors on synthetic step records: each condition both ways, plus the edges."""

import json
import math

import numpy as np
import pytest

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext

NAMES = [f"l{i}" for i in range(6)]
CTX = StepContext(layer_names=NAMES, epoch=0)


def record(step, norms, loss=1.0, has_grad=None, rms=None, ratios=None, optimizer=0):
    norms = np.asarray(norms, dtype=float)
    has = np.ones(len(norms), bool) if has_grad is None else np.asarray(has_grad)
    total = float(np.sqrt(np.nansum(np.where(has, norms, 0.0) ** 2)))
    if not np.isfinite(norms[has]).all():
        total = float("nan")
    return StepRecord(
        step,
        optimizer,
        np.where(has, norms, np.nan),
        has,
        total,
        loss,
        weight_rms=None if rms is None else np.asarray(rms, dtype=float),
        update_ratios=None if ratios is None else np.asarray(ratios, dtype=float),
    )


def feed(norm_fn, steps, config=None, ctx=CTX, loss_fn=lambda s: 1.0):
    detectors = GradientDetectors(config or DetectorConfig())
    alerts = []
    for step in range(steps):
        alerts += detectors.update(record(step, norm_fn(step), loss_fn(step)), ctx)
    return alerts


FLAT = lambda s: [1.0] * 6  # noqa: E731


def test_healthy_flat_profile_is_silent():
    assert feed(FLAT, 200) == []


def test_vanishing_needs_patience_and_reports_gamma():
    alerts = feed(lambda s: [0.25 ** (5 - i) * 1e-2 for i in range(6)], 15)
    assert [a.step for a in alerts] == [9, 10, 11, 12, 13, 14]
    assert alerts[0].details["gamma"] == pytest.approx(0.25)
    assert alerts[0].layers[0] == "l0"


def test_uniformly_small_gradients_are_not_vanishing():
    assert feed(lambda s: [1e-9] * 6, 50) == []


def test_a_single_low_input_layer_is_not_a_depth_problem():
    """Small-scale input features make only the first layer small: the fitted line is flat."""
    alerts = feed(lambda s: [1e-4, 1.0, 1.0, 1.0, 1.0, 1.0], 30)
    assert all(a.details["variant"] != "depth" for a in alerts)


def test_exactly_zero_and_missing_gradients_are_not_judged():
    detectors = GradientDetectors()
    for step in range(30):
        norms = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        rec = record(step, norms, has_grad=[True, True, False, True, True, True])
        assert detectors.update(rec, CTX) == []


def test_spike_after_history():
    alerts = feed(lambda s: [100.0 if s == 30 else 1.0] * 6, 40)
    assert [(a.step, a.details["variant"]) for a in alerts] == [(30, "spike")]
    assert alerts[0].value == pytest.approx(100.0)


def test_no_spike_before_min_history_and_none_downwards():
    assert feed(lambda s: [100.0 if s == 5 else 1.0] * 6, 15) == []
    assert feed(lambda s: [100.0 if s < 25 else 1.0] * 6, 60) == []


def test_growth_with_depth():
    alerts = feed(lambda s: [10.0 ** (5 - i) for i in range(6)], 12)
    assert {a.details["variant"] for a in alerts} == {"depth"}
    assert alerts[0].details["gamma"] == pytest.approx(10.0)


def test_steady_exponential_growth_over_steps():
    alerts = feed(lambda s: [1.2**s] * 6, 80)
    variants = {a.details["variant"] for a in alerts}
    assert "growth" in variants
    first = next(a for a in alerts if a.details["variant"] == "growth")
    assert first.value >= 3


def test_slow_growth_is_normal():
    assert feed(lambda s: [1.01**s] * 6, 300) == []


def test_nonfinite_names_layers_and_origin():
    norms = [np.nan, np.nan, np.nan, np.inf, 1.0, 1.0]
    detectors = GradientDetectors()
    [alert] = detectors.update(record(3, norms), CTX)
    assert alert.kind == "nonfinite" and alert.layers == ("l0", "l1", "l2", "l3")
    assert alert.details["origin"] == "l3"


def test_nonfinite_loss_points_to_the_forward_pass():
    [alert] = GradientDetectors().update(record(0, FLAT(0), loss=float("nan")), CTX)
    assert alert.details["loss_nonfinite"] and "forward pass" in alert.message


def test_nonfinite_under_amp_waits_for_persistence():
    ctx = StepContext(NAMES, amp_scaler=True)
    detectors = GradientDetectors()
    bad = [np.inf] * 6
    fired = [bool(detectors.update(record(s, bad), ctx)) for s in range(12)]
    assert fired == [False] * 9 + [True] * 3
    detectors.update(record(12, FLAT(0)), ctx)
    assert detectors.update(record(13, bad), ctx) == []  # streak reset by a good step


def test_always_clipping_only_with_a_clip_value():
    ctx = StepContext(NAMES, clip_norm=0.5)
    alerts = feed(FLAT, 120, ctx=ctx)
    assert alerts and alerts[0].step == 99 and alerts[0].value == 1.0
    assert feed(FLAT, 120, ctx=StepContext(NAMES, clip_norm=5.0)) == []
    assert feed(FLAT, 120) == []


def test_occasional_clipping_is_fine():
    ctx = StepContext(NAMES, clip_norm=3.0)  # total norm 2.45, or 4.9 on every third step
    assert feed(lambda s: [1.0 if s % 3 else 2.0] * 6, 200, ctx=ctx) == []


def test_loss_spike_needs_consecutive_steps():
    one_bad_batch = feed(FLAT, 60, loss_fn=lambda s: 50.0 if s == 30 else 1.0)
    assert one_bad_batch == []
    alerts = feed(FLAT, 60, loss_fn=lambda s: 50.0 if 30 <= s < 35 else 1.0)
    assert [a.step for a in alerts] == [32, 33, 34]
    assert alerts[0].kind == "loss_spike"


def test_negative_losses():
    noisy = feed(FLAT, 100, loss_fn=lambda s: -5.0 + 0.1 * math.sin(s))
    assert noisy == []
    jump = feed(FLAT, 60, loss_fn=lambda s: 200.0 if s >= 40 else -5.0)
    assert jump and jump[0].kind == "loss_spike"


def test_detector_state_round_trip():
    a, b = GradientDetectors(), GradientDetectors()
    for step in range(8):
        a.update(record(step, [0.25 ** (5 - i) * 1e-2 for i in range(6)]), CTX)
    b.load_state_dict(a.state_dict())
    rec = record(8, [0.25 ** (5 - i) * 1e-2 for i in range(6)])
    assert a.update(rec, CTX) == b.update(rec, CTX) == []
    rec = record(9, [0.25 ** (5 - i) * 1e-2 for i in range(6)])
    assert len(a.update(rec, CTX)) == len(b.update(rec, CTX)) == 1


RMS = [0.1] * 6


def variant(alerts, name):
    return [a for a in alerts if a.details["variant"] == name]


def run(records, config=None):
    detectors = GradientDetectors(config or DetectorConfig())
    return [a for r in records for a in detectors.update(r, CTX)]


def resumed(records, split, config=None):
    """Alerts after ``split`` records of detectors restored (through JSON) from a state saved
    there, and of the detectors that kept running: they must be the same."""
    a, b = GradientDetectors(config or DetectorConfig()), GradientDetectors(config)
    for r in records[:split]:
        a.update(r, CTX)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    kept = [alert for r in records[split:] for alert in a.update(r, CTX)]
    restored = [alert for r in records[split:] for alert in b.update(r, CTX)]
    assert restored == kept
    return kept


@pytest.mark.parametrize(("ratio", "fires"), [(9.99, False), (10.0, True), (10.01, True)])
def test_one_update_rewriting_a_layer_is_flagged_at_step_0(ratio, fires):
    ratios = [1e-3, 1e-3, ratio, 1e-3, 1e-3, 1e-3]
    alerts = run([record(0, FLAT(0), rms=RMS, ratios=ratios)])
    assert [(a.kind, a.step, a.layers) for a in alerts] == (
        [("exploding", 0, ("l2",))] if fires else []
    )
    if fires:
        [alert] = alerts
        assert alert.details == {
            "variant": "update",
            "update_step": 0,
            "measured": True,
            "ratios": {"l2": ratio},
        }
        assert alert.value == ratio and alert.threshold == 10.0 and alert.severity == "warning"
        assert "l2" in alert.message and "limit 10" in alert.message
        assert "learning-rate" in alert.hint and "clip" in alert.hint


def test_an_update_a_hundred_times_the_weights_is_critical():
    [alert] = run([record(0, FLAT(0), rms=RMS, ratios=[100.0] * 6)])
    assert alert.severity == "critical" and alert.layers == tuple(NAMES)


@pytest.mark.parametrize(("rms", "fires"), [(0.0, False), (0.99e-4, False), (1e-4, True)])
def test_zero_and_near_zero_weights_are_not_judged(rms, fires):
    """Zero-initialised or LayerScale-like weights: their first updates rewrite them by design."""
    ratio = np.inf if rms == 0 else 1e3
    rec = record(0, FLAT(0), rms=[rms, 0.1, 0.1, 0.1, 0.1, 0.1], ratios=[ratio] + [1e-3] * 5)
    assert len(run([rec])) == fires


@pytest.mark.parametrize(("after", "fires"), [(10.99, False), (11.0, True), (11.01, True)])
def test_unmeasured_steps_bound_the_ratio_by_the_jump_of_the_weights(after, fires):
    """``||Δθ|| / ||θ|| >= |rms_after / rms_before - 1|``: 1.0 -> 11.0 is a ratio of at least 10,
    seen on the next step."""
    records = [
        record(0, FLAT(0), rms=[1.0] * 6),
        record(1, FLAT(0), rms=[1.0, 1.0, 1.0, after, 1.0, 1.0]),
    ]
    alerts = run(records)
    assert [(a.step, a.layers) for a in alerts] == ([(1, ("l3",))] if fires else [])
    if fires:
        assert alerts[0].details["update_step"] == 0 and not alerts[0].details["measured"]
        assert "went from 1 to 11" in alerts[0].message


def test_a_measured_update_is_not_judged_twice():
    records = [
        record(0, FLAT(0), rms=RMS, ratios=[1e3] + [1e-3] * 5),
        record(1, FLAT(0), rms=[100.0, *RMS[1:]]),
        record(2, FLAT(0), rms=[100.0, *RMS[1:]]),
    ]
    assert [a.step for a in run(records)] == [0]


def test_each_optimizer_is_compared_with_its_own_previous_step():
    """Two optimizers, l0-l2 and l3-l5, interleaved; l4 jumps between its optimizer's steps."""
    nan = [np.nan] * 3
    records = []
    for step in range(6):
        jump = 20.0 if step >= 4 else 1.0
        first = [1.0, 1.0, 1.0, *nan]
        second = [*nan, 1.0, jump, 1.0]
        rms, optimizer = (first, 0) if step % 2 == 0 else (second, 1)
        records.append(record(step, FLAT(0), rms=rms, optimizer=optimizer))
    alerts = run(records)
    assert [(a.step, a.layers, a.details["update_step"]) for a in alerts] == [(5, ("l4",), 3)]


def test_update_state_survives_a_resume():
    records = [record(0, FLAT(0), rms=RMS), record(1, FLAT(0), rms=[10.0, *RMS[1:]])]
    assert [a.step for a in resumed(records, 1)] == [1]


def dead_from(step, layer=2):
    """Norms with ``layer`` flowing until ``step`` and exactly zero from then on."""
    return lambda s: [0.0 if i == layer and s >= step else 1.0 for i in range(6)]


def test_a_layer_whose_gradient_becomes_exactly_zero_is_dead_after_patience():
    alerts = variant(feed(dead_from(5), 20), "dead")
    assert alerts[0].step == 14  # zero on steps 5..14: 10 = patience
    assert alerts[0].kind == "vanishing" and alerts[0].layers == ("l2",)
    assert alerts[0].severity == "critical"
    assert alerts[0].details["zero_steps"] == {"l2": 10}
    assert "exactly zero for 10+ steps" in alerts[0].message and "l2" in alerts[0].message


@pytest.mark.parametrize(("zero_steps", "fires"), [(9, False), (10, True)])
def test_dead_needs_patience_consecutive_zero_steps(zero_steps, fires):
    norms = lambda s: dead_from(5)(s) if s < 5 + zero_steps else FLAT(s)  # noqa: E731
    assert bool(variant(feed(norms, 30), "dead")) == fires


def test_a_layer_that_never_had_a_gradient_is_not_dead():
    """Upstream of a zero-initialised head until it moves, or ``0 * output`` on purpose."""
    assert feed(dead_from(0), 40) == []
    zero_head = lambda s: [0.0] * 5 + [1.0] if s < 2 else FLAT(s)  # noqa: E731
    assert feed(zero_head, 40) == []


def test_steps_without_any_gradient_neither_count_nor_reset():
    """Steps where every gradient is zero (nothing to learn) or a layer has no gradient (another
    optimizer's step) pause the count."""
    detectors = GradientDetectors()
    fired = []
    for step in range(30):
        norms = dead_from(5)(step)
        has = [True] * 6
        if step in (8, 9):
            norms = [0.0] * 6
        if step in (10, 11):
            has = [True, True, False, True, True, True]
        alerts = detectors.update(record(step, norms, has_grad=has), CTX)
        fired += [a.step for a in variant(alerts, "dead")]
    assert fired[0] == 18  # steps 5-7 and 12-18 are the 10 counted


def test_dead_streak_survives_a_resume_mid_streak():
    records = [record(s, dead_from(5)(s)) for s in range(20)]
    alerts = variant(resumed(records, 9), "dead")
    assert alerts[0].step == 14


def test_disable_kinds():
    detectors = GradientDetectors(disable=["nonfinite"])
    assert detectors.update(record(0, [np.nan] * 6), CTX) == []
    with pytest.raises(ValueError, match="unknown kinds"):
        GradientDetectors(disable=["dead_relu"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vanishing_floor", 0.0),
        ("update_ratio_limit", 0.0),
        ("weight_rms_floor", -1e-4),
        ("vanishing_depth_ratio", 2.0),
        ("exploding_depth_ratio", 0.5),
        ("spike_factor", 1.0),
        ("clipping_share", 0.0),
        ("patience", 0),
        ("window", 2),
        ("cooldown_steps", -1),
        ("growth_decades", "3"),
        ("loss_spike_steps", 1.5),
        ("spike_factor", float("inf")),
        ("growth_decades", float("inf")),
        ("vanishing_floor", float("nan")),
        ("exploding_depth_ratio", float("nan")),
        ("patience", True),
    ],
)
def test_invalid_thresholds(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        DetectorConfig(**{field: value})


def _alert(step, kind="vanishing", variant="depth"):
    return Alert(kind, "warning", step, 0, ("l0",), 1.0, 1.0, "m", "h", {"variant": variant})


def test_manager_cooldown_counts_and_actions():
    manager = AlertManager(on_alert="stop", actions={"exploding": "raise"}, cooldown_steps=5)
    assert manager.submit([_alert(0)]) == [_alert(0)]
    assert manager.submit([_alert(3)]) == []
    assert manager.submit([_alert(5), _alert(5, variant="floor")]) == [
        _alert(5),
        _alert(5, variant="floor"),
    ]
    assert manager.counts["vanishing"] == 4
    assert manager.action([_alert(0)]) == "stop"
    assert manager.action([_alert(0), _alert(0, kind="exploding")]) == "raise"
    assert manager.action([]) == "warn"
    restored = AlertManager()
    restored.load_state_dict(manager.state_dict())
    assert restored.announced == manager.announced and restored.submit([_alert(6)]) == []


def test_alert_validates_kind_and_severity():
    with pytest.raises(ValueError, match="kind='bad'"):
        Alert("bad", "warning", 0, 0, (), 1.0, 1.0, "m", "h")
    with pytest.raises(ValueError, match="severity='fatal'"):
        Alert("vanishing", "fatal", 0, 0, (), 1.0, 1.0, "m", "h")


@pytest.mark.parametrize("size", [1, 2, 3, 4, 49, 50])
def test_the_windows_median_is_numpys(size: int):
    """The detectors' median (a partition, ~4x faster than np.median) is np.median's value,
    for odd and even windows, from a deque, a list or an array, with repeated values."""
    from collections import deque

    from lightning_gradflow.core.detectors.base import median_of

    rng = np.random.default_rng(size)
    for values in (rng.lognormal(size=size), np.round(rng.normal(size=size), 1)):
        expected = float(np.median(values))
        assert median_of(values) == expected
        assert median_of(list(values)) == median_of(deque(values)) == expected


def test_a_records_depth_fit_is_the_fit_of_its_usable_norms():
    """The vanishing and exploding detectors share one fit per step, kept on the record: it
    leaves out layers without a finite positive gradient, as each detector's own fit did."""
    from lightning_gradflow.core.flow import fit_depth_profile

    norms = np.array([1e-4, np.nan, 0.0, np.inf, 1e-2, 1.0])
    has = np.array([True, False, True, True, True, True])
    record = StepRecord(0, 0, norms, has, 1.0)
    usable = record.usable_norms
    assert np.isnan(usable[1:4]).all() and usable[[0, 4, 5]].tolist() == [1e-4, 1e-2, 1.0]
    assert record.depth_fit == fit_depth_profile(
        np.array([1e-4, np.nan, np.nan, np.nan, 1e-2, 1.0])
    )
    assert record.depth_fit is record.depth_fit  # worked out once
    assert StepRecord(0, 0, np.array([1.0, 0.0]), np.array([True, True]), 1.0).depth_fit is None
