"""RunSummary: what a recipe run needs from inside ``fit``, written to a file by rank zero;
ProgressBar: the single run's console display.

Under ``ddp_spawn`` the fit runs in worker processes and the callbacks of the launching process
never see it, so the gradient summary and alerts are handed over as ``gradflow_summary.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gradflow import GradFlowMonitor
from lightning_gradflow.core.norms import squared_norms_by_layer
from recipes.dashboards import config_markdown

SUMMARY_FILE = "gradflow_summary.json"


def _grad_norm(module: torch.nn.Module) -> torch.Tensor | None:
    """Total gradient norm as the monitor measures it (any float or complex dtype, sparse too)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return None
    return squared_norms_by_layer(grads, [0] * len(grads), num_layers=1)[0].sqrt()


class RunSummary(Callback):
    """Logs the run config, tracks the largest gradient norms, and writes the gradient summary.

    Args:
        output_dir: where rank zero writes ``gradflow_summary.json`` at the end of training.
        config: the resolved run config, logged once as hyperparameters to every logger (the
            W&B run config; TensorBoard's ``hparams.yaml``) and, on TensorBoard, as the text
            ``config`` (YAML).

    ``grad_norm_max`` and ``nonfinite_grad_steps`` (before clipping) come from the monitor's
    :meth:`~lightning_gradflow.GradFlowMonitor.gradient_summary`; this callback adds
    ``applied_grad_norm_max``, the largest total norm after clipping, i.e. what the optimizer
    used (measured at batch end, on device, only on steps that took an optimizer step).
    """

    def __init__(self, output_dir: str | Path, config: Mapping[str, Any] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.config = dict(config or {})
        self._applied: torch.Tensor | None = None
        self._stepped = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._applied = None
        self._stepped = False
        if trainer.is_global_zero and self.config:
            for logger in trainer.loggers:
                logger.log_hyperparams(self.config)
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_text("config", config_markdown(self.config), 0)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._stepped = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._stepped:  # mid-accumulation: the gradients are not final yet
            return
        self._stepped = False
        norm = _grad_norm(pl_module)  # after clipping; zeroed only before the next backward
        if norm is not None:
            norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
            self._applied = norm if self._applied is None else torch.maximum(self._applied, norm)

    def summary(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Gradient summary of the run's GradFlowMonitor plus alerts and training progress."""
        monitor = next((c for c in trainer.callbacks if isinstance(c, GradFlowMonitor)), None)
        out: dict[str, Any] = {
            "monitored": monitor is not None,
            "grad_norm_max": None,
            "applied_grad_norm_max": _item(self._applied),
            "nonfinite_grad_steps": None,
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "alert_counts": {},
            "alerts": [],
        }
        if monitor is not None:
            out.update(monitor.gradient_summary())
            out["alerts"] = [
                {"kind": a.kind, "severity": a.severity, "step": a.step, "message": a.message}
                for a in monitor.alerts
            ]
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_score is not None:
            out["best_val_loss"] = float(checkpoint.best_model_score)
        return out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """A fit that dies (e.g. ``on_alert=raise``) still leaves its summary so far."""
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        summary = self.summary(trainer)  # no collectives inside: safe on every rank
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, one line per epoch: progress, ``train/loss``, ``val/loss`` and
    ``val/qlike`` (the metrics logged with ``prog_bar=True``), without the logger's version."""

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def _item(value: torch.Tensor | None) -> float | None:
    if value is None:
        return None
    number = float(value.item())
    return number if math.isfinite(number) else None
