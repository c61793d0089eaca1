"""On a CUDA device, steps that log nothing never wait for the device.

``torch.cuda.set_sync_debug_mode("error")`` turns every synchronising call (``.item()``, a
device-to-host copy, ``nonzero``, a blocking host-to-device copy) into an error; it is on only
around the monitor's own calls, so the model and the optimizer may do as they like.

Which steps log nothing follows from the schedule, and the Lightning test's list of them runs
on the CPU too, with every copy to the host made an error there instead: so the list is checked
here even where no device is lent.
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

gpu = pytest.mark.gpu
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@contextmanager
def no_sync():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@contextmanager
def no_copy_to_host(monkeypatch: pytest.MonkeyPatch):
    """The CPU stand-in for :func:`no_sync`: the monitor's copy of its records to the host (the
    only synchronising call of a flush) is an error."""

    def refuse(*args, **kwargs):
        raise AssertionError("a step that logs nothing copied its records to the host")

    with monkeypatch.context() as patch:
        patch.setattr("lightning_gradflow.core.collector.copy_to_host", refuse)
        yield


@gpu
@cuda_only
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


def _guarded(monitor: GradFlowMonitor, quiet: list[int], guard) -> GradFlowMonitor:
    """The monitor's per-step hooks run under ``guard`` on the batches of the steps in ``quiet``.

    The hooks before the update see the batch's step as ``trainer.global_step``; at the end of
    the batch the optimizer has stepped and ``global_step`` is one more.
    """

    def wrap(name, hook):
        after_update = name == "on_train_batch_end"

        def guarded(trainer, *args, **kwargs):
            if trainer.global_step - after_update in quiet:
                with guard():
                    return hook(trainer, *args, **kwargs)
            return hook(trainer, *args, **kwargs)

        return guarded

    for name in HOOKS:
        setattr(monitor, name, wrap(name, getattr(monitor, name)))
    return monitor


STEPS = 45
# Scalars and checks every 50 (the Trainer's interval), so at step 0; histograms every 5 and
# pictures every 10 (set, not "auto", whose time budget may postpone them) and at the last
# step. Step 1 reads the weights again (the step after a check); 2, 3, 4, 6, ... log nothing.
DUE = {0, 1, *range(0, STEPS, 5), STEPS - 1}
QUIET = [step for step in range(STEPS) if step not in DUE]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[gpu, cuda_only])])
def test_lightning_steps_that_log_nothing_never_synchronise(tmp_path, monkeypatch, device):
    guard = no_sync if device == "cuda" else (lambda: no_copy_to_host(monkeypatch))
    outputs = GradFlowMonitor(histogram_every_n_steps=5, plot_every_n_steps=10)
    monitor = _guarded(outputs, QUIET, guard)
    trainer = quiet_trainer(
        accelerator=device,
        devices=1,
        logger=CSVLogger(tmp_path),
        callbacks=[monitor],
        max_steps=STEPS,
    )
    trainer.fit(Regressor(mlp(depth=3)), regression_loader(n=STEPS * 8, batch_size=8))
    assert monitor.engine.optimizer_steps == {0: STEPS}
    assert monitor.alerts == []
