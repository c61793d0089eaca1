"""Every gradient detector fires on a real pathological run and stays silent on healthy ones."""

import math

import pytest

from tests.helpers.zoo import HEALTHY, PATHOLOGICAL, WRONG_UNITS_FIRST_BATCH, ZooRun

CASES = {case.name: case for case in PATHOLOGICAL + HEALTHY}


@pytest.fixture(scope="module")
def runs() -> dict[str, ZooRun]:
    return {name: case.run() for name, case in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_expected_kinds_and_nothing_else(runs, name):
    case, run = CASES[name], runs[name]
    assert case.expected <= run.kinds <= case.expected | case.also_allowed, [
        a.format() for a in run.monitor.alerts
    ]


def _first(run: ZooRun, kind: str):
    return next(a for a in run.monitor.alerts if a.kind == kind)


def test_sigmoid_stack_vanishes_within_the_first_steps(runs):
    alert = _first(runs["20-layer sigmoid MLP, default init"], "vanishing")
    assert alert.step <= 10
    assert alert.details["gamma"] < 1
    assert alert.details["first_last_ratio"] < 1e-3
    assert alert.layers[0] == "net.layers.linear1"
    assert "γ =" in alert.message


def test_rnn_explodes_with_depth_before_any_nonfinite_loss(runs):
    run = runs["tanh RNN, spectral radius 3, window 120"]
    alert = _first(run, "exploding")
    assert alert.details["variant"] == "depth"
    assert alert.details["gamma"] > 1
    assert alert.layers[0] == "net.rnn"
    if run.first_nonfinite_loss is not None:
        assert alert.step < run.first_nonfinite_loss


def test_nan_names_the_layer_it_came_from(runs):
    run = runs["ReLU MLP, NaN gradient in layers.linear3 at step 25"]
    alert = _first(run, "nonfinite")
    assert alert.step == 25
    assert alert.details["origin"] == "net.layers.linear3"
    assert alert.layers == ("net.layers.linear3",)
    assert "net.layers.linear3 (the output-most affected layer)" in alert.message
    assert run.monitor.alert_counts["nonfinite"] > 1  # every later step counted ...
    assert sum(a.kind == "nonfinite" for a in run.monitor.alerts) == 1  # ... announced once


def test_always_clipping_reports_the_share(runs):
    alert = _first(runs["LSTM clipped at gradient_clip_val=1e-4"], "always_clipping")
    assert alert.value >= 0.9 and alert.threshold == 0.9
    assert "1e-04" in alert.message or "0.0001" in alert.message


def test_too_high_learning_rate_is_a_spike_not_an_architecture_problem(runs):
    run = runs["ReLU MLP, Adam lr 0.5 (far too high)"]
    variants = {a.details["variant"] for a in run.monitor.alerts if a.kind == "exploding"}
    assert "spike" in variants
    assert "learning-rate" in _first(run, "exploding").hint
    assert all(math.isfinite(v) for v in run.losses)


def test_a_first_step_that_wrecks_the_layers_is_flagged_at_once(runs):
    """A 1e6 target makes every gradient ~5e5 at step 0: SGD moves each layer by 1e3-1e4 times
    its weights, the tanh layers saturate for good and the loss never comes back."""
    run = runs[WRONG_UNITS_FIRST_BATCH]
    alert = _first(run, "exploding")
    assert (alert.step, alert.details["variant"], alert.details["measured"]) == (0, "update", True)
    assert alert.severity == "critical" and alert.value > 1e3 and alert.threshold == 10
    assert alert.layers[0] == "net.layers.linear1"
    assert "learning-rate" in alert.hint
    dead = _first(run, "vanishing")
    assert (dead.step, dead.details["variant"]) == (10, "dead")  # zero on steps 1..10
    assert dead.layers == ("net.layers.linear1",)
    summary = run.monitor.gradient_summary()
    assert summary["zero_grad_share"][0] > 0.9 and summary["zero_grad_share"][-1] == 0
    assert summary["mean_log10_norm"][:4] == [None] * 4  # typically zero, not "huge"
    assert summary["mean_log10_norm"][-1] > 0


def test_without_logged_update_ratios_the_jump_of_the_weights_shows_it_one_step_later(runs):
    run = runs[WRONG_UNITS_FIRST_BATCH + ", update ratios not logged"]
    alert = _first(run, "exploding")
    assert (alert.step, alert.details["update_step"]) == (1, 0)
    assert alert.details["variant"] == "update" and not alert.details["measured"]
    assert "went from" in alert.message


def test_inputs_that_saturate_a_layer_for_good_make_it_dead(runs):
    run = runs["tanh MLP, unnormalised inputs (x1e8) from step 20"]
    alert = _first(run, "vanishing")
    assert (alert.step, alert.details["variant"]) == (29, "dead")  # zero on steps 20..29
    assert alert.layers == ("net.layers.linear1",)
    assert "saturated" in alert.hint
