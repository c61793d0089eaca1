"""What the plain-loop and Fabric adapters pass on to the engine and the writers: W&B scalars,
the epoch and clip value of a step, the forward to re-run for a NaN's origin, several
optimizers, closures, how a run ends (normally, or with an error inside ``with``), Fabric's
non-TensorBoard loggers, its reductions and a module passed without ``fabric.setup``."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch import nn

from lightning_gradflow.core.alerts import GradientPathologyError
from lightning_gradflow.core.sinks import GradFlowWarning
from lightning_gradflow.fabric import FabricGradFlow
from lightning_gradflow.loop import GradFlow
from tests.helpers.wandb_records import history_rows, offline_wandb_env, read_finished_records

pytestmark = pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _batch(step: int, nan_at: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
    if step == nan_at:
        x[0, 0] = float("nan")
    return x, x.sum(dim=1, keepdim=True)


def _train(monitor: GradFlow, model: nn.Module, steps: int, nan_at: int | None = None, **after):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(steps):
        x, y = _batch(step, nan_at)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        monitor.before_step(optimizer, loss)
        optimizer.step()
        stop = monitor.after_step(**after)
        optimizer.zero_grad()
        if stop:
            return step
    return None


def test_a_wandb_run_gets_the_scalars(tmp_path, monkeypatch):
    import wandb

    root = offline_wandb_env(monkeypatch, tmp_path / "wandb")
    run = wandb.init(dir=str(root), project="loop")
    model = _net()
    monitor = GradFlow(model, wandb_run=run, log_every_n_steps=2, probe_every_n_steps=None)
    _train(monitor, model, 5)
    monitor.close()
    run.finish()
    wandb.teardown()
    rows = [r for r in history_rows(read_finished_records(root)) if "grad_flow/gamma" in r]
    assert [r["trainer/global_step"] for r in rows] == [0, 2, 4]
    norms = [(r["grad_log10_norm/00.0"], r["grad_log10_norm/01.2"]) for r in rows]
    assert all(-13 < a < 2 and -13 < b < 2 for a, b in norms)
    assert all(r["grad_norm/total"] > 0 for r in rows)


def test_the_first_forward_is_probed():
    """Probes attach before step 0's forward: a ReLU dead from the start is named at step 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every unit off for every input
    monitor = GradFlow(model, probe_every_n_steps=1, probes={"patience": 1})
    assert monitor.should_stop is False
    _train(monitor, model, 2)
    monitor.close()
    dead = [a for a in monitor.alerts if a.kind == "dead_relu"]
    assert dead and dead[0].step == 0


def test_two_optimizers_keep_their_own_index():
    model = _net()
    first = torch.optim.SGD(model[0].parameters(), lr=0.01)
    second = torch.optim.SGD(model[2].parameters(), lr=0.01)
    monitor = GradFlow(model, log_every_n_steps=1, probe_every_n_steps=None)
    for step in range(2):
        for optimizer in (first, second):
            x, y = _batch(step)
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            monitor.step(optimizer, loss)
            optimizer.zero_grad()
            model.zero_grad()
    monitor.close()
    assert monitor.engine.optimizer_steps == {0: 2, 1: 2}


def test_a_closure_is_handed_to_the_optimizer():
    model = _net()
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=2)
    x, y = _batch(0)
    monitor = GradFlow(model, probe_every_n_steps=None)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    before = nn.functional.mse_loss(model(x), y).item()
    closure()
    monitor.step(optimizer, closure=closure)
    monitor.close()
    assert nn.functional.mse_loss(model(x), y).item() < before


def test_the_forward_to_rerun_names_the_origin_of_a_nan():
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = GradFlow(model, probe_every_n_steps=None)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    x, y = _batch(0)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    monitor.before_step(optimizer, loss, rerun=lambda: model(x))
    monitor.after_step()
    monitor.close()
    [alert] = [a for a in monitor.alerts if a.kind == "nonfinite"]
    assert "first non-finite value in the forward pass of step 0" in alert.message
    assert alert.details["origin_module"] == "2"


def test_the_epoch_and_the_clip_value_reach_the_detectors():
    model = _net()
    monitor = GradFlow(model, probe_every_n_steps=None)
    _train(monitor, model, 100, epoch=3, clip_norm=1e-9)  # every step's norm is above 1e-9
    monitor.close()  # steps 51..99 are judged here, with the last step's epoch and clip value
    [clipping] = [a for a in monitor.alerts if a.kind == "always_clipping"]
    assert (clipping.step, clipping.epoch, clipping.threshold) == (99, 3, 0.9)


def test_close_decides_a_raise_still_pending():
    model = _net()
    monitor = GradFlow(model, on_alert="raise", probe_every_n_steps=None)
    _train(monitor, model, 3, nan_at=1)  # judged at the next check step, after the run
    with pytest.raises(GradientPathologyError, match="nonfinite"):
        monitor.close()


def test_an_error_inside_with_is_not_replaced_but_its_steps_are_judged():
    model = _net()
    monitor = GradFlow(model, on_alert="raise", probe_every_n_steps=None)
    with pytest.raises(KeyError, match="the loop's own error"), monitor:
        _train(monitor, model, 3, nan_at=1)
        raise KeyError("the loop's own error")
    assert [a.kind for a in monitor.alerts] == ["nonfinite"]


def _fabric(**kwargs) -> L.Fabric:
    fabric = L.Fabric(accelerator="cpu", devices=1, **kwargs)
    fabric.launch()
    return fabric


def test_fabric_scalars_reach_a_csv_logger_and_no_file_is_left_without_one(tmp_path):
    from lightning.fabric.loggers import CSVLogger

    fabric = _fabric(loggers=CSVLogger(tmp_path, name="csv", version=0))
    model = _net()
    monitor = FabricGradFlow(fabric, model, log_every_n_steps=1, probe_every_n_steps=None)
    _train(monitor, model, 3, nan_at=1)
    monitor.close()
    fabric.logger.finalize("success")
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "grad_flow/gamma" in header.split(",")
    assert not list(tmp_path.rglob("gradflow_alerts.jsonl"))  # the working directory too


def test_fabric_stops_through_its_strategy_and_takes_a_plain_module(tmp_path):
    from lightning.fabric.loggers import TensorBoardLogger

    fabric = _fabric(loggers=TensorBoardLogger(tmp_path, name="tb", version=0))
    model = _net()  # not passed through fabric.setup
    monitor = FabricGradFlow(
        fabric, model, on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None
    )
    assert _train(monitor, model, 5, nan_at=1) == 1
    monitor.close()
    lines = (tmp_path / "tb" / "version_0" / "gradflow_alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["nonfinite"]


def test_a_monitor_that_never_stepped_closes_cleanly():
    monitor = GradFlow(_net(), probe_every_n_steps=None)
    monitor.close()
    assert monitor.alerts == [] and monitor.global_step == 0


def test_steps_judged_when_new_parameters_arrive_keep_the_clip_value():
    """A module added at step 60 makes the engine judge steps 51-59 early: with the last
    batch's clip value, so the clipping window still counts every step."""
    model = nn.Module()
    model.net = _net()
    optimizer = torch.optim.SGD(model.net.parameters(), lr=0.01)
    monitor = GradFlow(model, probe_every_n_steps=None)
    with pytest.warns(GradFlowWarning, match="new parameters at step 60"):
        for step in range(100):
            if step == 60:
                model.head = nn.Linear(1, 1)
                optimizer.add_param_group({"params": list(model.head.parameters())})
            x, y = _batch(step)
            out = model.net(x) if step < 60 else model.head(model.net(x))
            loss = nn.functional.mse_loss(out, y)
            loss.backward()
            monitor.before_step(optimizer, loss)
            optimizer.step()
            monitor.after_step(epoch=0, clip_norm=1e-9)
            optimizer.zero_grad()
        monitor.close()
    [clipping] = [a for a in monitor.alerts if a.kind == "always_clipping"]
    assert clipping.step == 99
