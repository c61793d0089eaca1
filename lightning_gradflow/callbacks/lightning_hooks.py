"""The Lightning callback's hooks, written once for ``pytorch_lightning`` and ``lightning``.

The two packages define distinct classes with the same names, so nothing here imports either:
each package's callback (:mod:`~lightning_gradflow.callbacks.gradflow_monitor`,
:mod:`~lightning_gradflow.lightning`) subclasses :class:`GradFlowHooks` and its own
``Callback``, naming its own logger and strategy classes in :class:`Framework`. The hooks only
translate: the Trainer's moments become :class:`~lightning_gradflow.engine.GradFlowEngine`
calls, its loggers become sinks, and a ``"stop"`` becomes ``trainer.should_stop``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_gradflow.core.alerts import Action, Alert, GradientPathologyError
from lightning_gradflow.core.detectors import DetectorConfig
from lightning_gradflow.core.histograms import LogBins
from lightning_gradflow.core.layers import Granularity
from lightning_gradflow.core.probes import ProbeConfig
from lightning_gradflow.core.schedule import Interval
from lightning_gradflow.core.sinks import ConsoleSink, GradFlowWarning, Sink
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo
from lightning_gradflow.writers.alert_file import AlertFile
from lightning_gradflow.writers.logger import LoggerScalars


@dataclass(frozen=True)
class Framework:
    """One Lightning package's classes the hooks need."""

    tensorboard_logger: type
    wandb_logger: type
    fsdp_strategy: type


class GradFlowHooks:
    """Lightning hooks over a :class:`GradFlowEngine` (``self.engine``); the settings are the
    engine's, plus ``sinks``: extra outputs beside the Trainer's loggers."""

    framework: Framework
    engine: GradFlowEngine

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        histogram_every_n_steps: Interval = "auto",
        plot_every_n_steps: Interval = "auto",
        granularity: Granularity = "layer",
        log_weight_norms: bool = True,
        log_update_ratios: bool = True,
        linear_histogram_bins: int | None = None,
        histogram_bins: LogBins | Mapping[str, Any] | None = None,
        sharded: bool | None = None,
        detectors: DetectorConfig | Mapping[str, Any] | None = None,
        disable: Sequence[str] = (),
        on_alert: Action = "warn",
        actions: Mapping[str, Action] | None = None,
        check_every_n_steps: int | None = None,
        probe_every_n_steps: int | None = 500,
        probes: ProbeConfig | Mapping[str, Any] | None = None,
        locate_nan_origin: bool = True,
        flow_log10_range: tuple[float, float] | None = None,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.engine = GradFlowEngine(
            log_every_n_steps=log_every_n_steps,
            histogram_every_n_steps=histogram_every_n_steps,
            plot_every_n_steps=plot_every_n_steps,
            granularity=granularity,
            log_weight_norms=log_weight_norms,
            log_update_ratios=log_update_ratios,
            linear_histogram_bins=linear_histogram_bins,
            histogram_bins=histogram_bins,
            sharded=sharded,
            detectors=detectors,
            disable=disable,
            on_alert=on_alert,
            actions=actions,
            check_every_n_steps=check_every_n_steps,
            probe_every_n_steps=probe_every_n_steps,
            probes=probes,
            locate_nan_origin=locate_nan_origin,
            flow_log10_range=flow_log10_range,
        )
        self.extra_sinks = list(sinks)

    def __getattr__(self, name: str) -> Any:
        """The settings (``log_every_n_steps``, ``detector_config``, ...) live on the engine."""
        engine = self.__dict__.get("engine")
        if engine is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(engine, name)

    # --- results, as the engine has them ---------------------------------------------------

    @property
    def alerts(self) -> list[Alert]:
        """Every announced alert of the current (or last) fit, in order; same on every rank."""
        return self.engine.alerts

    @property
    def alert_counts(self) -> dict[str, int]:
        """Occurrences per kind, including those not re-announced during a cooldown."""
        return self.engine.alert_counts

    @property
    def layers(self) -> list:
        """The monitored layers in depth order (known after the first step)."""
        return self.engine.layers

    def gradient_summary(self) -> dict[str, Any]:
        """See :meth:`GradFlowEngine.gradient_summary`."""
        return self.engine.gradient_summary()

    @property
    def state_key(self) -> str:
        # Only what changes the meaning of the state: a resume with another logging interval
        # keeps its detector state.
        return self._generate_state_key(granularity=self.engine.granularity)

    def state_dict(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.engine.load_state_dict(state_dict)

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        """Adopt this monitor's state saved under an older or differently configured key."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        candidates = [key for key in states if str(key).startswith(type(self).__qualname__)]
        if len(candidates) == 1:
            self.load_state_dict(states[candidates[0]])
        elif candidates:
            self.engine.warn_once(
                "checkpoint keys",
                f"GradFlowMonitor: the checkpoint holds {len(candidates)} monitor states "
                f"({candidates}) and none under {self.state_key!r}; starting detectors afresh.",
            )

    # --- hooks ------------------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective: call on all ranks
        strategy = trainer.strategy
        self.engine.start(
            RunContext(
                sinks=self._sinks(trainer, str(log_dir)) if trainer.is_global_zero else (),
                is_rank_zero=trainer.is_global_zero,
                world_size=trainer.world_size,
                reduce_any=lambda flag: strategy.reduce_boolean_decision(flag, all=False),
                sharded=isinstance(strategy, self.framework.fsdp_strategy),
            ),
            log_every_n_steps=trainer.log_every_n_steps,
        )
        self._held_minimums: dict[str, Any] = {}
        self._stop_requested = False
        if not trainer.loggers:
            self.engine.warn_once(
                "no logger",
                "GradFlowMonitor: the Trainer has no logger, so gradient norms, histograms and "
                "pictures are computed but not shown (alerts still work). Pass "
                "`logger=TensorBoardLogger(...)` (or WandbLogger/CSVLogger) to see them.",
            )

    def _sinks(self, trainer: Any, log_dir: str) -> list[Sink]:
        """Console, every logger's scalars, TensorBoard/W&B pictures, then the alerts file."""
        from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter
        from lightning_gradflow.writers.wandb_writer import WandbWriter

        sinks: list[Sink] = [ConsoleSink()]
        for logger in trainer.loggers:
            if isinstance(logger, self.framework.tensorboard_logger):
                sinks.append(TensorBoardWriter.for_logger(logger))  # scalars in one event
                continue
            sinks.append(LoggerScalars(logger))
            if isinstance(logger, self.framework.wandb_logger):
                sinks.append(WandbWriter(logger.experiment))
        return [*sinks, AlertFile.in_dir(log_dir), *self.extra_sinks]

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.engine.expect_steps(_total_steps(trainer))
        self.engine.watch(pl_module, trainer.global_step, len(trainer.optimizers))

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self.engine.forward_start(trainer.global_step, batch)
        self._batch = (batch, idx)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        self.engine.loss(loss)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        rerun = None
        if pl_module.automatic_optimization and getattr(self, "_batch", None) is not None:
            batch, idx = self._batch
            rerun = lambda: _muted_training_step(pl_module, batch, idx)  # noqa: E731
        self.engine.before_optimizer_step(
            pl_module, optimizer, trainer.global_step, _optimizer_index(trainer, optimizer), rerun
        )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._batch = None
        if self.engine.end_batch(self._info(trainer)) == "stop" or self._stop_requested:
            self._request_stop(trainer)  # asked again each step until Lightning honours it

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.engine.finish(self._info(trainer))
        self._give_back_minimums()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """The run dies (an error, Ctrl-C): judge and report every pending step first."""
        if isinstance(exception, GradientPathologyError):
            self.engine.release()
        else:
            self.engine.finish(self._info(trainer), interrupted=True)
        self._give_back_minimums()

    # --- Lightning specifics ----------------------------------------------------------------

    @staticmethod
    def _info(trainer: Any) -> StepInfo:
        clip = trainer.gradient_clip_val
        by_norm = trainer.gradient_clip_algorithm in (None, "norm")
        return StepInfo(
            step=trainer.global_step,
            epoch=trainer.current_epoch,
            clip_norm=float(clip) if clip and by_norm else None,
            amp_scaler=getattr(trainer.precision_plugin, "scaler", None) is not None,
        )

    def _request_stop(self, trainer: Any) -> None:
        """End training now, also below the Trainer's ``min_steps``/``min_epochs``.

        Those minimums keep early stopping on a metric from ending a run too soon; a gradient
        pathology the user asked to stop on overrides them (given back when the run ends).
        """
        trainer.should_stop = True
        if self._stop_requested:
            return
        self._stop_requested = True
        overridden = []
        fit_loop = trainer.fit_loop
        for owner, name, reached in (
            (fit_loop, "min_epochs", fit_loop.epoch_progress.current.processed),
            (fit_loop.epoch_loop, "min_steps", trainer.global_step),
        ):
            minimum = getattr(owner, name, None)
            if minimum and reached < minimum:
                self._held_minimums[name] = (owner, minimum)
                setattr(owner, name, None)
                overridden.append(f"{name}={minimum}")
        kinds = self.engine.stop_kinds
        note = f"; overriding the Trainer's {' and '.join(overridden)}" if overridden else ""
        if trainer.is_global_zero:
            warnings.warn(
                f"GradFlowMonitor: stopping training at step {trainer.global_step} "
                f"({', '.join(kinds) or 'alert on another rank'}){note}.",
                GradFlowWarning,
                stacklevel=2,
            )

    def _give_back_minimums(self) -> None:
        for name, (owner, value) in getattr(self, "_held_minimums", {}).items():
            setattr(owner, name, value)
        self._held_minimums = {}


def _optimizer_index(trainer: Any, optimizer: Any) -> int:
    for index, candidate in enumerate(trainer.optimizers):
        if candidate is optimizer or getattr(candidate, "optimizer", candidate) is optimizer:
            return index
    return 0


def _muted_training_step(pl_module: Any, batch: Any, batch_idx: int) -> object:
    """``training_step`` again with ``self.log``/``self.log_dict`` muted (for a diagnosis)."""
    names = ("log", "log_dict")
    for name in names:
        setattr(pl_module, name, lambda *args, **kwargs: None)
    try:
        return pl_module.training_step(batch, batch_idx)
    finally:
        for name in names:
            delattr(pl_module, name)


def _total_steps(trainer: Any) -> int | None:
    """The optimizer steps the fit will take, if the Trainer can tell (``max_steps``, or
    ``max_epochs`` times the batches per epoch)."""
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # an iterable dataset without length, no limit: unknown
        return None
    return int(total) if math.isfinite(total) and total > 0 else None
