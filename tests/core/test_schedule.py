"""When histograms and pictures are due: the interval's validation, ``"auto"`` at the bounds of
its ``ceil(total / 10)`` capped at 500, the first and last steps, and the time budget that keeps
``"auto"`` from slowing a run of fast steps."""

import re

import pytest
import torch
from torch import nn

from lightning_gradflow.core.schedule import (
    AUTO_MAX,
    AUTO_PER_RUN,
    CostBudget,
    check_interval,
    is_due,
    resolve_interval,
)
from lightning_gradflow.core.sinks import Sink
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo


@pytest.mark.parametrize("value", [None, "auto", 1, 2, 10**6])
def test_positive_integers_auto_and_none_are_accepted(value):
    assert check_interval("plot_every_n_steps", value) is None


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "5", "Auto", [5]])
def test_anything_else_is_refused_naming_the_setting_and_value(value):
    message = f'plot_every_n_steps={value!r} is not allowed: expected a positive integer, "auto"'
    with pytest.raises(ValueError, match=re.escape(message)):
        check_interval("plot_every_n_steps", value)


@pytest.mark.parametrize(
    ("total_steps", "expected"),
    [
        (None, 500),  # length unknown
        (0, 500),
        (-3, 500),
        (1, 1),  # ceil(0.1) = 1
        (10, 1),
        (11, 2),  # ceil(1.1): never fewer than 10 outputs
        (20, 2),
        (21, 3),
        (4990, 499),
        (4991, 500),
        (5000, 500),
        (5001, 500),  # ceil(500.1) = 501, capped
        (10**6, 500),
    ],
)
def test_auto_is_a_tenth_of_the_run_rounded_up_and_at_most_500(total_steps, expected):
    assert (AUTO_MAX, AUTO_PER_RUN) == (500, 10)
    assert resolve_interval("auto", total_steps) == expected


@pytest.mark.parametrize("value", [1, 7, 1000, None])
def test_a_fixed_interval_or_off_is_kept_whatever_the_run_length(value):
    assert resolve_interval(value, None) == value
    assert resolve_interval(value, 30) == value


def test_steps_due_are_the_multiples_and_the_last_step():
    due = [s for s in range(12) if is_due(s, 5, total_steps=12)]
    assert due == [0, 5, 10, 11]
    assert [s for s in range(12) if is_due(s, 5)] == [0, 5, 10]  # length unknown: no last step
    assert [s for s in range(12) if is_due(s, 5, total_steps=11)] == [0, 5, 10]  # 10 is both
    assert [s for s in range(4) if is_due(s, 1, total_steps=4)] == [0, 1, 2, 3]


def test_off_is_never_due_not_even_on_the_first_or_last_step():
    assert not any(is_due(s, None, total_steps=3) for s in range(3))


def test_budget_allows_exactly_at_its_share():
    now = [0.0]
    budget = CostBudget(share=0.02, clock=lambda: now[0])
    assert budget.allows()  # not started: nothing to hold back
    budget.start()
    budget.spend(0.5)
    now[0] = 24.9
    assert not budget.allows()
    now[0] = 25.0  # 0.5 s is 2 % of 25 s
    assert budget.allows()
    budget.start()
    assert budget.spent == 0.0 and budget.allows()


class Pictures(Sink):
    def __init__(self):
        self.steps = []

    def image(self, step, tag, image):
        if tag == "grad_flow/picture":
            self.steps.append(step)


def _run(clock_per_step: float, **settings) -> list[int]:
    """20 steps of a tiny model; the budget's clock advances ``clock_per_step`` a step."""
    pytest.importorskip("matplotlib")
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sink = Pictures()
    engine = GradFlowEngine(
        log_every_n_steps=1, probe_every_n_steps=None, locate_nan_origin=False, **settings
    )
    engine.start(RunContext(sinks=[sink], total_steps=20))
    now = [0.0]
    engine._budget = CostBudget(clock=lambda: now[0])  # the run's time, made up
    engine._budget.start()
    engine.watch(model)
    for step in range(20):
        engine.forward_start(step)
        loss = model(torch.randn(4, 3)).pow(2).mean()
        engine.loss(loss)
        loss.backward()
        engine.before_optimizer_step(model, optimizer, step)
        optimizer.step()
        optimizer.zero_grad()
        engine.end_batch(StepInfo(step))
        now[0] += clock_per_step
    engine.finish(StepInfo(19))
    return sink.steps


def test_auto_pictures_wait_while_they_cost_more_than_their_share():
    # auto = every 2 steps (20 / 10); a picture takes far more than 2 % of a 1 ms step, so only
    # the first and the last step get one
    assert _run(clock_per_step=0.001) == [0, 19]
    # slow steps (1000 s each): every due step is affordable
    assert _run(clock_per_step=1000.0) == [*range(0, 20, 2), 19]


def test_an_explicit_interval_is_kept_whatever_it_costs():
    assert _run(clock_per_step=0.001, plot_every_n_steps=5) == [0, 5, 10, 15, 19]
