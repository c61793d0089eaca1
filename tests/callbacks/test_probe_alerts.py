"""Activation probes through GradFlowMonitor: same alert stream, probe steps only."""

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import (
    Regressor,
    StepCounter,
    mlp,
    quiet_trainer,
    regression_loader,
)


def _relu_mlp(bias: float) -> nn.Sequential:
    torch.manual_seed(0)
    net = mlp(depth=3, width=64, act=nn.ReLU)
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.constant_(layer.bias, bias)
    return net


def _fit(net: nn.Module, tmp_path, loader: DataLoader | None = None, **kwargs):
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=2, **kwargs)
    logger = CSVLogger(tmp_path, name="csv", version=0)
    quiet_trainer(callbacks=[monitor], logger=logger, max_steps=10).fit(
        Regressor(net, lr=1e-3), loader or regression_loader(n=512, batch_size=32)
    )
    return monitor, logger


def test_dead_relus_reach_monitor_alerts(tmp_path):
    monitor, _ = _fit(_relu_mlp(bias=-3.0), tmp_path)
    assert "dead_relu" in monitor.alert_counts
    alert = next(a for a in monitor.alerts if a.kind == "dead_relu")
    assert alert.step == 4  # probe steps 0, 2, 4: patience of three probe steps
    assert alert.layers[0].startswith("net.")
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "probe/dead_relu/net.1" in header


def test_healthy_relus_stay_silent(tmp_path):
    monitor, _ = _fit(_relu_mlp(bias=0.0), tmp_path)
    assert monitor.alert_counts == {}


def test_hooks_exist_only_during_probe_steps(tmp_path):
    seen: list[tuple[int, int]] = []

    class Spy(Regressor):
        def training_step(self, batch, batch_idx):
            hooks = sum(len(m._forward_hooks) for m in self.modules())
            seen.append((self.global_step, hooks))
            return super().training_step(batch, batch_idx)

    monitor = GradFlowMonitor(probe_every_n_steps=3)
    model = Spy(_relu_mlp(0.0))
    quiet_trainer(callbacks=[monitor], max_steps=7).fit(
        model, regression_loader(n=512, batch_size=32)
    )
    assert [step for step, hooks in seen if hooks] == [0, 3, 6]
    assert all(not m._forward_hooks for m in model.modules())


def test_probes_off():
    monitor = StepCounter(probe_every_n_steps=None, log_every_n_steps=1)
    quiet_trainer(callbacks=[monitor], max_steps=2).fit(
        Regressor(_relu_mlp(-3.0)), regression_loader()
    )
    assert len(monitor.records) == 2  # the run was monitored
    assert not any(key.startswith("probe/") for key in monitor.kept.scalar_keys)
    assert monitor.alert_counts == {}  # the dead ReLUs are not probed


def _cnn(dead_channels: int) -> nn.Sequential:
    """A 1-D ReLU CNN whose first ``dead_channels`` of 16 channels never fire."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(4, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 1),
    )
    nn.init.kaiming_normal_(net[0].weight, nonlinearity="relu")
    nn.init.zeros_(net[0].bias)
    with torch.no_grad():
        net[0].bias[:dead_channels] = -10.0  # seven standard deviations below zero
    return net


def _sequences(n: int = 320, batch_size: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, 24, generator=generator)
    return DataLoader(TensorDataset(x, x.mean(dim=(1, 2)).unsqueeze(1)), batch_size=batch_size)


def test_dead_channels_of_a_cnn_reach_monitor_alerts(tmp_path):
    """The units of an (N, C, L) map after a conv are its channels: 12 of 16 dead is 75 %, each
    judged on 32 samples x 24 positions."""
    monitor, _ = _fit(_cnn(dead_channels=12), tmp_path, _sequences())
    assert set(monitor.alert_counts) == {"dead_relu"}
    alert = next(a for a in monitor.alerts if a.kind == "dead_relu")
    assert (alert.step, alert.layers, alert.value) == (4, ("net.1",), 0.75)
    assert alert.message.startswith("net.1: 75% of units dead (zero on all 768 rows)")


def test_healthy_cnn_stays_silent(tmp_path):
    monitor, _ = _fit(_cnn(dead_channels=0), tmp_path, _sequences())
    assert monitor.alert_counts == {}


def test_nan_activations_are_not_dead_relus(tmp_path):
    """After a NaN batch every weight, and so every activation, is NaN: nonfinite, not dead."""
    loader = regression_loader(n=512, batch_size=32)
    loader.dataset.tensors[0][32] = float("nan")  # batch 1
    monitor, _ = _fit(_relu_mlp(bias=0.0), tmp_path, loader)
    assert set(monitor.alert_counts) == {"nonfinite"}


class BinaryClassifier(pl.LightningModule):
    """A sigmoid classifier with a BCE loss module; ``training_step`` calls ``self(x)`` or
    ``self.net(x)``."""

    def __init__(self, net: nn.Module, through_forward: bool) -> None:
        super().__init__()
        self.net, self.loss = net, nn.BCELoss()
        self.through_forward = through_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        return self.loss(self(x) if self.through_forward else self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.05)


def _classifier(hidden_std: float | None) -> nn.Sequential:
    """Tanh hidden layer (Xavier), or a sigmoid hidden layer with weights of ``hidden_std``."""
    torch.manual_seed(0)
    hidden = nn.Tanh() if hidden_std is None else nn.Sigmoid()
    net = nn.Sequential(nn.Linear(2, 32), hidden, nn.Linear(32, 1), nn.Sigmoid())
    if hidden_std is not None:
        nn.init.normal_(net[0].weight, std=hidden_std)
    return net


def _separable(n: int = 2048, batch_size: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=generator)
    x[:, 0] += 3 * torch.sign(x[:, 0])
    return DataLoader(TensorDataset(x, (x[:, :1] > 0).float()), batch_size=batch_size)


@pytest.mark.parametrize("through_forward", [True, False], ids=["self(x)", "self.net(x)"])
@pytest.mark.parametrize("hidden_std", [None, 5.0], ids=["healthy", "saturated_hidden"])
def test_saturated_output_sigmoid_is_exempt_however_it_is_called(
    tmp_path, through_forward, hidden_std
):
    """A converged binary classifier's final sigmoid is saturated by design: no alert, whether
    ``training_step`` goes through ``forward`` or not; a saturated hidden sigmoid still fires."""
    monitor = GradFlowMonitor(probe_every_n_steps=4)
    logger = CSVLogger(tmp_path, name="csv", version=0)
    quiet_trainer(callbacks=[monitor], logger=logger, max_steps=28).fit(
        BinaryClassifier(_classifier(hidden_std), through_forward), _separable()
    )
    with open(f"{logger.log_dir}/metrics.csv") as f:
        probed = [row for row in csv.DictReader(f) if row["probe/saturation/net.3"]]
    assert [int(row["step"]) for row in probed] == [0, 4, 8, 12, 16, 20, 24]
    assert float(probed[-1]["probe/saturation/net.3"]) > 0.9  # converged: saturated output
    if hidden_std is None:
        assert monitor.alert_counts == {}
    else:
        assert set(monitor.alert_counts) == {"saturation"}
        assert {a.layers for a in monitor.alerts} == {("net.1",)}
