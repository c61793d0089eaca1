"""Which steps read the weights: logged steps, check steps and the step after each; the others
read the gradients alone (issue 13: a quiet step costs about one read of the gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.sinks import GradFlowWarning, Sink
from lightning_gradflow.loop import GradFlow


class _Records(Sink):
    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def record(self, record: StepRecord) -> None:
        self.records.append(record)


def _train(steps: int, blow_up_at: int | None = None, **settings) -> tuple[GradFlow, _Records]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sink = _Records()
    monitor = GradFlow(model, sinks=[sink], probe_every_n_steps=None, **settings)
    x = torch.randn(32, 4)
    y = x.sum(dim=1, keepdim=True)
    for step in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.param_groups[0]["lr"] = 1e5 if step == blow_up_at else 0.01
        monitor.step(optimizer, loss)
        optimizer.zero_grad()
    monitor.close()
    return monitor, sink


def _steps_with(records: list[StepRecord], field: str) -> list[int]:
    return [r.step for r in records if getattr(r, field) is not None]


def test_weights_are_read_on_logged_and_check_steps_and_the_step_after_each():
    _, sink = _train(60, log_every_n_steps=25, check_every_n_steps=10)
    assert [r.step for r in sink.records] == list(range(60))
    checks = [0, 10, 20, 30, 40, 50]
    expected = sorted({*checks, *(c + 1 for c in checks), 25})
    assert _steps_with(sink.records, "weight_rms") == expected
    assert _steps_with(sink.records, "weight_norms") == [0, 25, 50]
    assert _steps_with(sink.records, "update_ratios") == [0, 25, 50]
    assert all(r.layer_norms.size == 2 and r.has_grad.all() for r in sink.records)


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
@pytest.mark.parametrize(("blow_up_at", "alert_step"), [(10, 11), (20, 21)])
def test_a_one_off_rewrite_at_a_check_step_is_reported_the_step_after(blow_up_at, alert_step):
    with pytest.warns(GradFlowWarning, match="update: the update of step"):
        monitor, _ = _train(
            30, blow_up_at, log_every_n_steps=50, check_every_n_steps=10, log_update_ratios=False
        )
    [alert] = [a for a in monitor.alerts if a.details.get("variant") == "update"]
    assert (alert.step, alert.details["update_step"]) == (alert_step, blow_up_at)
    assert not alert.details["measured"] and alert.value >= 10


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_a_one_off_rewrite_between_check_steps_is_seen_by_what_it_leaves_behind():
    """The weights are not read at step 27, but the rewrite's gradients spike the step after
    and the loss follows: the run is flagged within a step of it."""
    monitor, _ = _train(40, blow_up_at=27)
    first = monitor.alerts[0]
    assert (first.kind, first.details["variant"], first.step) == ("exploding", "spike", 28)
    assert "loss_spike" in {a.kind for a in monitor.alerts}
