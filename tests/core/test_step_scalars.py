"""The per-step scalars: depth-ordered tags, zero and non-finite layers kept visible, the
depth summaries at their boundaries, and what a real engine step writes."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.sinks import Sink
from lightning_gradflow.core.step_scalars import (
    ZERO_LOG10,
    alert_scalars,
    depth_summary,
    depth_tags,
    log10_norms,
    step_scalars,
)
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo


@pytest.mark.parametrize(
    ("count", "first", "last"),
    [(1, "00.l0", "00.l0"), (100, "00.l0", "99.l99"), (101, "000.l0", "100.l100")],
)
def test_depth_tags_sort_as_text_in_depth_order(count, first, last):
    tags = depth_tags([f"l{i}" for i in range(count)])
    assert (tags[0], tags[-1]) == (first, last)
    assert sorted(tags) == tags


def test_zero_is_a_decade_below_the_histogram_floor_and_nonfinite_is_nan():
    logs = log10_norms(np.array([0.0, 1e-12, 10.0, np.nan, np.inf, -np.inf]))
    assert logs[:3].tolist() == [ZERO_LOG10, -12.0, 1.0] and ZERO_LOG10 == -13.0
    assert np.isnan(logs[3:]).all()


@pytest.mark.parametrize(("norm", "dead"), [(0.0, 1), (0.99e-5, 1), (1e-5, 0), (1.01e-5, 0)])
def test_dead_layers_are_those_strictly_below_the_floor(norm, dead):
    summary = depth_summary(np.array([norm, 1.0]), np.array([True, True]), floor=1e-5)
    assert summary["grad_flow/dead_layers"] == dead


def test_layers_without_a_gradient_or_with_nan_take_no_part():
    norms = np.array([1e-9, np.nan, 1e-3, np.inf, 1.0])
    has_grad = np.array([False, True, True, True, True])
    summary = depth_summary(norms, has_grad, floor=1e-5)
    assert summary["grad_flow/dead_layers"] == 0  # the 1e-9 layer had no gradient this step
    assert summary["grad_flow/min_log10_norm"] == pytest.approx(-3.0)
    assert summary["grad_flow/max_log10_norm"] == pytest.approx(0.0)
    assert summary["grad_flow/first_last_ratio"] == pytest.approx(1e-3)
    assert summary["grad_flow/log10_first_last_ratio"] == pytest.approx(-3.0)
    # index 2 -> 4: slope 1.5 decades per layer, so each layer multiplies by 10**-1.5 going back
    assert summary["grad_flow/gamma"] == pytest.approx(10**-1.5)


def test_a_zero_layer_counts_as_dead_and_sets_the_minimum_but_not_the_fit():
    summary = depth_summary(np.array([0.0, 1e-2, 1.0]), np.array([True] * 3), floor=1e-5)
    assert summary["grad_flow/dead_layers"] == 1
    assert summary["grad_flow/min_log10_norm"] == ZERO_LOG10
    assert summary["grad_flow/first_last_ratio"] == pytest.approx(1e-2)


def test_fewer_than_two_usable_layers_leave_out_the_ratio_and_gamma():
    summary = depth_summary(np.array([np.nan, 1.0]), np.array([True, True]), floor=1e-5)
    assert set(summary) == {
        "grad_flow/dead_layers",
        "grad_flow/min_log10_norm",
        "grad_flow/max_log10_norm",
    }
    assert depth_summary(np.array([np.inf]), np.array([True]), 1e-5) == {
        "grad_flow/dead_layers": 0.0
    }


def test_alerts_separate_announced_from_steps_the_condition_held():
    scalars = alert_scalars({"vanishing": 3}, {"vanishing": 201, "nonfinite": 2})
    assert scalars == {
        "alerts/announced/nonfinite": 0.0,
        "alerts/active_steps/nonfinite": 2.0,
        "alerts/announced/vanishing": 3.0,
        "alerts/active_steps/vanishing": 201.0,
    }


def test_step_scalars_suffix_only_the_step_wide_tags():
    record = StepRecord(
        step=4,
        optimizer_index=1,
        layer_norms=np.array([1e-3, np.nan, 1.0]),
        has_grad=np.array([True, False, True]),
        total_norm=1.0,
        weight_norms=np.array([2.0, 3.0, 4.0]),
        update_ratios=np.array([1e-3, np.nan, 0.0]),
    )
    metrics = step_scalars(record, depth_tags(["a", "b", "c"]), floor=1e-5, suffix="_optimizer1")
    assert metrics["grad_norm/total_optimizer1"] == 1.0
    assert metrics["grad_flow/gamma_optimizer1"] == pytest.approx(10**-1.5)
    assert metrics["grad_log10_norm/00.a"] == pytest.approx(-3.0)
    assert "grad_log10_norm/01.b" not in metrics and "weight_norm/01.b" not in metrics
    assert metrics["weight_norm/02.c"] == 4.0
    assert metrics["update_ratio_log10/00.a"] == pytest.approx(-3.0)
    assert metrics["update_ratio_log10/02.c"] == ZERO_LOG10


class Scalars(Sink):
    def __init__(self):
        self.rows = {}

    def scalars(self, step, metrics):
        self.rows.setdefault(step, {}).update(metrics)


class TwoBranches(nn.Module):
    """``first`` feeds the output at full strength, ``muted`` times 0 (an exactly zero
    gradient), ``faint`` times 1e-8 (below the dead floor)."""

    def __init__(self):
        super().__init__()
        self.first, self.muted, self.faint = nn.Linear(4, 1), nn.Linear(4, 1), nn.Linear(4, 1)

    def forward(self, x):
        return self.first(x) + 0.0 * self.muted(x) + 1e-8 * self.faint(x)


def test_an_engine_step_keeps_zero_and_dead_layers_visible():
    torch.manual_seed(0)
    model, sink = TwoBranches(), Scalars()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = GradFlowEngine(
        log_every_n_steps=1,
        probe_every_n_steps=None,
        plot_every_n_steps=None,
        histogram_every_n_steps=None,
        locate_nan_origin=False,
    )
    engine.start(RunContext(sinks=[sink], total_steps=2))
    engine.watch(model)
    for step in range(2):
        engine.forward_start(step)
        loss = model(torch.randn(8, 4)).pow(2).mean()
        engine.loss(loss)
        loss.backward()
        engine.before_optimizer_step(model, optimizer, step)
        optimizer.step()
        optimizer.zero_grad()
        engine.after_optimizer_step()
        engine.end_batch(StepInfo(step))
    engine.finish(StepInfo(1))
    assert engine.layer_tags == ["00.first", "01.muted", "02.faint"]
    row = sink.rows[1]
    assert row["grad_log10_norm/01.muted"] == ZERO_LOG10
    assert -12 < row["grad_log10_norm/02.faint"] < -7
    assert row["grad_flow/dead_layers"] == 2.0
    assert row["grad_flow/min_log10_norm"] == ZERO_LOG10
    assert math.isclose(row["grad_flow/max_log10_norm"], row["grad_log10_norm/00.first"])
    assert engine.run_summary()["grad_flow/dead_layers"] == 2.0


def test_step_scalars_without_weights_count_nonfinite_layers_and_skip_nonfinite_ratios():
    record = StepRecord(
        step=2,
        optimizer_index=0,
        layer_norms=np.array([np.inf, 1e-2, np.nan, 0.0]),
        has_grad=np.array([True, True, True, True]),
        total_norm=np.inf,
        update_ratios=np.array([np.nan, np.inf, 1e-2, 1e-4]),
    )
    metrics = step_scalars(record, depth_tags(["a", "b", "c", "d"]), floor=1e-3)
    assert metrics["grad_norm/total"] == np.inf
    assert metrics["grad_nonfinite/layers"] == 2.0  # the Inf and the NaN layer
    assert metrics["grad_flow/dead_layers"] == 1.0  # the zero layer
    assert np.isnan(metrics["grad_log10_norm/00.a"]) and np.isnan(metrics["grad_log10_norm/02.c"])
    assert metrics["grad_log10_norm/01.b"] == pytest.approx(-2.0)
    assert metrics["grad_log10_norm/03.d"] == ZERO_LOG10
    assert not any(tag.startswith("weight_norm/") for tag in metrics)
    ratios = {tag: value for tag, value in metrics.items() if tag.startswith("update_ratio")}
    assert ratios == {
        "update_ratio_log10/02.c": pytest.approx(-2.0),
        "update_ratio_log10/03.d": pytest.approx(-4.0),
    }
    assert "grad_flow/gamma" not in metrics  # one usable layer: no fit


def test_step_scalars_without_update_ratios_write_none():
    record = StepRecord(
        step=0,
        optimizer_index=0,
        layer_norms=np.array([1e-3, 1.0]),
        has_grad=np.array([True, True]),
        total_norm=1.0,
        weight_norms=np.array([0.5, 2.0]),
    )
    metrics = step_scalars(record, depth_tags(["a", "b"]), floor=1e-5)
    assert not any(tag.startswith("update_ratio") for tag in metrics)
    assert (metrics["weight_norm/00.a"], metrics["weight_norm/01.b"]) == (0.5, 2.0)
    assert metrics["grad_nonfinite/layers"] == 0.0
    assert metrics["grad_flow/first_last_ratio"] == pytest.approx(1e-3)
    assert metrics["grad_flow/log10_first_last_ratio"] == pytest.approx(-3.0)


@pytest.mark.parametrize(
    ("count", "first", "last"),
    [(10, "00.l0", "09.l9"), (1000, "000.l0", "999.l999"), (1001, "0000.l0", "1000.l1000")],
)
def test_depth_tags_pad_to_the_widest_index(count, first, last):
    tags = depth_tags([f"l{i}" for i in range(count)])
    assert (tags[0], tags[-1]) == (first, last)
