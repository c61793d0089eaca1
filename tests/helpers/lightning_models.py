"""Tiny Lightning modules and data shared by the callback tests."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gradflow import GradFlowMonitor, Sink


def regression_loader(
    n: int = 64, features: int = 8, batch_size: int = 16, seed: int = 0
) -> DataLoader:
    """A fixed random regression problem, in order (no shuffling)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = x.sum(dim=1, keepdim=True).tanh() + 0.1 * torch.randn(n, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


class Regressor(pl.LightningModule):
    """Wraps any ``nn.Module`` mapping (batch, features) -> (batch, 1) with an MSE loss."""

    def __init__(
        self,
        net: nn.Module,
        lr: float = 0.05,
        optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.optimizer_cls = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return self.optimizer_cls(params, lr=self.lr)


def mlp(depth: int = 4, width: int = 16, features: int = 8, act: type[nn.Module] = nn.Tanh):
    """A plain MLP as an ``nn.Sequential`` of Linear/activation pairs and a Linear head."""
    layers: list[nn.Module] = []
    size = features
    for _ in range(depth):
        layers += [nn.Linear(size, width), act()]
        size = width
    layers.append(nn.Linear(size, 1))
    return nn.Sequential(*layers)


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer without progress bar, model summary or checkpoints."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        max_epochs=1,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


class KeepRecords(Sink):
    """An output that keeps every judged step's record and the scalar names it was sent."""

    def __init__(self):
        self.records = []
        self.scalar_keys: set[str] = set()

    def record(self, record):
        self.records.append(record)

    def scalars(self, step, metrics):
        self.scalar_keys.update(metrics)


class StepCounter(GradFlowMonitor):
    """A monitor with a :class:`KeepRecords` output, so the tests can look at the records."""

    def __init__(self, **kwargs):
        self.kept = KeepRecords()
        super().__init__(sinks=[self.kept], **kwargs)

    @property
    def records(self):
        return self.kept.records
