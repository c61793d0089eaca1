"""Lightning wrapper that trains any forecasting network and scores it like the baselines.

The optimizer and the scheduler come in as factories, the way Hydra's ``_partial_: true`` builds
them (lightning-hydra-template): the module calls them with its parameters and its optimizer.

Example:
    >>> from functools import partial
    >>> from recipes.volatility.models import LSTM
    >>> forecaster = VolatilityForecaster(
    ...     LSTM(3, hidden=8), optimizer=partial(torch.optim.AdamW, lr=3e-3)
    ... )
    >>> type(forecaster.configure_optimizers()).__name__
    'AdamW'
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from recipes.volatility.baselines import FIT_SPLITS, har, split_origins
from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.metrics import evaluate_forecast, qlike
from recipes.volatility.validation import check_choice, fail

LOSSES = ("mse", "qlike")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


# the default optimizer: what conf/model/optimizer/adam.yaml builds
ADAM: OptimizerFactory = functools.partial(torch.optim.Adam, lr=1e-3)


def qlike_loss(log_target: torch.Tensor, log_forecast: torch.Tensor) -> torch.Tensor:
    """Mean QLIKE written in logs: ``exp(d) - d - 1`` with ``d = log_target - log_forecast``.

    Example:
        >>> round(qlike_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), 6)
        0.0
    """
    d = log_target - log_forecast
    return (torch.exp(d) - d - 1).mean()


def _check_real(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    """``ValueError`` (the validation wording) unless ``value`` is a finite real number (not a
    bool, not a string) for which ``ok`` holds.

    Example:
        >>> _check_real("lr", "abc", "a positive number", lambda v: v > 0)
        Traceback (most recent call last):
        ...
        ValueError: lr='abc' is not allowed: expected a positive number
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, value, allowed)
    if not math.isfinite(value) or not ok(value):
        fail(name, value, allowed)


def _check_factories(net: nn.Module, optimizer: object, scheduler: object) -> None:
    """Fail at construction, not at ``fit``: callables, a learning rate and weight decay that are
    numbers (Hydra passes ``model.optimizer.lr=abc`` as a string), and an optimizer (then a
    scheduler on it) that builds on ``net``'s parameters.

    Example:
        >>> from functools import partial
        >>> _check_factories(nn.Linear(1, 1), partial(torch.optim.SGD, lr=0), None)
        Traceback (most recent call last):
        ...
        ValueError: lr=0 is not allowed: expected a positive number
        >>> _check_factories(nn.Linear(1, 1), partial(torch.optim.SGD, momentum=-1), None)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: optimizer=functools.partial(...) is not allowed: ...Invalid momentum value: -1)
    """
    if not callable(optimizer):
        fail("optimizer", optimizer, "a callable params -> torch.optim.Optimizer (_partial_: true)")
    if scheduler is not None and not callable(scheduler):
        fail(
            "scheduler", scheduler, "null or a callable optimizer -> LRScheduler (_partial_: true)"
        )
    keywords = optimizer.keywords if isinstance(optimizer, functools.partial) else {}
    if "lr" in keywords:
        _check_real("lr", keywords["lr"], "a positive number", lambda v: v > 0)
    if "weight_decay" in keywords:
        _check_real(
            "weight_decay", keywords["weight_decay"], "a non-negative number", lambda v: v >= 0
        )
    try:
        trial = optimizer(net.parameters())
    except (TypeError, ValueError) as err:
        fail(
            "optimizer",
            optimizer,
            f"a factory that builds on the network's parameters ({type(err).__name__}: {err})",
        )
    if not isinstance(trial, torch.optim.Optimizer):
        fail("optimizer", optimizer, f"a torch.optim.Optimizer, not {type(trial).__name__}")
    if scheduler is not None:
        try:
            scheduler(trial)
        except (TypeError, ValueError) as err:
            fail(
                "scheduler",
                scheduler,
                f"a factory that builds on the optimizer ({type(err).__name__}: {err})",
            )


class VolatilityForecaster(pl.LightningModule):
    """Train ``net`` on log-variance targets; at test time score variance forecasts.

    The batch target is the (optionally z-scored) log Parkinson target of a
    :class:`VolatilityDataModule`; ``setup`` reads its ``target_affine`` to map outputs back to
    logs. At test start ``residual_var`` (``s^2``, variance of the training residuals in logs) is
    measured on the chronological train loader; the variance forecast is ``exp(yhat + s^2 / 2)``.
    Test metrics (``test/qlike``, ``test/mse_log``, ``test/mz_r2``, ``test/qlike_ratio_har``
    against HAR fit on train + validation) are logged and kept in ``test_metrics``; the forecasts
    in ``test_predictions``. Testing assumes a single device (predictions are not gathered).

    Args:
        net: maps ``(batch, window, features)`` to ``(batch,)``.
        optimizer: called with the parameters, returns the optimizer, e.g.
            ``functools.partial(torch.optim.Adam, lr=1e-3)`` (Hydra: ``_partial_: true``).
        scheduler: ``None`` or called with the optimizer, returns an ``LRScheduler`` stepped per
            epoch (``ReduceLROnPlateau`` watches ``val/loss``).
        loss: ``mse`` on the batch target or ``qlike`` on the variance scale.

    Raises:
        ValueError: for an unknown loss; an optimizer or scheduler that is not callable; an
            ``lr`` keyword that is not a positive finite number or a ``weight_decay`` one that is
            not a non-negative finite one (strings such as Hydra's ``model.optimizer.lr=abc``
            included); an optimizer that torch refuses to build on ``net``'s parameters (or a
            scheduler on that optimizer), named with its value and torch's reason.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory = ADAM,
        scheduler: SchedulerFactory | None = None,
        loss: str = "mse",
    ) -> None:
        super().__init__()
        check_choice("loss", loss, LOSSES)
        _check_factories(net, optimizer, scheduler)
        # the factories stay out of hparams (and so out of checkpoints, which torch.load reads
        # with weights_only=True): the run's config holds them
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.register_buffer("target_loc", torch.tensor(0.0))
        self.register_buffer("target_scale", torch.tensor(1.0))
        self.register_buffer("residual_var", torch.tensor(float("nan")))
        self.test_metrics: dict[str, float] = {}
        self.test_predictions: dict[str, np.ndarray] = {}
        self._test_outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def to_log(self, output: torch.Tensor) -> torch.Tensor:
        """Map model outputs (batch-target scale) to log-variance forecasts."""
        return self.target_loc + self.target_scale * output

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if isinstance(datamodule, VolatilityDataModule):  # set up by the Trainer just before
            loc, scale = datamodule.target_affine
            self.target_loc.fill_(loc)
            self.target_scale.fill_(scale)

    def _loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "qlike":
            return qlike_loss(self.to_log(y), self.to_log(output))
        return nn.functional.mse_loss(output, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """``val/loss`` (the training loss) and ``val/qlike``: QLIKE of ``exp(log forecast)``,
        before the test's ``s^2 / 2`` correction, shown in the progress bar."""
        x, y = batch
        output = self(x)
        self.log("val/loss", self._loss(output, y), on_epoch=True, prog_bar=True)
        qlike_value = qlike_loss(self.to_log(y), self.to_log(output))
        self.log("val/qlike", qlike_value, on_epoch=True, prog_bar=True)

    def _datamodule(self) -> VolatilityDataModule:
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, VolatilityDataModule):
            raise RuntimeError("testing needs trainer.test(model, datamodule=VolatilityDataModule)")
        return datamodule

    def on_test_start(self) -> None:
        residuals = []
        with torch.no_grad():
            for x, y in self._datamodule().dataloader("train"):
                output = self(x.to(self.device))
                residuals.append(self.to_log(y.to(self.device)) - self.to_log(output))
        self.residual_var.fill_(torch.cat(residuals).double().var(correction=0).item())
        self._test_outputs = []

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._test_outputs.append(self.to_log(self(batch[0])).detach().double().cpu())

    def on_test_epoch_end(self) -> None:
        datamodule = self._datamodule()
        dates, log_target = datamodule.split_targets("test")
        log_forecast = torch.cat(self._test_outputs).numpy()
        if len(log_forecast) != len(log_target):
            raise RuntimeError(
                f"the test loop saw {len(log_forecast)} of {len(log_target)} test samples; "
                "run the whole test split (no limit_test_batches) to score it"
            )
        variance = np.exp(log_forecast + self.residual_var.item() / 2)
        realised = np.exp(log_target)
        fit = split_origins(datamodule.split_indices, FIT_SPLITS)
        origins = datamodule.split_indices["test"]
        har_fc = har(datamodule.proxy, fit, origins, datamodule.horizon)
        metrics = evaluate_forecast(realised, variance)
        metrics["qlike_ratio_har"] = metrics["qlike"] / qlike(realised, har_fc.variance)
        self.test_metrics = metrics
        self.test_predictions = {
            "date": dates,
            "log_target": log_target,
            "log_forecast": log_forecast,
            "variance_forecast": variance,
        }
        for name, value in metrics.items():
            self.log(f"test/{name}", value)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }
