"""On a CUDA device, steps that log nothing never wait for the device.

``torch.cuda.set_sync_debug_mode("error")`` turns every synchronising call (``.item()``, a
device-to-host copy, ``nonzero``, a blocking host-to-device copy) into an error; it is on only
around the monitor's own calls, so the model and the optimizer may do as they like.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_gradflow import GradFlowMonitor
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@contextmanager
def no_sync():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_engine_steps_that_log_nothing_never_synchronise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.LayerNorm(32), nn.Linear(32, 1)).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine = GradFlowEngine(log_every_n_steps=50)  # defaults otherwise: probes, histograms...
    engine.start(RunContext(sinks=[]))
    engine.watch(model)
    x = torch.randn(16, 8, device="cuda")
    quiet = range(2, 12)  # step 0 sets up and is logged; its records are judged at step 1
    for step in range(12):
        guard = no_sync if step in quiet else nullcontext
        with guard():
            engine.forward_start(step, x)
        loss = model(x).square().mean()
        with guard():
            engine.loss(loss)
        loss.backward()
        with guard():
            engine.before_optimizer_step(model, optimizer, step, rerun=lambda: model(x))
        optimizer.step()
        optimizer.zero_grad()
        with guard():
            engine.after_optimizer_step()
            engine.end_batch(StepInfo(step))
    engine.finish(StepInfo(12))  # the pending steps are judged: all 12 are there
    assert engine.gradient_summary()["grad_norm_max"] > 0


HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)


def _guarded(monitor: GradFlowMonitor, quiet: range) -> GradFlowMonitor:
    """The monitor's per-step hooks run in error mode on the global steps in ``quiet``."""

    def wrap(hook):
        def guarded(trainer, *args, **kwargs):
            if trainer.global_step in quiet:
                with no_sync():
                    return hook(trainer, *args, **kwargs)
            return hook(trainer, *args, **kwargs)

        return guarded

    for name in HOOKS:
        setattr(monitor, name, wrap(getattr(monitor, name)))
    return monitor


def test_lightning_steps_that_log_nothing_never_synchronise(tmp_path):
    monitor = _guarded(GradFlowMonitor(), quiet=range(2, 40))  # logs at 0 and 50
    trainer = quiet_trainer(
        accelerator="cuda", devices=1, logger=CSVLogger(tmp_path), callbacks=[monitor], max_steps=45
    )
    trainer.fit(Regressor(mlp(depth=3)), regression_loader(n=45 * 8, batch_size=8))
    assert monitor.engine.optimizer_steps == {0: 45}
    assert monitor.alerts == []
