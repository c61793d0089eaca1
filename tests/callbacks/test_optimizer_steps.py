"""Every optimizer step is seen once and every optimizer's layers are logged: GANs, LBFGS,
parameters added mid-fit."""

import csv
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_gradflow import GradFlowMonitor, GradFlowWarning
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


def _rows(logger: CSVLogger) -> list[dict]:
    with open(f"{logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def _values(rows: list[dict], column: str) -> dict[int, float]:
    return {int(r["step"]): float(r[column]) for r in rows if r.get(column)}


def _layer_tag(monitor: GradFlowMonitor, layer: str) -> str:
    return dict(zip([x.name for x in monitor.layers], monitor.layer_tags, strict=True))[layer]


class Gan(pl.LightningModule):
    """Manual optimization, discriminator then generator: global_step advances by 2 a batch."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.gen = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
        self.disc = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        gen_opt, disc_opt = self.optimizers()
        real = batch[0]
        fake = self.gen(torch.randn(len(real), 4))
        softplus = nn.functional.softplus
        d_loss = softplus(-self.disc(real)).mean() + softplus(self.disc(fake.detach())).mean()
        disc_opt.zero_grad()
        self.manual_backward(d_loss)
        disc_opt.step()
        g_loss = softplus(-self.disc(fake)).mean()
        gen_opt.zero_grad()
        self.manual_backward(g_loss)
        gen_opt.step()

    def configure_optimizers(self):
        return [
            torch.optim.Adam(self.gen.parameters(), 1e-3),
            torch.optim.Adam(self.disc.parameters(), 1e-3),
        ]


@pytest.mark.parametrize("every", [2, 4])
def test_every_optimizer_of_a_gan_is_logged_with_its_update_ratios(tmp_path, every):
    logger = CSVLogger(tmp_path)
    monitor = GradFlowMonitor(log_every_n_steps=every, probe_every_n_steps=None)
    quiet_trainer(logger=logger, callbacks=[monitor], max_steps=16).fit(
        Gan(), regression_loader(n=256, features=8, batch_size=8)
    )
    rows = _rows(logger)
    # each optimizer logs every `every` of its own steps: disc at 0, 2*every, ...; gen one later
    disc_steps = list(range(0, 16, 2 * every))
    gen_steps = [s + 1 for s in disc_steps]
    assert sorted(_values(rows, "grad_norm/total_optimizer1")) == disc_steps
    assert sorted(_values(rows, "grad_norm/total_optimizer0")) == gen_steps
    for layer, steps in (("disc.0", disc_steps), ("gen.0", gen_steps), ("gen.2", gen_steps)):
        ratios = _values(rows, f"update_ratio_log10/{_layer_tag(monitor, layer)}")
        assert sorted(ratios) == steps
        assert all(-6 < r < 0 for r in ratios.values())  # 0 < ||Δθ||/||θ|| < 1


class UpdateTracker(pl.Callback):
    """Measures each step's ||Δθ|| / ||θ|| of the first layer, from outside the monitor."""

    def __init__(self):
        self.ratios: dict[int, float] = {}

    @staticmethod
    def _first_layer(pl_module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in pl_module.net[0].parameters()])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = self._first_layer(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        delta = (self._first_layer(pl_module) - self.before).norm() / self.before.norm()
        self.ratios[trainer.global_step - 1] = float(delta)


class Lbfgs(Regressor):
    def configure_optimizers(self):
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=4)


def test_lbfgs_gives_one_record_per_step_with_the_whole_steps_update(tmp_path):
    logger = CSVLogger(tmp_path)
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    tracker = UpdateTracker()
    torch.manual_seed(0)
    model = Lbfgs(mlp(depth=2))
    first_batch = next(iter(regression_loader(n=64, batch_size=16)))
    with torch.no_grad():
        first_loss = float(model.training_step(first_batch, 0))
    quiet_trainer(logger=logger, callbacks=[monitor, tracker], max_steps=3).fit(
        model, regression_loader(n=64, batch_size=16)
    )
    rows = [r for r in _rows(logger) if r.get("grad_norm/total")]
    assert [int(r["step"]) for r in rows] == [0, 1, 2]  # one row per step, not per closure
    assert monitor.alert_counts == {}
    # the ratio covers all 4 inner iterations of the step (measured from outside)
    ratios = {step: 10**r for step, r in _values(rows, "update_ratio_log10/00.net.0").items()}
    assert ratios == pytest.approx(tracker.ratios, rel=1e-4)
    # the loss of the step is the first closure's (at the parameters the step started from)
    losses = monitor.state_dict()["detectors"]["loss_spike"]["losses"]
    assert len(losses) == 3 and losses[0] == pytest.approx(first_loss, rel=1e-5)


class Grows(Regressor):
    """Adds a layer at step 5 (re-creating the optimizer); its gradient turns NaN at step 8."""

    def __init__(self):
        super().__init__(mlp(depth=2))
        self.extra = None

    def forward(self, x):
        out = self.net(x)
        return out if self.extra is None else out + self.extra(x)

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == 5 and self.extra is None:
            self.extra = nn.Linear(8, 1)
            self.trainer.strategy.setup_optimizers(self.trainer)

    def on_after_backward(self):
        if self.global_step == 8:
            self.extra.weight.grad[0, 0] = float("nan")


def test_parameters_added_mid_fit_are_monitored_from_then_on(tmp_path):
    logger = CSVLogger(tmp_path)
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(logger=logger, callbacks=[monitor], max_steps=12).fit(
            Grows(), regression_loader(n=256, batch_size=8)
        )
    console = [str(w.message) for w in caught if issubclass(w.category, GradFlowWarning)]
    assert [layer.name for layer in monitor.layers] == ["net.0", "net.2", "net.4", "extra"]
    assert any("new parameters at step 5" in m and "new: extra" in m for m in console)
    [alert] = monitor.alerts
    assert (alert.kind, alert.step, alert.layers) == ("nonfinite", 8, ("extra",))
    assert monitor.layer_tags[-1] == "03.extra"
    extra = _values(_rows(logger), "grad_log10_norm/03.extra")
    assert sorted(extra) == list(range(5, 12))
    assert [math.isnan(extra[s]) for s in (7, 8, 9)] == [False, True, True]  # SGD spread it
    summary = monitor.gradient_summary()
    assert summary["layers"] == ["net.0", "net.2", "net.4", "extra"]
    assert all(m is not None for m in summary["mean_log10_norm"])
