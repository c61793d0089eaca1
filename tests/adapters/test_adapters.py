"""One engine, every loop: a plain PyTorch loop, Fabric, ``lightning`` and ``pytorch_lightning``
each put scalars, histograms, the picture and alert text into real TensorBoard event files."""

import json
from pathlib import Path

import lightning as L
import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_gradflow.core.sinks import GradFlowWarning
from lightning_gradflow.fabric import FabricGradFlow
from lightning_gradflow.loop import GradFlow
from tests.callbacks.test_run_lifecycle import nan_loader
from tests.helpers.lightning_models import KeepRecords, mlp

NAN_STEP = 3
STEPS = 6
SETTINGS = dict(
    log_every_n_steps=1, histogram_every_n_steps=2, plot_every_n_steps=2, probe_every_n_steps=2
)


def _events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(
        str(log_dir),
        size_guidance={"histograms": 0, "images": 0, "scalars": 0, "tensors": 0},
    )
    events.Reload()
    return events


def assert_everything_arrived(log_dir: Path, layers: list[str], knows_length: bool) -> None:
    """Scalars every step, histograms and pictures every 2 (and at the last step when the loop
    tells the run's length), a picture of the trained net anyway, the NaN alert as text and
    JSON."""
    events = _events(log_dir)
    tags = events.Tags()
    assert [e.step for e in events.Scalars("grad_norm/total")] == list(range(STEPS))
    last = [STEPS - 1] if knows_length else []
    for i, layer in enumerate(layers):
        assert f"grad_log10_norm/{i:02d}.{layer}" in tags["scalars"]
        hists = events.Histograms(f"grad_log10_hist/{i:02d}.{layer}")
        assert [e.step for e in hists] == [0, 2, 4, *last]
    assert [e.step for e in events.Images("grad_flow/picture")] == [0, 2, 4, STEPS - 1]
    assert "probe/dead_relu/net.1" in tags["scalars"]
    [text] = events.Tensors("alerts/nonfinite/text_summary")
    assert text.step == NAN_STEP
    [line] = (log_dir / "gradflow_alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["step"] == NAN_STEP


def _net() -> nn.Module:
    torch.manual_seed(0)
    return mlp(depth=2, act=nn.ReLU)


LAYERS = ["net.0", "net.2", "net.4"]


def test_plain_pytorch_loop_with_a_summary_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model = nn.Module()
    model.net = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    writer = SummaryWriter(str(tmp_path))
    with GradFlow(model, tensorboard=writer, **SETTINGS) as monitor:
        for step, (x, y) in enumerate(nan_loader(NAN_STEP, n=256)):
            if step == STEPS:
                break
            loss = nn.functional.mse_loss(model.net(x), y)
            loss.backward()
            monitor.step(optimizer, loss)
            optimizer.zero_grad()
    writer.close()
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", NAN_STEP)]
    assert_everything_arrived(tmp_path, LAYERS, knows_length=False)


def test_plain_loop_stop_and_before_after_steps(tmp_path):
    model = nn.Module()
    model.net = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = GradFlow(model, log_dir=str(tmp_path), on_alert="stop", log_every_n_steps=1)
    steps = 0
    for x, y in nan_loader(NAN_STEP, n=256):
        loss = nn.functional.mse_loss(model.net(x), y)
        loss.backward()
        monitor.before_step(optimizer, loss)
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
        if monitor.after_step():
            break
    monitor.close()
    assert steps == NAN_STEP + 1 and monitor.should_stop
    assert (tmp_path / "gradflow_alerts.jsonl").exists()


def test_fabric_loop(tmp_path):
    from lightning.fabric.loggers import TensorBoardLogger

    fabric = L.Fabric(
        accelerator="cpu", devices=1, loggers=TensorBoardLogger(tmp_path, name="f", version=0)
    )
    fabric.launch()
    module = nn.Module()
    module.net = _net()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.05))
    monitor = FabricGradFlow(fabric, model, **SETTINGS)
    for step, (x, y) in enumerate(nan_loader(NAN_STEP, n=256)):
        if step == STEPS:
            break
        loss = nn.functional.mse_loss(model.net(x), y)
        fabric.backward(loss)
        monitor.step(optimizer, loss)
        optimizer.zero_grad()
    monitor.close()
    fabric.logger.finalize("success")
    assert [layer.name for layer in monitor.engine.layers] == LAYERS  # no wrapper prefixes
    assert_everything_arrived(tmp_path / "f" / "version_0", LAYERS, knows_length=False)


class LightningRegressor(L.LightningModule):
    """The tests' regressor, for the unified package's Trainer."""

    def __init__(self):
        super().__init__()
        self.net = _net()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class PlRegressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = _net()

    training_step = LightningRegressor.training_step
    configure_optimizers = LightningRegressor.configure_optimizers


@pytest.mark.parametrize("package", ["lightning", "pytorch_lightning"])
def test_lightning_packages(tmp_path, package):
    if package == "lightning":
        from lightning.pytorch.loggers import TensorBoardLogger

        from lightning_gradflow.lightning import GradFlowMonitor

        trainer_cls, model = L.Trainer, LightningRegressor()
    else:
        from pytorch_lightning.loggers import TensorBoardLogger

        from lightning_gradflow import GradFlowMonitor

        trainer_cls, model = pl.Trainer, PlRegressor()
    monitor = GradFlowMonitor(**SETTINGS)
    trainer = trainer_cls(
        accelerator="cpu",
        devices=1,
        max_steps=STEPS,
        logger=TensorBoardLogger(tmp_path, name="l", version=0),
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, nan_loader(NAN_STEP, n=256))
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", NAN_STEP)]
    assert_everything_arrived(tmp_path / "l" / "version_0", LAYERS, knows_length=True)


@pytest.mark.parametrize("action", ["stop", "raise"])
def test_lightning_ddp_ranks_act_together_and_rank_zero_writes(tmp_path, action):
    from tests.helpers.subprocess_runs import run_module

    run_module("tests.scripts.ddp_lightning", str(tmp_path), action)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 6  # NaN batch at step 5, no rank hangs
    assert ranks[0]["raised"] == ranks[1]["raised"] == (action == "raise")
    assert ranks[0]["alerts"] == ranks[1]["alerts"] == 1
    log_dir = tmp_path / "tb" / "version_0"
    [line] = (log_dir / "gradflow_alerts.jsonl").read_text().splitlines()  # written once
    assert json.loads(line)["kind"] == "nonfinite"
    events = _events(log_dir)
    assert [e.step for e in events.Histograms("grad_log10_hist/00.net.0")] == [0, 5]
    assert "probe/saturation/net.1" in events.Tags()["scalars"]


def test_plain_loop_resume_continues_the_streak_and_counts(tmp_path):
    """A checkpointed GradFlow resumes mid-run with the same alerts as an unbroken run."""

    def run(stop_at: int | None, state=None):
        torch.manual_seed(0)
        model = nn.Module()
        model.net = _net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        monitor = GradFlow(model, log_every_n_steps=1, probe_every_n_steps=None)
        if state is not None:
            model.load_state_dict(state["model"])
            monitor.load_state_dict(state["monitor"])
        for step, (x, y) in enumerate(nan_loader(NAN_STEP, n=256)):
            if step < monitor.global_step:
                continue
            if step == 8 or step == stop_at:
                break
            loss = nn.functional.mse_loss(model.net(x), y)
            loss.backward()
            monitor.step(optimizer, loss)
            optimizer.zero_grad()
        monitor.close()
        return monitor, {"model": model.state_dict(), "monitor": monitor.state_dict()}

    whole, _ = run(None)
    _, state = run(5)
    resumed, _ = run(None, state)
    assert [(a.kind, a.step) for a in resumed.alerts] == [(a.kind, a.step) for a in whole.alerts]
    assert resumed.engine.alert_counts == whole.engine.alert_counts == {"nonfinite": 5}
    assert resumed.gradient_summary()["nonfinite_grad_steps"] == 5


def test_parameters_reaching_the_optimizer_late_are_seen(tmp_path):
    """The optimizer's parameter lists are cached between steps, yet a group added mid-run
    and a parameter outside the model that only later gets a gradient are both noticed."""
    model = nn.Module()
    model.net = _net()
    model.head = nn.Linear(1, 1)
    outside = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([*model.net.parameters(), outside], lr=0.01)
    kept = KeepRecords()
    monitor = GradFlow(model, log_dir=str(tmp_path), sinks=[kept], log_every_n_steps=1)
    with pytest.warns(GradFlowWarning) as caught:
        for step in range(6):
            if step == 2:
                optimizer.add_param_group({"params": list(model.head.parameters())})
            loss = model.head(model.net(torch.randn(8, 8))).square().mean()
            if step >= 4:
                loss = loss + outside.sum()
            loss.backward()
            monitor.step(optimizer, loss)
            optimizer.zero_grad()
    monitor.close()
    head = [r.has_grad[-1] for r in kept.records]
    assert [layer.name for layer in monitor.engine.layers][-1] == "head"
    assert head == [False, False, True, True, True, True]
    [message] = [str(w.message) for w in caught]
    assert "new parameters at step 4" in message and "not part of the model" in message
