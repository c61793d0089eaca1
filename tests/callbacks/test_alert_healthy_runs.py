"""A monitor that cries wolf gets switched off: healthy runs that look unusual stay silent."""

import functools
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gradflow import DetectorConfig, GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


def _fit(
    model: pl.LightningModule,
    loader: DataLoader,
    steps: int,
    detectors: DetectorConfig | None = None,
    **trainer_kwargs,
):
    torch.manual_seed(0)
    monitor = GradFlowMonitor(
        log_every_n_steps=1,
        histogram_every_n_steps=None,
        plot_every_n_steps=None,
        detectors=detectors,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(callbacks=[monitor], max_steps=steps, max_epochs=-1, **trainer_kwargs).fit(
            model, loader
        )
    return monitor


def _silent(monitor: GradFlowMonitor) -> None:
    assert monitor.alert_counts == {}, [a.format() for a in monitor.alerts]


@pytest.mark.parametrize(
    ("optimizer", "lr"),
    [
        (torch.optim.Adam, 1e-3),
        (functools.partial(torch.optim.SGD, momentum=0.9), 0.05),
        (functools.partial(torch.optim.SGD, momentum=0.9, nesterov=True), 0.05),
    ],
    ids=["adam", "sgd_momentum", "sgd_nesterov"],
)
def test_zero_initialised_head(optimizer, lr):
    """Earlier layers get exactly zero gradient at step 0, then orders of magnitude more; the
    head's own updates are infinitely (step 0), then ~1.4 times (SGD momentum, step 1) its
    weights."""
    torch.manual_seed(0)
    net = mlp(depth=4, width=32, act=nn.ReLU)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    monitor = _fit(Regressor(net, optimizer=optimizer, lr=lr), regression_loader(256), 60)
    _silent(monitor)
    summary = monitor.gradient_summary()
    assert summary["zero_grad_share"] == [1 / 60] * 4 + [0.0]
    assert all(m is not None for m in summary["mean_log10_norm"])


class LayerScale(nn.Module):
    """Multiplies its input by a learned per-channel scale (CaiT/ConvNeXt ``gamma``)."""

    def __init__(self, width: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class NearZeroBranches(nn.Module):
    """Two residual branches that start switched off: LayerScale 1e-6 and ReZero (0)."""

    def __init__(self, width: int = 32, features: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(features, width)
        self.norm = nn.LayerNorm(width)
        self.branch = nn.Linear(width, width)
        self.scale = LayerScale(width, 1e-6)
        self.branch2 = nn.Linear(width, width)
        self.rezero = LayerScale(1, 0.0)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.scale(torch.relu(self.branch(self.norm(h))))
        h = h + self.rezero(torch.relu(self.branch2(h)))
        return self.head(h)


def test_near_zero_initialised_branches_under_adam():
    """Adam's first step moves every weight by ~lr: 1000x the LayerScale's 1e-6 (the ReZero
    scalar and the second branch's gradient are exactly zero at step 0)."""
    model = lambda: Regressor(NearZeroBranches(), optimizer=torch.optim.Adam, lr=1e-3)  # noqa: E731
    _silent(_fit(model(), regression_loader(256), 60))
    judged = _fit(model(), regression_loader(256), 2, DetectorConfig(weight_rms_floor=1e-7))
    [alert] = judged.alerts  # without the near-zero floor it would fire on the LayerScale
    assert (alert.step, alert.layers) == (0, ("net.scale",))


def test_high_adam_learning_rate_on_wide_layers():
    """Adam lr 1e-2 on 1024-wide layers: the first updates are ~0.5 times the weights."""
    net = mlp(depth=2, width=1024, act=nn.GELU)
    _silent(_fit(Regressor(net, optimizer=torch.optim.Adam, lr=1e-2), regression_loader(256), 30))


class LinearWarmUp(Regressor):
    """Adam with the LR ramped up linearly from 0 to 3e-2 over 20 steps."""

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=3e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, step / 20))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_learning_rate_warm_up():
    _silent(_fit(LinearWarmUp(mlp(depth=4, width=64, act=nn.ReLU)), regression_loader(512), 60))


class WithPlaceholders(nn.Module):
    """A layer kept in the loss at weight 0 (a DDP-friendly placeholder: exactly zero gradient
    on every step) and one never called (no gradient at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp(depth=3, width=32, act=nn.ReLU)
        self.aux = nn.Linear(8, 4)
        self.unused = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + 0.0 * self.aux(x).sum(dim=1, keepdim=True)


def test_layers_unused_on_purpose():
    monitor = _fit(
        Regressor(WithPlaceholders(), optimizer=torch.optim.Adam, lr=1e-3),
        regression_loader(256),
        60,
    )
    _silent(monitor)
    summary = monitor.gradient_summary()
    share = dict(zip(summary["layers"], summary["zero_grad_share"], strict=True))
    mean = dict(zip(summary["layers"], summary["mean_log10_norm"], strict=True))
    assert (share["net.aux"], share["net.unused"], share["net.body.0"]) == (1.0, None, 0.0)
    assert mean["net.aux"] is None and mean["net.body.0"] is not None


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
