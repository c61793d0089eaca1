"""GradFlowMonitor: per-layer gradient norms, histograms and the gradient-flow picture.

The callback is thin: Lightning hooks feed a
:class:`~lightning_gradflow.core.collector.GradientCollector` (pure torch), and what comes out
goes to every logger the Trainer has.

Example:
    >>> from pytorch_lightning import Trainer
    >>> from lightning_gradflow import GradFlowMonitor
    >>> trainer = Trainer(callbacks=[GradFlowMonitor(histogram_every_n_steps=200)])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import ALERT_KINDS, Action, Alert, GradientPathologyError
from lightning_gradflow.core.collector import GradientCollector, StepRecord
from lightning_gradflow.core.compiled import eager_forward
from lightning_gradflow.core.detectors import (
    GRADIENT_KINDS,
    DetectorConfig,
    GradientDetectors,
    StepContext,
)
from lightning_gradflow.core.flow import fit_depth_profile
from lightning_gradflow.core.histograms import LogBins
from lightning_gradflow.core.layers import (
    GRANULARITIES,
    ForwardOrderRecorder,
    Granularity,
    Layer,
    group_parameters,
)
from lightning_gradflow.core.nan_origin import NonfiniteOrigin, locate_nonfinite_origin
from lightning_gradflow.core.probes import (
    PROBE_ALERT_KINDS,
    ActivationProbes,
    ProbeConfig,
    ProbeDetectors,
    ProbeStats,
)
from lightning_gradflow.core.validation import (
    as_config,
    check_choice,
    check_count,
    check_flag,
    check_kinds,
)
from lightning_gradflow.writers.alert_file import AlertFile, join
from lightning_gradflow.writers.base import Writer

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
ALERTS_FILE = "gradflow_alerts.jsonl"


class GradFlowWarning(UserWarning):
    """The category of the console warnings an alert prints (filter it like any warning)."""


def _clean_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


class GradFlowMonitor(Callback):
    """Logs how the gradient flows through every layer, at a cost small enough to leave on.

    Every optimizer step, per-layer gradient norms are computed on the device in a few batched
    kernels and kept there; on logged steps everything pending is copied to the host at once.

    Logged scalars (to every logger, at ``log_every_n_steps``):
    ``grad_norm/total``, ``grad_norm/<layer>``, ``weight_norm/<layer>``, ``update_ratio/<layer>``
    (``||Δθ|| / ||θ||`` of that step's update) and ``grad_nonfinite/layers``.
    Histograms of log10|g| per layer (``grad_hist/<layer>``) go to TensorBoard and W&B every
    ``histogram_every_n_steps``; the gradient-flow picture (``grad_flow``) every
    ``plot_every_n_steps``.

    Args:
        log_every_n_steps: scalar logging interval in optimizer steps; ``None`` takes the
            Trainer's ``log_every_n_steps``.
        histogram_every_n_steps: histogram interval; ``None`` turns histograms off.
        plot_every_n_steps: gradient-flow picture interval; ``None`` turns it off.
        granularity: ``"layer"`` (parameters grouped by owning module) or ``"block"`` (by
            element of the outermost ``ModuleList``/``Sequential``, for very deep models).
        log_weight_norms: log per-layer weight norms on logged steps.
        log_update_ratios: log per-layer update-to-weight ratios on logged steps (keeps a copy
            of the parameters for the duration of those steps).
        linear_histogram_bins: also log a histogram of raw gradient values with this many bins.
        histogram_bins: the log10 bins (default 1e-12 … 1e4, four per decade).
        sharded: plain parameters are FSDP1 shards: sum squared norms and histogram counts
            over ranks before reporting; ``None`` detects Lightning's ``FSDPStrategy``.
            ``DTensor`` parameters (FSDP2, tensor parallel) are detected and reduced anyway.
        detectors: thresholds of the gradient detectors (:class:`DetectorConfig`).
        disable: alert kinds not to detect, e.g. ``("always_clipping",)``.
        on_alert: ``"warn"`` (console, loggers, file), ``"stop"`` (also end training on every
            rank at the same step) or ``"raise"`` (``GradientPathologyError`` on every rank).
        actions: per-kind overrides of ``on_alert``, e.g. ``{"nonfinite": "raise"}``.
        check_every_n_steps: how often detectors judge the steps seen since the last check
            (each check is one small device-to-host copy); ``None``: at every logged step.
            Detectors always see every step; this sets how soon they speak.
        probe_every_n_steps: activation-probe interval (dead ReLUs, saturation, attention and
            rank collapse; see :mod:`lightning_gradflow.core.probes`); ``None`` turns probes
            off. Forward hooks exist only during the first forward pass of a probe step.
        probes: thresholds of the activation probes (:class:`ProbeConfig`).

    Raises:
        ValueError: for an interval that is not a positive integer, an unknown granularity,
            a bad number of bins, threshold, kind or action.

    Alerts are in :attr:`alerts` (in order), counted per kind in :attr:`alert_counts`, printed
    once on rank zero (category :class:`GradFlowWarning`), written as text to TensorBoard, as
    ``run.alert`` plus a logged record to W&B, as a scalar ``alerts/<kind>`` (running count) to
    every logger, and as a line of ``gradflow_alerts.jsonl`` in the run's log directory.
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        histogram_every_n_steps: int | None = 500,
        plot_every_n_steps: int | None = 500,
        granularity: Granularity = "layer",
        log_weight_norms: bool = True,
        log_update_ratios: bool = True,
        linear_histogram_bins: int | None = None,
        histogram_bins: LogBins | None = None,
        sharded: bool | None = None,
        detectors: DetectorConfig | None = None,
        disable: Sequence[str] = (),
        on_alert: Action = "warn",
        actions: Mapping[str, Action] | None = None,
        check_every_n_steps: int | None = None,
        probe_every_n_steps: int | None = 500,
        probes: ProbeConfig | None = None,
        locate_nan_origin: bool = True,
    ) -> None:
        check_count("log_every_n_steps", log_every_n_steps, allow_none=True)
        check_count("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        check_count("plot_every_n_steps", plot_every_n_steps, allow_none=True)
        check_count("linear_histogram_bins", linear_histogram_bins, allow_none=True)
        check_count("check_every_n_steps", check_every_n_steps, allow_none=True)
        check_count("probe_every_n_steps", probe_every_n_steps, allow_none=True)
        disable = check_kinds(disable, ALERT_KINDS, "alert kinds")
        check_choice("granularity", granularity, GRANULARITIES)
        check_flag("log_weight_norms", log_weight_norms)
        check_flag("log_update_ratios", log_update_ratios)
        check_flag("sharded", sharded, allow_none=True)
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.plot_every_n_steps = plot_every_n_steps
        self.granularity = granularity
        self.log_weight_norms = log_weight_norms
        self.log_update_ratios = log_update_ratios
        self.linear_histogram_bins = linear_histogram_bins
        self.histogram_bins = as_config("histogram_bins", histogram_bins, LogBins)
        self.sharded = sharded
        self._sharded = bool(sharded)
        self.check_every_n_steps = check_every_n_steps
        self.detector_config = as_config("detectors", detectors, DetectorConfig)
        self.probe_every_n_steps = probe_every_n_steps
        self.probe_config = as_config("probes", probes, ProbeConfig)
        self.on_alert = on_alert
        self.actions = actions
        check_flag("locate_nan_origin", locate_nan_origin)
        self.locate_nan_origin = locate_nan_origin
        self._gradient_disable = [k for k in disable if k in GRADIENT_KINDS]
        self._probe_disable = [k for k in disable if k in PROBE_ALERT_KINDS]
        self._log_every = log_every_n_steps or 50
        self._check_every = check_every_n_steps or self._log_every
        self._writers: list[Writer] = []
        self._eager: ExitStack | None = None
        self._warned: set[str] = set()
        self._reset_run()

    def _reset_run(self) -> None:
        """Forget a previous fit: a new fit starts clean (a resumed one reloads its state)."""
        self._detectors = GradientDetectors(self.detector_config, self._gradient_disable)
        self._probe_detectors = ProbeDetectors(self.probe_config, self._probe_disable)
        self._manager = AlertManager(
            self.on_alert, self.actions, self.detector_config.cooldown_steps
        )
        self._alert_file: AlertFile | None = None
        self.layers: list[Layer] = []
        self._order: list[str] | None = None
        self._collector: GradientCollector | None = None
        self._recorder: ForwardOrderRecorder | None = None
        self._probes: ActivationProbes | None = None
        self._probed_step: int | None = None
        self._probe_pending = False
        self._plans: list[_Plan] = []
        self._optimizer_steps: dict[int, int] = {}
        self._captured: tuple[int, int] | None = None
        self._unmonitored: set[int] = set()
        self._snapshot_pending = False
        self._flush_due = False
        self._batch: tuple[Any, int] | None = None
        self._nan_origins: dict[int, NonfiniteOrigin | None] = {}
        self._stop_requested = False
        self._held_minimums: dict[str, Any] = {}
        self._failed_sinks: set[str] = set()
        self._band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._log_sum: np.ndarray | None = None
        self._log_count: np.ndarray | None = None
        self._summary_names: list[str] = []
        self._max_total = float("nan")
        self._nonfinite_steps = 0

    @property
    def alerts(self) -> list[Alert]:
        """Every announced alert of the current (or last) fit, in order; same on every rank."""
        return self._manager.announced

    @property
    def alert_counts(self) -> dict[str, int]:
        """Occurrences per kind, including those not re-announced during a cooldown."""
        return dict(self._manager.counts)

    @property
    def state_key(self) -> str:
        # Only what changes the meaning of the state: a resume with another logging interval
        # keeps its detector state.
        return self._generate_state_key(granularity=self.granularity)

    # --- set-up -----------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset_run()
        self._log_every = self.log_every_n_steps or trainer.log_every_n_steps or 1
        self._check_every = self.check_every_n_steps or self._log_every
        from pytorch_lightning.strategies import FSDPStrategy

        self._sharded = (
            isinstance(trainer.strategy, FSDPStrategy) if self.sharded is None else self.sharded
        )
        self._writers = self._find_writers(trainer)
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective: call on all ranks
        if trainer.is_global_zero:
            self._alert_file = AlertFile(join(str(log_dir), ALERTS_FILE))
        if not trainer.loggers:
            rank_zero_warn(
                "GradFlowMonitor: the Trainer has no logger, so gradient norms, histograms and "
                "pictures are computed but not shown (alerts still work). Pass "
                "`logger=TensorBoardLogger(...)` (or WandbLogger/CSVLogger) to see them."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recorder = ForwardOrderRecorder(pl_module)
        if self.probe_every_n_steps is not None:
            self._probes = ActivationProbes(pl_module, self.probe_config)
        if not self._optimizer_steps and trainer.global_step:  # resumed without our state
            per_optimizer = trainer.global_step // max(len(trainer.optimizers), 1)
            self._optimizer_steps = dict.fromkeys(range(len(trainer.optimizers)), per_optimizer)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Adopt this monitor's state saved under an older or differently configured key."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        prefix = type(self).__qualname__
        candidates = [key for key in states if str(key).startswith(prefix)]
        if len(candidates) == 1:
            self.load_state_dict(states[candidates[0]])
        elif candidates:
            rank_zero_warn(
                f"GradFlowMonitor: the checkpoint holds {len(candidates)} monitor states "
                f"({candidates}) and none under {self.state_key!r}; starting detectors afresh."
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Attach the probes for the first forward pass of a probe step."""
        step = trainer.global_step
        self._batch = (batch, batch_idx)
        if (
            self._probes is not None
            and self._probes.sites
            and self._due(step, self.probe_every_n_steps)
            and self._probed_step != step
        ):
            self._probed_step = step
            self._probes.attach(histograms=self._due(step, self.histogram_every_n_steps))
            self._probe_pending = True
        hooked = self._recorder is not None or (
            self._probes is not None and self._probes.is_attached
        )
        if hooked and self._eager is None:  # a compiled model would not call the hooks
            self._eager = ExitStack()
            self._eager.enter_context(eager_forward())

    def _end_eager(self) -> None:
        if self._eager is not None:
            self._eager.close()
            self._eager = None

    def _ensure_collector(self, pl_module: pl.LightningModule) -> GradientCollector:
        if self._collector is None:
            if self._recorder is not None:
                self._order = self._recorder.order
                self._recorder.remove()
                self._recorder = None
            layers = group_parameters(pl_module, self._order, self.granularity)
            self.layers = [
                Layer(_clean_name(layer.name), layer.param_names, layer.params) for layer in layers
            ]
            if not self.layers:
                self._warn_once(
                    "no parameters",
                    "GradFlowMonitor: the model has no parameters; nothing to monitor.",
                )
            self._remap_summary([layer.name for layer in self.layers])
            self._collector = GradientCollector(
                self.layers,
                bins=self.histogram_bins,
                linear_bins=self.linear_histogram_bins,
                sharded=self._sharded,
            )
        return self._collector

    @staticmethod
    def _find_writers(trainer: pl.Trainer) -> list[Writer]:
        writers: list[Writer] = []
        if not trainer.is_global_zero:
            return writers
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter

                writers.append(TensorBoardWriter(logger.experiment))
            elif isinstance(logger, WandbLogger):
                from lightning_gradflow.writers.wandb_writer import WandbWriter

                writers.append(WandbWriter(logger.experiment))
        return writers

    # --- per-step hooks ---------------------------------------------------------------------

    @staticmethod
    def _due(step: int, every: int | None) -> bool:
        return every is not None and step % every == 0

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if self._probes is not None:
            self._probes.detach()  # before backward: activation checkpointing re-runs forwards
        self._ensure_collector(pl_module).add_loss(loss)
        self._end_eager()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        collector = self._ensure_collector(pl_module)
        step = trainer.global_step
        index = self._optimizer_index(trainer, optimizer)
        if self._captured == (step, index):  # LBFGS & co. evaluate the closure again
            collector.discard_loss()
            return
        self._finish_update()  # an earlier optimizer of this batch has stepped by now
        self._captured = (step, index)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self._has_new_parameters(params):
            collector = self._regroup(trainer, pl_module, params)
        elif self._recorder is not None and self._recorder.recorded:
            collector = self._rebuild(trainer, pl_module)  # the order, recorded again
        # Each optimizer keeps its own clock: with several optimizers global_step advances
        # once per optimizer step, and a shared clock would never log some of them.
        count = self._optimizer_steps.get(index, 0)
        self._optimizer_steps[index] = count + 1
        logged = self._due(count, self._log_every)
        histogram = self._due(count, self.histogram_every_n_steps)
        plot = self._due(count, self.plot_every_n_steps)
        checked = self._due(count, self._check_every)
        snapshot = logged and self.log_update_ratios
        collector.capture(
            step=step,
            params=params,
            optimizer_index=index,
            weights=logged and self.log_weight_norms,
            histograms=histogram,
            snapshot=snapshot,
        )
        self._plans.append(_Plan(log=logged, plot=plot))
        self._snapshot_pending = self._snapshot_pending or snapshot
        self._flush_due = self._flush_due or logged or histogram or plot or checked
        diagnose = self.locate_nan_origin and pl_module.automatic_optimization
        if diagnose and (checked or collector.on_host):  # free on the CPU; else a check step
            self._diagnose_if_nonfinite(pl_module, step)

    def _finish_update(self) -> None:
        if self._snapshot_pending and self._collector is not None:
            self._collector.after_optimizer_step()
        self._snapshot_pending = False

    @staticmethod
    def _optimizer_index(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> int:
        for index, candidate in enumerate(trainer.optimizers):
            inner = getattr(candidate, "optimizer", candidate)
            if candidate is optimizer or inner is optimizer:
                return index
        return 0

    def _has_new_parameters(self, params: Sequence[torch.nn.Parameter]) -> bool:
        known = self._collector.layer_of
        return any(
            p.grad is not None and id(p) not in known and id(p) not in self._unmonitored
            for p in params
        )

    def _regroup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, params: Sequence[Any]
    ) -> GradientCollector:
        """Parameters appeared mid-fit (a grown model, a re-created optimizer): regroup.

        The new layers' depth is known once a forward pass has run with them, so the forward
        order is recorded again on the next step and the layers are sorted once more.
        """
        before = {layer.name for layer in self.layers}
        collector = self._rebuild(trainer, pl_module)
        self._recorder = ForwardOrderRecorder(pl_module)
        added = [layer.name for layer in self.layers if layer.name not in before]
        outside = [p for p in params if id(p) not in collector.layer_of]
        self._unmonitored.update(id(p) for p in outside)
        message = f"GradFlowMonitor: new parameters at step {trainer.global_step}"
        if added:
            message += f"; now monitoring {len(self.layers)} layers (new: {', '.join(added)})"
        if outside:
            message += (
                f"; {len(outside)} optimizer parameter(s) are not part of the LightningModule "
                "and are not monitored"
            )
        rank_zero_warn(message, category=GradFlowWarning)
        return collector

    def _rebuild(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> GradientCollector:
        if self._collector is not None and self._collector.num_pending:
            self._handle(trainer, self._collector.flush())
        self._collector = None
        self._band = None
        return self._ensure_collector(pl_module)

    def _diagnose_if_nonfinite(self, pl_module: pl.LightningModule, step: int) -> None:
        """Before the update spreads it into the weights, find where a NaN/Inf began.

        Runs only when this step's gradients or loss are non-finite, at most once per alert
        cooldown (the alert it explains is announced once per cooldown too).
        """
        cooldown = self.detector_config.cooldown_steps
        if self._batch is None or any(step - d < cooldown for d in self._nan_origins):
            return
        if self._collector.last_step_is_finite():
            return
        batch, batch_idx = self._batch
        self._nan_origins[step] = _rerun_forward(pl_module, batch, batch_idx)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._end_eager()  # a step without backward (training_step returned None)
        self._batch = None
        self._captured = None
        self._finish_update()
        probe_alerts = self._handle_probes(trainer) if self._probe_pending else []
        if self._flush_due or probe_alerts:
            self._flush_due = False
            records = self._collector.flush() if self._collector is not None else []
            self._handle(trainer, records, probe_alerts=probe_alerts)
        if self._stop_requested:  # asked again each step until Lightning honours it
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, interrupted=False)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """The run dies (an error, Ctrl-C): judge and report every pending step first.

        Nothing here talks to other ranks (they may be gone), and no action is taken.
        """
        if not isinstance(exception, GradientPathologyError):
            self._finish(trainer, interrupted=True)
        else:
            self._release(trainer)

    def _finish(self, trainer: pl.Trainer, interrupted: bool) -> None:
        self._finish_update()
        probe_alerts: list[Alert] = []
        if self._probe_pending:
            probe_alerts = self._handle_probes(trainer, all_ranks=not interrupted)
        if self._collector is not None and (self._collector.num_pending or probe_alerts):
            records = self._collector.flush(all_ranks=not interrupted)
            self._handle(
                trainer, records, final=True, probe_alerts=probe_alerts, act=not interrupted
            )
        self._release(trainer)

    def _release(self, trainer: pl.Trainer) -> None:
        """Remove every hook and give Lightning back the minimums a stop overrode."""
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
        if self._probes is not None:
            self._probes.detach()
            self._probe_pending = False
        self._end_eager()
        self._batch = None
        for attribute, value in self._held_minimums.items():
            owner, name = attribute.rsplit(".", 1)
            setattr(_resolve(trainer, owner), name, value)
        self._held_minimums = {}

    # --- reporting --------------------------------------------------------------------------

    def _handle_probes(self, trainer: pl.Trainer, all_ranks: bool = True) -> list[Alert]:
        """Collect the probe step's statistics (one copy; summed over ranks), log, detect."""
        self._probe_pending = False
        self._probes.detach()
        stats: ProbeStats = self._probes.collect(all_ranks=all_ranks and trainer.world_size > 1)
        step = self._probed_step
        alerts = self._probe_detectors.update(step, trainer.current_epoch, stats)
        announced = self._manager.submit(
            [replace(a, layers=tuple(_clean_name(n) for n in a.layers)) for a in alerts]
        )
        if trainer.is_global_zero:
            self._announce(announced)
            scalars = {_clean_name(k): v for k, v in stats.scalars().items()}
            self._log_metrics(trainer, scalars, step)
            if stats.histograms:
                hists = {_clean_name(k): v for k, v in stats.histograms.items()}
                for writer in self._writers:
                    self._sink(writer, writer.histograms, step, hists)
        return announced

    def _handle(
        self,
        trainer: pl.Trainer,
        records: list[StepRecord],
        final: bool = False,
        probe_alerts: Sequence[Alert] = (),
        act: bool = True,
    ) -> None:
        plans, self._plans = self._plans[: len(records)], self._plans[len(records) :]
        multi = len(trainer.optimizers) > 1
        ctx = self._context(trainer)
        fresh: list[Alert] = list(probe_alerts)
        for record, plan in zip(records, plans, strict=True):
            self._update_band(record)
            alerts = [self._with_origin(a) for a in self._detectors.update(record, ctx)]
            announced = self._manager.submit(alerts)
            fresh += announced
            if not trainer.is_global_zero:
                continue
            self._announce(announced)
            if plan.log:
                self._log_scalars(trainer, record, multi)
            if record.log_histograms is not None:
                self._log_histograms(record)
            if plan.plot:
                self._log_picture(record)
        if act:
            self._act(trainer, fresh, final)

    def _with_origin(self, alert: Alert) -> Alert:
        """Name the module (and op) where a NaN/Inf began, if the step was diagnosed."""
        if alert.kind != "nonfinite":
            return alert
        cooldown = self.detector_config.cooldown_steps
        steps = [d for d in self._nan_origins if 0 <= d - alert.step < max(cooldown, 1)]
        if not steps or self._nan_origins[min(steps)] is None:
            return alert
        step = min(steps)
        origin = self._nan_origins[step]
        origin = replace(origin, module=_clean_name(origin.module))
        details = {**(alert.details or {}), "origin_module": origin.module, "origin_op": origin.op}
        message = (
            f"{alert.message}; first non-finite value in the forward pass of step {step}: "
            f"{origin.describe()}"
        )
        return replace(alert, message=message, details=details)

    def _context(self, trainer: pl.Trainer) -> StepContext:
        clip = trainer.gradient_clip_val
        by_norm = trainer.gradient_clip_algorithm in (None, "norm")
        return StepContext(
            layer_names=[layer.name for layer in self.layers],
            epoch=trainer.current_epoch,
            clip_norm=float(clip) if clip and by_norm else None,
            amp_scaler=getattr(trainer.precision_plugin, "scaler", None) is not None,
        )

    def _sink(self, sink: object, write: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run one output; a failing sink warns once and never takes the run down."""
        try:
            write(*args, **kwargs)
        except Exception as error:
            name = sink if isinstance(sink, str) else type(sink).__name__
            self._warn_once(
                f"sink {name}",
                f"GradFlowMonitor: writing to {name} failed ({type(error).__name__}: {error}); "
                "training goes on, and alerts stay in `monitor.alerts` and the other outputs.",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=GradFlowWarning)

    def _announce(self, alerts: list[Alert]) -> None:
        """Rank zero: console, backends and the JSON-lines file."""
        for alert in alerts:
            rank_zero_warn(alert.format(), category=GradFlowWarning)
            for writer in self._writers:
                self._sink(writer, writer.alert, alert)
            if self._alert_file is not None:
                line = {**alert.to_dict(), "count": self._manager.counts[alert.kind]}
                self._sink(self._alert_file.path, self._alert_file.append, line)

    def _log_metrics(self, trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            self._sink(logger, logger.log_metrics, metrics, step=step)

    def _act(self, trainer: pl.Trainer, fresh: list[Alert], final: bool) -> None:
        """Stop or raise on every rank together; the decision is reduced across ranks."""
        if not self._manager.may_interrupt:
            return
        action = self._manager.action(fresh)
        strategy = trainer.strategy
        must_raise = strategy.reduce_boolean_decision(action == "raise", all=False)
        must_stop = strategy.reduce_boolean_decision(action == "stop", all=False)
        if must_raise:
            raise GradientPathologyError(
                [a for a in fresh if self._manager.action_of(a) == "raise"] or fresh
            )
        if must_stop and not final and not self._stop_requested:
            self._request_stop(trainer, fresh)

    def _request_stop(self, trainer: pl.Trainer, fresh: list[Alert]) -> None:
        """End training at this step, also below the Trainer's ``min_steps``/``min_epochs``.

        Those minimums are meant to keep early stopping on a metric from ending a run too soon;
        a gradient pathology the user asked to stop on overrides them (restored at the end).
        """
        self._stop_requested = True
        trainer.should_stop = True
        overridden = []
        fit_loop = trainer.fit_loop
        for owner, name, reached in (
            ("fit_loop", "min_epochs", fit_loop.epoch_progress.current.processed),
            ("fit_loop.epoch_loop", "min_steps", trainer.global_step),
        ):
            target = _resolve(trainer, owner)
            minimum = getattr(target, name, None)
            if minimum and reached < minimum:
                self._held_minimums[f"{owner}.{name}"] = minimum
                setattr(target, name, None)
                overridden.append(f"{name}={minimum}")
        kinds = ", ".join(sorted({a.kind for a in fresh})) or "alert on another rank"
        note = f"; overriding the Trainer's {' and '.join(overridden)}" if overridden else ""
        rank_zero_warn(
            f"GradFlowMonitor: stopping training at step {trainer.global_step} ({kinds}){note}.",
            category=GradFlowWarning,
        )

    def _update_band(self, record: StepRecord) -> None:
        norms = np.where(np.isfinite(record.layer_norms), record.layer_norms, np.nan)
        usable = np.isfinite(norms) & (norms > 0)
        self._log_sum[usable] += np.log10(norms[usable])
        self._log_count[usable] += 1
        nonfinite = np.zeros(len(norms), dtype=bool)
        nonfinite[record.nonfinite_layers] = True
        if nonfinite.any():
            self._nonfinite_steps += 1
        elif np.isfinite(record.total_norm):
            self._max_total = float(np.fmax(self._max_total, record.total_norm))
        if self._band is None:
            self._band = (norms.copy(), norms.copy(), nonfinite)
            return
        low, high, bad = self._band
        with np.errstate(invalid="ignore"):
            self._band = (np.fmin(low, norms), np.fmax(high, norms), bad | nonfinite)

    def _remap_summary(self, names: list[str]) -> None:
        """Carry the run summary's per-layer sums over to a new list of layers, by name."""
        old = {
            name: (self._log_sum[i], self._log_count[i])
            for i, name in enumerate(self._summary_names)
            if self._log_sum is not None
        }
        self._log_sum = np.array([old.get(n, (0.0, 0.0))[0] for n in names], dtype=np.float64)
        self._log_count = np.array([old.get(n, (0.0, 0.0))[1] for n in names], dtype=np.float64)
        self._summary_names = list(names)

    def _log_scalars(self, trainer: pl.Trainer, record: StepRecord, multi: bool) -> None:
        suffix = f"_optimizer{record.optimizer_index}" if multi else ""
        metrics: dict[str, float] = {
            f"grad_norm/total{suffix}": record.total_norm,
            f"grad_nonfinite/layers{suffix}": float(len(record.nonfinite_layers)),
        }
        for kind, count in self._manager.counts.items():
            metrics[f"alerts/{kind}"] = float(count)
        for i, layer in enumerate(self.layers):
            if not record.has_grad[i]:
                continue
            metrics[f"grad_norm/{layer.name}"] = float(record.layer_norms[i])
            if record.weight_norms is not None:
                metrics[f"weight_norm/{layer.name}"] = float(record.weight_norms[i])
            if record.update_ratios is not None and np.isfinite(record.update_ratios[i]):
                metrics[f"update_ratio/{layer.name}"] = float(record.update_ratios[i])
        self._log_metrics(trainer, metrics, record.step)

    def _log_histograms(self, record: StepRecord) -> None:
        if not self._writers:
            return
        edges = np.asarray(self.histogram_bins.edges())
        hists = {
            f"grad_hist/{layer.name}": (record.log_histograms[i], edges)
            for i, layer in enumerate(self.layers)
            if record.has_grad[i]
        }
        if record.linear_histograms is not None:
            counts, maxima = record.linear_histograms
            unit = np.linspace(-1.0, 1.0, counts.shape[1] + 1)
            for i, layer in enumerate(self.layers):
                if record.has_grad[i] and maxima[i] > 0:
                    hists[f"grad_values/{layer.name}"] = (counts[i], unit * maxima[i])
        for writer in self._writers:
            self._sink(writer, writer.histograms, record.step, hists)

    def _log_picture(self, record: StepRecord) -> None:
        if not self._writers or not self.layers:
            return
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # pictures are optional
            self._warn_once(
                "matplotlib",
                "GradFlowMonitor: install matplotlib to log the gradient-flow picture.",
            )
            return
        from lightning_gradflow.writers.flow_figure import render_gradient_flow

        low, high, bad = self._band if self._band is not None else (None, None, None)
        image = render_gradient_flow(
            [layer.name for layer in self.layers],
            record.layer_norms,
            low,
            high,
            record.step,
            nonfinite=bad,
        )
        self._band = None
        for writer in self._writers:
            self._sink(writer, writer.image, record.step, "grad_flow", image)

    def gradient_summary(self) -> dict[str, Any]:
        """The run's gradient flow in a few numbers, from the geometric mean norm of each layer.

        Returns:
            ``layers`` (names in depth order), ``mean_log10_norm`` (per layer, ``None`` where a
            layer never had a usable gradient), ``first_last_ratio`` and ``gamma`` of the depth
            fit (``None`` with fewer than two usable layers), ``grad_norm_max`` (largest finite
            global norm of a step, before clipping; ``None`` before any step),
            ``nonfinite_grad_steps`` (steps with a NaN/Inf gradient) and ``alert_counts``.
            A resumed fit continues the summary saved in its checkpoint.

        Example:
            >>> GradFlowMonitor().gradient_summary()["first_last_ratio"] is None
            True
        """
        names = [layer.name for layer in self.layers] or self._summary_names
        if self._log_sum is None:
            means = np.full(len(names), np.nan)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                means = self._log_sum / self._log_count
        fit = fit_depth_profile(10.0**means)
        return {
            "layers": names,
            "mean_log10_norm": [None if not np.isfinite(m) else float(m) for m in means],
            "first_last_ratio": None if fit is None else fit.first_last_ratio,
            "gamma": None if fit is None else fit.gamma,
            "grad_norm_max": self._max_total if np.isfinite(self._max_total) else None,
            "nonfinite_grad_steps": self._nonfinite_steps,
            "alert_counts": self.alert_counts,
        }

    # --- checkpointing ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        summary = {
            "layers": list(self._summary_names),
            "log_sum": [] if self._log_sum is None else self._log_sum.tolist(),
            "log_count": [] if self._log_count is None else self._log_count.tolist(),
            "max_total": self._max_total,
            "nonfinite_steps": self._nonfinite_steps,
        }
        return {
            "detectors": self._detectors.state_dict(),
            "probe_detectors": self._probe_detectors.state_dict(),
            "alerts": self._manager.state_dict(),
            "summary": summary,
            "optimizer_steps": {str(i): n for i, n in self._optimizer_steps.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._detectors.load_state_dict(state_dict["detectors"])
        self._probe_detectors.load_state_dict(state_dict["probe_detectors"])
        self._manager.load_state_dict(state_dict["alerts"])
        self._optimizer_steps = {
            int(i): int(n) for i, n in state_dict.get("optimizer_steps", {}).items()
        }
        summary = state_dict.get("summary")
        if summary:
            self._summary_names = list(summary["layers"])
            self._log_sum = np.asarray(summary["log_sum"], dtype=np.float64)
            self._log_count = np.asarray(summary["log_count"], dtype=np.float64)
            self._max_total = float(summary["max_total"])
            self._nonfinite_steps = int(summary["nonfinite_steps"])


@dataclass(frozen=True)
class _Plan:
    """What a captured step is due for, decided on its optimizer's own step count."""

    log: bool
    plot: bool


def _resolve(trainer: pl.Trainer, path: str) -> Any:
    target: Any = trainer
    for name in path.split("."):
        target = getattr(target, name)
    return target


def _rerun_forward(
    pl_module: pl.LightningModule, batch: Any, batch_idx: int
) -> NonfiniteOrigin | None:
    """Re-run ``training_step`` on ``batch`` to find where its first NaN/Inf appeared.

    Nothing of the user's run changes: no gradients, ``self.log`` muted, random state and
    buffers (BatchNorm statistics) restored afterwards.
    """
    if any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()):
        return None  # its forward is a collective: a re-run stopped early could hang the ranks
    buffers = [b.detach().clone() for b in pl_module.buffers()]
    devices = [torch.device(b.device) for b in buffers if b.device.type == "cuda"][:1]
    muted = {name: getattr(pl_module, name) for name in ("log", "log_dict")}
    for name in muted:
        setattr(pl_module, name, lambda *args, **kwargs: None)
    try:
        with torch.random.fork_rng(devices=devices), eager_forward():
            return locate_nonfinite_origin(
                pl_module, lambda: pl_module.training_step(batch, batch_idx), inputs=batch
            )
    except Exception:  # a diagnosis must never break the run it diagnoses
        return None
    finally:
        for name in muted:
            delattr(pl_module, name)
        with torch.no_grad():
            for buffer, saved in zip(pl_module.buffers(), buffers, strict=True):
                buffer.copy_(saved)
