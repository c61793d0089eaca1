"""GradFlow for a plain PyTorch training loop: no framework, a few lines.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> monitor = GradFlow(model, log_every_n_steps=1)   # tensorboard=SummaryWriter(...)
    >>> for _ in range(3):
    ...     loss = model(torch.randn(16, 4)).pow(2).mean()
    ...     loss.backward()
    ...     if monitor.step(optimizer, loss):   # reads the gradients, steps, judges
    ...         break                           # a "stop" alert
    ...     optimizer.zero_grad()
    >>> monitor.close()
    >>> monitor.alerts
    []
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.sinks import ConsoleSink, Sink
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo


class GradFlow:
    """Watches one model in a loop you write; outputs to the writers you pass.

    Args:
        model: the model being trained.
        tensorboard: a ``torch.utils.tensorboard.SummaryWriter`` (scalars, histograms, the
            picture, alert text).
        wandb_run: a ``wandb`` run (the same, as W&B media and ``run.alert``).
        log_dir: where ``gradflow_alerts.jsonl`` goes (a path or an fsspec URL); defaults to
            the SummaryWriter's directory.
        sinks: further outputs (:class:`~lightning_gradflow.core.sinks.Sink`).
        run: ranks and the cross-rank reduction, under DDP (the default is one process).
        **settings: those of :class:`lightning_gradflow.GradFlowMonitor` (intervals,
            thresholds, ``on_alert``, ...); ``log_every_n_steps`` defaults to 50.

    Call :meth:`step` once per optimizer step (or :meth:`before_step`, your own
    ``optimizer.step()`` or ``scaler.step(optimizer)``, then :meth:`after_step`) and
    :meth:`close` at the end; used as a context manager, ``close`` happens on exit, and a loop
    that dies in it still gets its pending steps judged.
    """

    def __init__(
        self,
        model: nn.Module,
        tensorboard: Any = None,
        wandb_run: Any = None,
        log_dir: str | None = None,
        sinks: Sequence[Sink] = (),
        run: RunContext | None = None,
        **settings: Any,
    ) -> None:
        self.engine = GradFlowEngine(**settings)
        self.model = model
        outputs: list[Sink] = [ConsoleSink()]
        if tensorboard is not None:
            from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter

            outputs.append(TensorBoardWriter(tensorboard, scalars=True))
            log_dir = log_dir or tensorboard.log_dir
        if wandb_run is not None:
            from lightning_gradflow.writers.wandb_writer import WandbWriter

            outputs.append(WandbWriter(wandb_run, scalars=True))
        if log_dir is not None:
            from lightning_gradflow.writers.alert_file import AlertFile

            outputs.append(AlertFile.in_dir(log_dir))
        run = run or RunContext()
        run.sinks = [*outputs, *sinks, *run.sinks]
        self.engine.start(run)
        self.engine.watch(model)
        self.global_step = 0
        self.should_stop = False
        self._last = StepInfo(0)  # the epoch and clip value the last step was judged with
        self._optimizers: list[torch.optim.Optimizer] = []
        self.engine.forward_start(0)

    @property
    def alerts(self) -> list[Alert]:
        """Every announced alert, in order."""
        return self.engine.alerts

    def gradient_summary(self) -> dict[str, Any]:
        """See :meth:`~lightning_gradflow.engine.GradFlowEngine.gradient_summary`."""
        return self.engine.gradient_summary()

    def state_dict(self) -> dict[str, Any]:
        """Detector windows, alert counts, clocks and the run summary, for your checkpoint."""
        return {**self.engine.state_dict(), "global_step": self.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (call before the first step)."""
        self.engine.load_state_dict(state)
        self.global_step = int(state["global_step"])

    def before_step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor | None = None,
        rerun: Callable[[], object] | None = None,
    ) -> None:
        """Gradients are final (after ``backward`` and unscaling, before clipping): read them.

        ``rerun`` re-runs this batch's forward pass; given, a NaN step names its origin.
        """
        if loss is not None:
            self.engine.loss(loss)
        if not any(o is optimizer for o in self._optimizers):
            self._optimizers.append(optimizer)
        index = next(i for i, o in enumerate(self._optimizers) if o is optimizer)
        self.engine.before_optimizer_step(self.model, optimizer, self.global_step, index, rerun)

    def after_step(self, epoch: int | None = None, clip_norm: float | None = None) -> bool:
        """The optimizer has stepped: judge what is due. Returns whether to stop training."""
        info = self._last = StepInfo(self.global_step, epoch=epoch, clip_norm=clip_norm)
        action = self.engine.end_batch(info)
        self.global_step += 1
        self.engine.forward_start(self.global_step)  # probes for the next forward, if due
        self.should_stop = self.should_stop or action == "stop"
        return self.should_stop

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor | None = None,
        closure: Callable[[], Any] | None = None,
    ) -> bool:
        """:meth:`before_step`, ``optimizer.step(closure)``, :meth:`after_step`; True: stop."""
        self.before_step(optimizer, loss)
        optimizer.step(closure) if closure is not None else optimizer.step()
        return self.after_step()

    def close(self, interrupted: bool = False) -> None:
        """Judge and report every pending step (with the last step's epoch and clip value);
        remove the monitor's hooks."""
        self.engine.finish(replace(self._last, step=self.global_step), interrupted=interrupted)

    def __enter__(self) -> GradFlow:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        self.close(interrupted=error is not None)
