"""Every gradient detector fires on a real pathological run and stays silent on healthy ones."""

import math

import pytest

from tests.helpers.zoo import HEALTHY, PATHOLOGICAL, ZooRun

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
    assert alert.layers[0] == "model.layers.linear1"
    assert "γ =" in alert.message


def test_rnn_explodes_with_depth_before_any_nonfinite_loss(runs):
    run = runs["tanh RNN, spectral radius 3, window 120"]
    alert = _first(run, "exploding")
    assert alert.details["variant"] == "depth"
    assert alert.details["gamma"] > 1
    assert alert.layers[0] == "model.rnn"
    if run.first_nonfinite_loss is not None:
        assert alert.step < run.first_nonfinite_loss


def test_nan_names_the_layer_it_came_from(runs):
    run = runs["ReLU MLP, NaN gradient in layers.linear3 at step 25"]
    alert = _first(run, "nonfinite")
    assert alert.step == 25
    assert alert.details["origin"] == "model.layers.linear3"
    assert alert.layers == ("model.layers.linear3",)
    assert "model.layers.linear3 (the output-most affected layer)" in alert.message
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
