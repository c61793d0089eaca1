"""A monitor that cries wolf gets switched off: healthy runs that look unusual stay silent."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


def _fit(model: pl.LightningModule, loader: DataLoader, steps: int, **trainer_kwargs):
    torch.manual_seed(0)
    monitor = GradFlowMonitor(
        log_every_n_steps=1, histogram_every_n_steps=None, plot_every_n_steps=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(callbacks=[monitor], max_steps=steps, max_epochs=-1, **trainer_kwargs).fit(
            model, loader
        )
    return monitor


def _silent(monitor: GradFlowMonitor) -> None:
    assert monitor.alert_counts == {}, [a.format() for a in monitor.alerts]


def test_zero_initialised_head():
    """Earlier layers get exactly zero gradient at first, then orders of magnitude more."""
    torch.manual_seed(0)
    net = mlp(depth=4, width=32, act=nn.ReLU)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    _silent(_fit(Regressor(net, optimizer=torch.optim.Adam, lr=1e-3), regression_loader(256), 60))


def test_loss_converging_to_zero():
    """A learnable target: the loss and every gradient become tiny, uniformly across layers."""
    x = torch.randn(256, 8)
    y = x @ torch.linspace(-1, 1, 8).unsqueeze(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = Regressor(nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 1)), lr=0.05)
    monitor = _fit(model, loader, 300)
    _silent(monitor)


def test_heavy_tailed_targets_with_tiny_batches():
    """Student-t(2) noise and batches of 4: single-batch losses 50x the median are normal."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 8, generator=generator)
    noise = torch.distributions.StudentT(2.0).sample((2000, 1))
    y = x[:, :1] + noise
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    monitor = _fit(Regressor(mlp(depth=3), optimizer=torch.optim.Adam, lr=1e-3), loader, 300)
    _silent(monitor)


def test_frozen_backbone_fine_tuning_with_accumulation():
    net = mlp(depth=4, width=32)
    for layer in list(net)[:-1]:
        layer.requires_grad_(False)
    monitor = _fit(
        Regressor(net, lr=0.05), regression_loader(512, batch_size=8), 40, accumulate_grad_batches=4
    )
    _silent(monitor)
    assert monitor.layers[-1].name == "net.8"


class WarmRestarts(Regressor):
    """SGD with cosine annealing and warm restarts every 40 steps: the LR jumps back up."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=40)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_warm_restarts():
    _silent(_fit(WarmRestarts(mlp(depth=4, act=nn.ReLU)), regression_loader(512), 160))


def test_bf16_autocast():
    _silent(
        _fit(
            Regressor(mlp(), optimizer=torch.optim.Adam, lr=1e-3),
            regression_loader(256),
            60,
            precision="bf16-mixed",
        )
    )


def _fp16(init_scale: float) -> MixedPrecision:
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return MixedPrecision("16-mixed", device="cpu", scaler=scaler)


def test_float16_grad_scaler_calibrating_is_not_an_alarm():
    """The scaler starts too high, skips a few steps with Inf gradients, then settles."""
    plugin = _fp16(2.0**22)
    monitor = _fit(
        Regressor(mlp(depth=4), optimizer=torch.optim.Adam, lr=1e-3),
        regression_loader(512, batch_size=16),
        30,
        plugins=[plugin],
    )
    _silent(monitor)
    skipped = 22 - int(torch.log2(torch.tensor(plugin.scaler.get_scale())))
    assert 1 <= skipped < 10  # Inf gradients did happen, fewer times than the patience


def test_float16_grad_scaler_that_never_settles_is_an_alarm():
    monitor = _fit(
        Regressor(mlp(depth=4), optimizer=torch.optim.Adam, lr=1e-3),
        regression_loader(512, batch_size=16),
        30,
        plugins=[_fp16(2.0**60)],
    )
    assert set(monitor.alert_counts) == {"nonfinite"}
    assert "under AMP" in monitor.alerts[0].message


@pytest.mark.parametrize("steps", [1, 5])
def test_runs_shorter_than_any_window(steps):
    _silent(_fit(Regressor(mlp()), regression_loader(), steps))
