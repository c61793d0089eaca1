"""Gradient detectors on synthetic step records: each condition both ways, plus the edges."""

import math

import numpy as np
import pytest

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext

NAMES = [f"l{i}" for i in range(6)]
CTX = StepContext(layer_names=NAMES, epoch=0)


def record(step, norms, loss=1.0, has_grad=None):
    norms = np.asarray(norms, dtype=float)
    has = np.ones(len(norms), bool) if has_grad is None else np.asarray(has_grad)
    total = float(np.sqrt(np.nansum(np.where(has, norms, 0.0) ** 2)))
    if not np.isfinite(norms[has]).all():
        total = float("nan")
    return StepRecord(step, 0, np.where(has, norms, np.nan), has, total, loss)


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


def test_disable_kinds():
    detectors = GradientDetectors(disable=["nonfinite"])
    assert detectors.update(record(0, [np.nan] * 6), CTX) == []
    with pytest.raises(ValueError, match="unknown kinds"):
        GradientDetectors(disable=["dead_relu"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vanishing_floor", 0.0),
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
