"""A NaN alert names where the first non-finite value began, not only which gradients caught it."""

import warnings

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_gradflow import GradFlowMonitor
from tests.callbacks.test_run_lifecycle import nan_loader
from tests.helpers.lightning_models import Regressor, quiet_trainer, regression_loader


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class CountingRegressor(Regressor):
    """Counts its ``training_step`` calls and logs its loss like a user's module does."""

    calls = 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss


def log_model() -> CountingRegressor:
    """Healthy on ordinary data; a batch of huge inputs underflows the Softplus to exactly 0,
    so the ``log`` in the middle of the network returns -inf and the NaN spreads everywhere."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(8, 16), nn.Softplus(), Log(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)
    )
    return CountingRegressor(net, lr=0.01)


def huge_batch_loader(batch: int, n: int = 256, batch_size: int = 8):
    loader = regression_loader(n=n, batch_size=batch_size)
    loader.dataset.tensors[0][batch * batch_size : (batch + 1) * batch_size] *= 1e5
    return loader


def _fit(model, loader, tmp_path, **kwargs):
    monitor = GradFlowMonitor(probe_every_n_steps=None, **kwargs)
    trainer = quiet_trainer(logger=CSVLogger(tmp_path), callbacks=[monitor], max_steps=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader)
    return monitor


@pytest.mark.parametrize("check_every", [1, 50])
def test_the_module_and_op_that_made_the_first_nan_are_named(tmp_path, check_every):
    model = log_model()
    monitor = _fit(model, huge_batch_loader(batch=4), tmp_path, log_every_n_steps=check_every)
    [alert] = [a for a in monitor.alerts if a.kind == "nonfinite"]
    assert alert.step == 4
    # every gradient is NaN: the gradients alone point at the whole network
    assert alert.layers == ("net.0", "net.3", "net.5")
    assert alert.details["origin_module"] == "net.2" and alert.details["origin_op"] == "log"
    assert "first non-finite value in the forward pass of step 4: `net.2` (Log), in op `log`" in (
        alert.message
    )
    assert model.calls == 12 + 1  # one re-run, for the first bad step only


def test_nan_in_the_data_is_named_as_the_origin(tmp_path):
    model = log_model()
    monitor = _fit(model, nan_loader(nan_batch=3, n=256), tmp_path, log_every_n_steps=1)
    [alert] = monitor.alerts
    assert alert.step == 3 and "the input batch itself (NaN/Inf in the data)" in alert.message


def test_healthy_steps_are_never_re_run_and_the_run_is_unchanged(tmp_path):
    def final_parameters(locate: bool) -> list[torch.Tensor]:
        model = log_model()
        monitor = _fit(
            model, regression_loader(n=256, batch_size=8), tmp_path, locate_nan_origin=locate
        )
        assert model.calls == 12 and monitor.alerts == []
        return [p.detach().clone() for p in model.parameters()]

    for with_, without in zip(final_parameters(True), final_parameters(False), strict=True):
        assert torch.equal(with_, without)


def test_the_diagnosis_leaves_random_state_and_buffers_as_they_were(tmp_path):
    def run(locate: bool):
        torch.manual_seed(1)
        net = nn.Sequential(
            nn.Linear(8, 16),
            nn.BatchNorm1d(16),
            nn.Dropout(0.5),
            nn.Softplus(),
            Log(),
            nn.Linear(16, 1),
        )
        model = CountingRegressor(net, lr=0.0)  # lr 0: the weights stay finite after the NaN
        _fit(
            model,
            huge_batch_loader(batch=4),
            tmp_path,
            log_every_n_steps=1,
            locate_nan_origin=locate,
        )
        return torch.get_rng_state(), [b.clone() for b in model.buffers()]

    rng_with, buffers_with = run(True)
    rng_without, buffers_without = run(False)
    assert torch.equal(rng_with, rng_without)
    for a, b in zip(buffers_with, buffers_without, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_an_accelerator_the_origin_is_found_at_check_steps_only(tmp_path):
    # On CUDA, telling a NaN step apart costs a sync, so only check steps are looked at:
    # with every step checked the origin is found before the update spreads the NaN.
    model = log_model()
    monitor = GradFlowMonitor(probe_every_n_steps=None, log_every_n_steps=1)
    trainer = quiet_trainer(
        accelerator="cuda", logger=CSVLogger(tmp_path), callbacks=[monitor], max_steps=12
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, huge_batch_loader(batch=4))
    [alert] = [a for a in monitor.alerts if a.kind == "nonfinite"]
    assert alert.details["origin_module"] == "net.2" and alert.details["origin_op"] == "log"
