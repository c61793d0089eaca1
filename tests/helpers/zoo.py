"""The alert zoo: short real training runs, pathological and healthy, on simulated volatility data.

Each case trains a model from ``recipes.volatility`` on the seeded GARCH(1,1)
simulator (no download, no ``arch``) with a GradFlowMonitor that checks every step, and records
which alert kinds fired, when, and the first non-finite loss.

Print the zoo table (used in the closing notes): ``python -m tests.helpers.zoo``
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_gradflow import GradFlowMonitor
from recipes.volatility import (
    LSTM,
    MLP,
    ResidualMLP,
    Transformer,
    VanillaRNN,
    VolatilityDataModule,
    VolatilityForecaster,
)

# the networks the cases name (test data: the recipes themselves name classes in conf/model)
NETS: dict[str, type[torch.nn.Module]] = {
    "mlp": MLP,
    "resnet": ResidualMLP,
    "transformer": Transformer,
    "lstm": LSTM,
    "rnn": VanillaRNN,
}
# SGD as the zoo trains it (conf/model/optimizer/sgd.yaml)
SGD = partial(torch.optim.SGD, momentum=0.9)


class LossRecorder(pl.Callback):
    """Training loss of every batch, as seen by the Trainer."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class NanGradientAt(pl.Callback):
    """Turns the gradient of one layer's weight into NaN at one step (a broken backward op)."""

    def __init__(self, step: int, layer: str) -> None:
        self.step = step
        self.layer = layer
        self._handle = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            weight = pl_module.get_submodule(self.layer).weight
            self._handle = weight.register_hook(lambda g: torch.full_like(g, float("nan")))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class ScaleBatchAt(pl.Callback):
    """Multiplies the inputs (``part=0``) or targets (``part=1``) of the batches at some steps: a
    feed that delivers another unit."""

    def __init__(self, steps: range, part: int, factor: float) -> None:
        self.steps = steps
        self.part = part
        self.factor = factor

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps:
            batch[self.part].mul_(self.factor)


@dataclass
class ZooRun:
    """What one run of the zoo produced."""

    name: str
    monitor: GradFlowMonitor
    losses: list[float]
    seconds: float

    @property
    def kinds(self) -> set[str]:
        return set(self.monitor.alert_counts)

    @property
    def first_step(self) -> dict[str, int]:
        first: dict[str, int] = {}
        for alert in self.monitor.alerts:
            first.setdefault(alert.kind, alert.step)
        return first

    @property
    def first_nonfinite_loss(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)


@dataclass
class ZooCase:
    """A network (a key of ``NETS``), its training settings and what the monitor should say."""

    name: str
    model: str
    model_kwargs: dict[str, Any]
    expected: set[str]
    also_allowed: set[str] = field(default_factory=set)
    window: int = 22
    steps: int = 40
    lr: float = 1e-3
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam  # called with params, lr
    batch_size: int = 64
    gradient_clip_val: float | None = None
    callbacks: Callable[[], list[pl.Callback]] = field(default=lambda: [])
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)

    def run(
        self,
        seed: int = 0,
        extra_callbacks: Sequence[pl.Callback] = (),
        ckpt_path: str | None = None,
        quiet: bool = True,
        **trainer_kwargs: Any,
    ) -> ZooRun:
        """Train the case for real (or resume it) and return what the monitor saw."""
        torch.set_num_threads(1)
        pl.seed_everything(seed, verbose=False)
        data = VolatilityDataModule(
            "garch_sim", window=self.window, batch_size=self.batch_size, sim_days=2500, seed=seed
        )
        net_cls = NETS[self.model]
        kwargs = dict(self.model_kwargs, input_dim=data.num_features)
        if net_cls in (MLP, ResidualMLP, Transformer):  # the networks that take the window
            kwargs["window"] = data.window
        optimizer = partial(self.optimizer, lr=self.lr)
        forecaster = VolatilityForecaster(net_cls(**kwargs), optimizer=optimizer)
        monitor_kwargs = dict(
            log_every_n_steps=1, histogram_every_n_steps=None, plot_every_n_steps=None
        )
        monitor = GradFlowMonitor(**{**monitor_kwargs, **self.monitor_kwargs})
        losses = LossRecorder()
        settings: dict[str, Any] = dict(
            accelerator="cpu",
            devices=1,
            max_steps=self.steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            gradient_clip_val=self.gradient_clip_val,
            default_root_dir=tempfile.mkdtemp(prefix="gradflow-zoo-"),  # the alerts file goes here
            callbacks=[monitor, losses, *self.callbacks(), *extra_callbacks],
        )
        settings.update(trainer_kwargs)
        start = time.perf_counter()
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            pl.Trainer(**settings).fit(forecaster, data, ckpt_path=ckpt_path)
        return ZooRun(self.name, monitor, losses.losses, time.perf_counter() - start)


RELU_MLP = {"depth": 5, "width": 64, "activation": "relu", "init": "he"}
TANH_MLP = {"depth": 4, "width": 32, "activation": "tanh"}
WRONG_UNITS_FIRST_BATCH = "tanh MLP, SGD, targets of the first batch in the wrong units (x1e6)"

PATHOLOGICAL = [
    ZooCase(
        "20-layer sigmoid MLP, default init",
        "mlp",
        {"depth": 20, "width": 32, "activation": "sigmoid"},
        {"vanishing"},
        steps=20,
    ),
    ZooCase(
        "tanh RNN, spectral radius 3, window 120",
        "rnn",
        {"hidden": 32, "recurrent_spectral_radius": 3.0},
        {"exploding"},
        window=120,
        steps=30,
    ),
    ZooCase(
        "ReLU MLP, NaN gradient in layers.linear3 at step 25",
        "mlp",
        RELU_MLP,
        {"nonfinite"},
        steps=30,
        callbacks=lambda: [NanGradientAt(25, "net.layers.linear3")],
    ),
    ZooCase(
        "LSTM clipped at gradient_clip_val=1e-4",
        "lstm",
        {"hidden": 32},
        {"always_clipping"},
        steps=110,
        gradient_clip_val=1e-4,
    ),
    ZooCase(
        "ReLU MLP, Adam lr 0.5 (far too high)",
        "mlp",
        RELU_MLP,
        {"exploding"},
        also_allowed={"loss_spike", "vanishing"},  # its first two ReLU layers die for a while
        lr=0.5,
    ),
    ZooCase(
        WRONG_UNITS_FIRST_BATCH,
        "mlp",
        TANH_MLP,
        {"exploding", "vanishing"},
        steps=30,
        optimizer=SGD,
        lr=1e-2,
        callbacks=lambda: [ScaleBatchAt(range(1), part=1, factor=1e6)],
    ),
    ZooCase(
        WRONG_UNITS_FIRST_BATCH + ", update ratios not logged",
        "mlp",
        TANH_MLP,
        {"exploding", "vanishing"},
        steps=12,
        optimizer=SGD,
        lr=1e-2,
        callbacks=lambda: [ScaleBatchAt(range(1), part=1, factor=1e6)],
        monitor_kwargs={"log_update_ratios": False},
    ),
    ZooCase(
        "tanh MLP, unnormalised inputs (x1e8) from step 20",
        "mlp",
        TANH_MLP,
        {"vanishing"},
        steps=35,
        callbacks=lambda: [ScaleBatchAt(range(20, 35), part=0, factor=1e8)],
    ),
]

HEALTHY = [
    ZooCase(
        "20-block residual MLP, ReLU + He init",
        "resnet",
        {"depth": 20, "width": 32, "activation": "relu", "init": "he"},
        set(),
        steps=40,
    ),
    ZooCase("LSTM, window 120", "lstm", {"hidden": 32}, set(), window=120, steps=40),
    ZooCase("LSTM clipped at 1.0", "lstm", {"hidden": 32}, set(), steps=110, gradient_clip_val=1.0),
    ZooCase(
        "pre-norm transformer",
        "transformer",
        {"depth": 4, "d_model": 16, "heads": 2, "norm_position": "pre", "dropout": 0.0},
        set(),
        steps=40,
    ),
]


def main() -> None:
    print("| case | kinds fired | first step fired | first non-finite loss | false alarms | s |")
    print("|---|---|---|---|---|---|")
    for case in PATHOLOGICAL + HEALTHY:
        run = case.run()
        fired = ", ".join(f"{k} ({run.monitor.alert_counts[k]}x)" for k in sorted(run.kinds))
        first = ", ".join(f"{k}: {s}" for k, s in run.first_step.items())
        false = ", ".join(sorted(run.kinds - case.expected - case.also_allowed)) or "none"
        print(
            f"| {case.name} | {fired or 'none'} | {first or '-'} | "
            f"{run.first_nonfinite_loss if run.first_nonfinite_loss is not None else '-'} | "
            f"{false} | {run.seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
