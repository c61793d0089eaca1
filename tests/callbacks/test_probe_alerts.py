"""Activation probes through GradFlowMonitor: same alert stream, probe steps only."""

import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

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


def _fit(net: nn.Module, tmp_path, **kwargs):
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=2, **kwargs)
    logger = CSVLogger(tmp_path, name="csv", version=0)
    quiet_trainer(callbacks=[monitor], logger=logger, max_steps=10).fit(
        Regressor(net, lr=1e-3), regression_loader(n=512, batch_size=32)
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
