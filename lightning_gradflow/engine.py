"""The monitor's engine: everything a training loop does not own, in plain torch.

:class:`GradFlowEngine` holds the per-step schedule (what is due: scalars, histograms, the
picture, probes, a check), the :class:`~lightning_gradflow.core.collector.GradientCollector`,
the gradient and probe detectors, the alert policy (cooldowns, counts, the action; the
cross-rank reduction is passed in), the run summary and the outputs (:mod:`~lightning_gradflow.
core.sinks`). It never imports a training framework: adapters translate their hooks into the
engine's calls, which follow the moments of a training loop.

=================================  ============================================================
moment                             call
=================================  ============================================================
a fit starts                       :meth:`~GradFlowEngine.start` (outputs, ranks, reduction)
the model is known                 :meth:`~GradFlowEngine.watch`
a batch's forward pass starts      :meth:`~GradFlowEngine.forward_start`
a loss is about to be backwarded   :meth:`~GradFlowEngine.loss`
gradients are final                :meth:`~GradFlowEngine.before_optimizer_step`
the optimizer has stepped          :meth:`~GradFlowEngine.after_optimizer_step`
the batch is done                  :meth:`~GradFlowEngine.end_batch` (returns the action)
the fit ends, or dies              :meth:`~GradFlowEngine.finish`
=================================  ============================================================

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> engine = GradFlowEngine(log_every_n_steps=1, probe_every_n_steps=None)
    >>> engine.start(RunContext(sinks=[]))
    >>> engine.watch(model)
    >>> for step in range(3):
    ...     engine.forward_start(step)
    ...     loss = model(torch.randn(16, 4)).pow(2).mean()
    ...     engine.loss(loss)
    ...     loss.backward()
    ...     engine.before_optimizer_step(model, optimizer, step)
    ...     optimizer.step()
    ...     optimizer.zero_grad()
    ...     engine.after_optimizer_step()
    ...     engine.end_batch(StepInfo(step))
    'warn'
    'warn'
    'warn'
    >>> [layer.name for layer in engine.layers], engine.alerts
    (['0', '2'], [])
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Action, Alert, GradientPathologyError
from lightning_gradflow.core.collector import GradientCollector, StepRecord
from lightning_gradflow.core.compiled import eager_forward
from lightning_gradflow.core.detector import alert_kinds
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext
from lightning_gradflow.core.flow_history import FlowHistory
from lightning_gradflow.core.histograms import LogBins
from lightning_gradflow.core.layers import (
    GRANULARITIES,
    ForwardOrderRecorder,
    Granularity,
    Layer,
    group_parameters,
)
from lightning_gradflow.core.nan_origin import NonfiniteOrigin, diagnose_without_side_effects
from lightning_gradflow.core.probes import (
    ActivationProbes,
    ProbeConfig,
    ProbeDetectors,
    ProbeStats,
)
from lightning_gradflow.core.schedule import (
    CostBudget,
    Interval,
    check_interval,
    is_due,
    is_first_or_last,
    resolve_interval,
)
from lightning_gradflow.core.sinks import (
    GradFlowWarning,
    Sink,
    Sinks,
    install_one_line_format,
)
from lightning_gradflow.core.step_scalars import (
    alert_scalars,
    depth_summary,
    depth_tags,
    step_scalars,
)
from lightning_gradflow.core.summary import RunSummary
from lightning_gradflow.core.validation import (
    as_config,
    check_choice,
    check_count,
    check_flag,
    check_kinds,
    check_log10_range,
)

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A layer name without FSDP, activation-checkpointing and ``torch.compile`` wrappers."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _no_reduction(flag: bool) -> bool:
    return flag


@dataclass
class RunContext:
    """What a fit tells the engine about where it runs.

    Attributes:
        sinks: the outputs (only rank zero's are used).
        is_rank_zero: this process writes outputs.
        world_size: number of processes; above one, probe statistics are summed over them.
        reduce_any: ``flag -> any rank's flag``, a collective every rank calls together (for
            stop and raise); the identity in a single process.
        sharded: plain parameters are FSDP1 shards (summed over ranks).
        total_steps: how many optimizer steps the run will take, if known: ``"auto"``
            intervals scale with it, and its last step gets histograms and a picture.
    """

    sinks: Sequence[Sink] = ()
    is_rank_zero: bool = True
    world_size: int = 1
    reduce_any: Callable[[bool], bool] = _no_reduction
    sharded: bool = False
    total_steps: int | None = None


@dataclass(frozen=True)
class StepInfo:
    """What the loop knows about the current step beyond the gradients.

    Attributes:
        step: the optimizer step (0-based).
        epoch: the epoch, if the loop has epochs.
        clip_norm: the gradient-norm clipping value in force, if any.
        amp_scaler: a float16 GradScaler is active (it skips steps with NaN/Inf gradients).
    """

    step: int
    epoch: int | None = None
    clip_norm: float | None = None
    amp_scaler: bool = False


@dataclass(frozen=True)
class _Plan:
    """What a captured step is due for, decided on its optimizer's own step count."""

    log: bool
    plot: bool


class GradFlowEngine:
    """Per-layer gradient statistics, detectors, alerts and outputs, driven by a training loop.

    The arguments are the monitor's settings; see :class:`~lightning_gradflow.GradFlowMonitor`
    for each. ``log_every_n_steps=None`` means 50 here (the Lightning adapters take the
    Trainer's).

    Raises:
        ValueError: for a setting that is not allowed, naming it and what is.
    """

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
    ) -> None:
        for name, value in (
            ("log_every_n_steps", log_every_n_steps),
            ("linear_histogram_bins", linear_histogram_bins),
            ("check_every_n_steps", check_every_n_steps),
            ("probe_every_n_steps", probe_every_n_steps),
        ):
            check_count(name, value, allow_none=True)
        check_interval("histogram_every_n_steps", histogram_every_n_steps)
        check_interval("plot_every_n_steps", plot_every_n_steps)
        disable = check_kinds(disable, alert_kinds(), "alert kinds")
        check_choice("granularity", granularity, GRANULARITIES)
        check_flag("log_weight_norms", log_weight_norms)
        check_flag("log_update_ratios", log_update_ratios)
        check_flag("sharded", sharded, allow_none=True)
        check_flag("locate_nan_origin", locate_nan_origin)
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.plot_every_n_steps = plot_every_n_steps
        self.granularity = granularity
        self.log_weight_norms = log_weight_norms
        self.log_update_ratios = log_update_ratios
        self.linear_histogram_bins = linear_histogram_bins
        self.histogram_bins = as_config("histogram_bins", histogram_bins, LogBins)
        self.sharded = sharded
        self.check_every_n_steps = check_every_n_steps
        self.detector_config = as_config("detectors", detectors, DetectorConfig)
        self.probe_every_n_steps = probe_every_n_steps
        self.probe_config = as_config("probes", probes, ProbeConfig)
        self.on_alert = on_alert
        self.actions = actions
        self.locate_nan_origin = locate_nan_origin
        self.flow_log10_range = check_log10_range("flow_log10_range", flow_log10_range)
        self._gradient_disable = [k for k in disable if k in alert_kinds("gradient")]
        self._probe_disable = [k for k in disable if k in alert_kinds("probe")]
        self.log_every = log_every_n_steps or 50
        self._histogram_every = resolve_interval(histogram_every_n_steps, None)
        self._plot_every = resolve_interval(plot_every_n_steps, None)
        self._warned: set[str] = set()
        self._eager: ExitStack | None = None
        self.run = RunContext()
        self._outputs = Sinks()
        self.reset()

    # --- a fit's life -----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget a previous fit: a new fit starts clean (a resumed one reloads its state)."""
        self._detectors = GradientDetectors(self.detector_config, self._gradient_disable)
        self._probe_detectors = ProbeDetectors(self.probe_config, self._probe_disable)
        self._manager = AlertManager(
            self.on_alert, self.actions, self.detector_config.cooldown_steps
        )
        self.layers: list[Layer] = []
        self._tags: list[str] = []
        self._model: nn.Module | None = None
        self._order: list[str] | None = None
        self._collector: GradientCollector | None = None
        self._recorder: ForwardOrderRecorder | None = None
        self._probes: ActivationProbes | None = None
        self._probed_step: int | None = None
        self._probe_pending = False
        self._plans: list[_Plan] = []
        self.optimizer_steps: dict[int, int] = {}
        self._captured: tuple[int, int] | None = None
        self._unmonitored: set[int] = set()
        self._parameters: dict[int, tuple[Any, ...]] = {}
        self._snapshot_pending = False
        self._flush_due = False
        self._batch: Any = None
        self._nan_origins: dict[int, NonfiniteOrigin | None] = {}
        self._summary = RunSummary()
        self._history = FlowHistory()
        self._budget = CostBudget()
        self._last_record: StepRecord | None = None
        self._last_plotted = False
        self._deferred: Action = "warn"
        self._last_info = StepInfo(0)  # the epoch, clip value and scaler of the last batch
        self.stop_kinds: list[str] = []

    def start(self, run: RunContext, log_every_n_steps: int | None = None) -> None:
        """A fit starts: reset, and take its outputs, ranks and reduction.

        Args:
            run: where the fit runs.
            log_every_n_steps: the loop's own interval, used when the engine was given none.
        """
        self.reset()
        install_one_line_format()  # Lightning, imported since, may have replaced it
        self.run = run
        self._outputs = Sinks(run.sinks if run.is_rank_zero else ())
        self.log_every = self.log_every_n_steps or log_every_n_steps or 50
        self.expect_steps(run.total_steps)
        self._budget.start()

    def expect_steps(self, total_steps: int | None) -> None:
        """The run will take ``total_steps`` optimizer steps (``None``: unknown).

        ``"auto"`` intervals scale with it, and the last step gets histograms and a picture.
        """
        self.run.total_steps = total_steps
        self._histogram_every = resolve_interval(self.histogram_every_n_steps, total_steps)
        self._plot_every = resolve_interval(self.plot_every_n_steps, total_steps)

    @property
    def check_every(self) -> int:
        return self.check_every_n_steps or self.log_every

    def watch(self, model: nn.Module, global_step: int = 0, num_optimizers: int = 1) -> None:
        """Record the model's layer order on its next forward pass; set up the probes.

        ``global_step`` > 0 without restored state (an old checkpoint) starts each optimizer's
        clock at its share of the global step.
        """
        self._model = model
        self._outputs.start(num_optimizers)
        self._recorder = ForwardOrderRecorder(model)
        if self.probe_every_n_steps is not None:
            self._probes = ActivationProbes(model, self.probe_config)
        if not self.optimizer_steps and global_step:
            share = global_step // max(num_optimizers, 1)
            self.optimizer_steps = dict.fromkeys(range(num_optimizers), share)

    def forward_start(self, step: int, batch: Any = None) -> None:
        """Before a batch's forward pass: attach the probes on probe steps.

        Args:
            step: the step this batch belongs to.
            batch: the batch, kept for this step only (to locate a NaN's origin).
        """
        self._batch = batch
        if (
            self._probes is not None
            and self._probes.sites
            and is_due(step, self.probe_every_n_steps)
            and self._probed_step != step
        ):
            self._probed_step = step
            self._probes.attach(histograms=is_due(step, self._histogram_every))
            self._probe_pending = True
        hooked = self._recorder is not None or (
            self._probes is not None and self._probes.is_attached
        )
        if hooked and self._eager is None:  # a compiled model would not call the hooks
            self._eager = ExitStack()
            self._eager.enter_context(eager_forward())

    def loss(self, loss: torch.Tensor) -> None:
        """A (micro-batch) loss is about to be backwarded."""
        if self._probes is not None:
            self._probes.detach()  # before backward: activation checkpointing re-runs forwards
        if self._model is not None:
            self._ensure_collector(self._model).add_loss(loss)
        self._end_eager()

    def before_optimizer_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
        optimizer_index: int = 0,
        rerun: Callable[[], object] | None = None,
    ) -> None:
        """Gradients are final (after all-reduce and unscaling, before clipping): capture them.

        Args:
            model: the model the optimizer trains.
            optimizer: the optimizer about to step.
            step: the global step of this update.
            optimizer_index: which optimizer (each keeps its own logging clock).
            rerun: re-runs this batch's forward pass, to locate a NaN's origin (optional).
        """
        self._model = model
        collector = self._ensure_collector(model)
        if self._captured == (step, optimizer_index):  # LBFGS & co. evaluate the closure again
            collector.discard_loss()
            return
        self.after_optimizer_step()  # an earlier optimizer of this batch has stepped by now
        self._captured = (step, optimizer_index)
        params, unclassified = self._parameters_of(optimizer, optimizer_index, collector)
        if any(p.grad is not None for p in unclassified):  # new parameters, now with a gradient
            collector = self._regroup(model, params, step)
        elif self._recorder is not None and self._recorder.recorded:
            collector = self._rebuild(model)  # the order, recorded again
        # Each optimizer keeps its own clock: with several optimizers a global step advances
        # once per optimizer step, and a shared clock would never log some of them.
        count = self.optimizer_steps.get(optimizer_index, 0)
        self.optimizer_steps[optimizer_index] = count + 1
        total = self.run.total_steps
        logged = is_due(count, self.log_every, total)
        histogram = is_due(count, self._histogram_every, total)
        plot = is_due(count, self._plot_every, total)
        if self._budgeted(count, histogram, plot) and not self._affordable():
            histogram = histogram and self.histogram_every_n_steps != "auto"
            plot = plot and self.plot_every_n_steps != "auto"
        checked = is_due(count, self.check_every)
        snapshot = logged and self.log_update_ratios
        # The weights are read where the update check can use them: a logged step (its update
        # measured), a check step and the step after it (the RMS before and after its update).
        # Other steps read the gradients alone.
        after_check = count > 0 and is_due(count - 1, self.check_every)
        collector.capture(
            step=step,
            params=params,
            optimizer_index=optimizer_index,
            weights=logged and self.log_weight_norms,
            histograms=histogram,
            snapshot=snapshot,
            weight_rms=logged or checked or after_check,
            optimizer=optimizer,
        )
        self._plans.append(_Plan(log=logged, plot=plot))
        self._snapshot_pending = self._snapshot_pending or snapshot
        self._flush_due = self._flush_due or logged or histogram or plot or checked
        if self.locate_nan_origin and rerun is not None and (checked or collector.on_host):
            self._diagnose_if_nonfinite(step, rerun)  # free on the CPU; else a check step

    def after_optimizer_step(self) -> None:
        """The optimizer has stepped: measure its update (from its state or a copy)."""
        if self._snapshot_pending and self._collector is not None:
            self._collector.after_optimizer_step()
        self._snapshot_pending = False

    def end_batch(self, info: StepInfo) -> Action:
        """The batch is done: judge and report what is due; returns the action decided.

        ``"raise"`` raises :class:`GradientPathologyError` here on every rank; ``"stop"`` is
        for the loop to carry out. Every rank must call this at the same batches.
        """
        self._end_eager()  # a step without backward (training_step returned None)
        self._batch = None
        self._captured = None
        self._last_info = info
        self.after_optimizer_step()
        probe_alerts = self._handle_probes(info.epoch) if self._probe_pending else []
        deferred, self._deferred = self._deferred, "warn"
        if not (self._flush_due or probe_alerts):
            return deferred
        self._flush_due = False
        records = self._collector.flush() if self._collector is not None else []
        action = self._handle(records, info, probe_alerts=probe_alerts)
        return "stop" if deferred == "stop" else action

    def finish(self, info: StepInfo, interrupted: bool = False) -> None:
        """The fit ends (or dies, ``interrupted``): judge and report every pending step.

        When interrupted nothing talks to other ranks (they may be gone): losses stay this
        rank's own, probe statistics local, and no action is taken. A ``"raise"`` decided at a
        normal end still raises.
        """
        self.after_optimizer_step()
        probe_alerts: list[Alert] = []
        if self._probe_pending:
            probe_alerts = self._handle_probes(info.epoch, all_ranks=not interrupted)
        if self._collector is not None and (self._collector.num_pending or probe_alerts):
            records = self._collector.flush(all_ranks=not interrupted)
            self._handle(records, info, probe_alerts=probe_alerts, act=not interrupted)
        if self._last_record is not None and not self._last_plotted and self._plot_every:
            self._log_picture(self._last_record)  # the trained network, whatever the interval
        self._outputs.finish(self.run_summary())
        self.release()

    def release(self) -> None:
        """Remove every hook the engine holds."""
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
        if self._probes is not None:
            self._probes.detach()
            self._probe_pending = False
        self._end_eager()
        self._batch = None

    # --- results ------------------------------------------------------------------------------

    @property
    def alerts(self) -> list[Alert]:
        """Every announced alert of the current (or last) fit, in order; same on every rank."""
        return self._manager.announced

    @property
    def layer_tags(self) -> list[str]:
        """``<depth index>.<layer>`` of each layer, as the per-layer tags end."""
        return list(self._tags)

    @property
    def alert_counts(self) -> dict[str, int]:
        """Occurrences per kind, including those not re-announced during a cooldown."""
        return dict(self._manager.counts)

    @property
    def detector_kinds(self) -> list[str]:
        """The gradient and probe alert kinds switched on."""
        return [d.kind for d in self._detectors.detectors] + list(self._probe_detectors.kinds)

    def gradient_summary(self) -> dict[str, Any]:
        """The run's gradient flow in a few numbers, from the geometric mean norm of each layer.

        Returns:
            ``layers`` (names in depth order); ``mean_log10_norm`` (per layer, the mean over the
            steps with a finite non-zero gradient; ``None`` where a layer never had one, or where
            its gradient was exactly zero on half of its steps or more: its typical gradient is
            zero, see ``zero_grad_share``); ``zero_grad_share`` (per layer, the share of the
            steps with a gradient on which it was exactly zero; ``None`` where it never had a
            gradient); ``first_last_ratio`` and ``gamma`` of the depth fit over the layers with
            a mean (``None`` with fewer than two); ``grad_norm_max`` (largest finite global norm
            of a step, before clipping; ``None`` before any step); ``nonfinite_grad_steps``
            (steps with a NaN/Inf gradient) and ``alert_counts``. A resumed fit continues the
            summary saved in its checkpoint.

        Example:
            >>> GradFlowEngine().gradient_summary()["first_last_ratio"] is None
            True
        """
        return {**self._summary.as_dict(), "alert_counts": self.alert_counts}

    def run_summary(self) -> dict[str, float]:
        """The run in a few flat numbers, for a W&B run summary or a results table.

        ``grad_flow/first_last_ratio`` and ``grad_flow/gamma`` of the run's mean profile (see
        :meth:`gradient_summary`), ``grad_flow/dead_layers`` at the last judged step,
        ``grad_flow/nonfinite_grad_steps`` and ``alerts/announced/<kind>``.

        Example:
            >>> GradFlowEngine().run_summary()
            {'grad_flow/nonfinite_grad_steps': 0.0}
        """
        summary = self._summary.as_dict()
        flat = {"grad_flow/nonfinite_grad_steps": float(summary["nonfinite_grad_steps"])}
        for key in ("first_last_ratio", "gamma"):
            if summary[key] is not None:
                flat[f"grad_flow/{key}"] = summary[key]
        record = self._last_record
        if record is not None:
            floor = self.detector_config.vanishing_floor
            dead = depth_summary(record.layer_norms, record.has_grad, floor)
            flat["grad_flow/dead_layers"] = dead["grad_flow/dead_layers"]
        for kind, count in sorted(self._manager.announced_counts.items()):
            flat[f"alerts/announced/{kind}"] = float(count)
        return flat

    def state_dict(self) -> dict[str, Any]:
        """Detector windows, alert counts and cooldowns, clocks and the run summary."""
        return {
            "detectors": self._detectors.state_dict(),
            "probe_detectors": self._probe_detectors.state_dict(),
            "alerts": self._manager.state_dict(),
            "summary": self._summary.state_dict(),
            "history": self._history.state_dict(),
            "optimizer_steps": {str(i): n for i, n in self.optimizer_steps.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._detectors.load_state_dict(state["detectors"])
        self._probe_detectors.load_state_dict(state["probe_detectors"])
        self._manager.load_state_dict(state["alerts"])
        self.optimizer_steps = {int(i): int(n) for i, n in state.get("optimizer_steps", {}).items()}
        if state.get("summary"):
            self._summary.load_state_dict(state["summary"])
        if state.get("history"):
            self._history.load_state_dict(state["history"])

    def warn_once(self, key: str, message: str) -> None:
        """A console warning on rank zero, at most once per fit-independent ``key``."""
        if key not in self._warned and self.run.is_rank_zero:
            self._warned.add(key)
            warnings.warn(
                message,
                GradFlowWarning,
                stacklevel=2,  # pragma: no mutate (a library line either way)
            )

    # --- internals ----------------------------------------------------------------------------

    def _end_eager(self) -> None:
        if self._eager is not None:
            self._eager.close()
            self._eager = None

    def _ensure_collector(self, model: nn.Module) -> GradientCollector:
        if self._collector is None:
            if self._recorder is not None:
                self._order = self._recorder.order
                self._recorder.remove()
                self._recorder = None
            layers = group_parameters(model, self._order, self.granularity)
            self.layers = [
                Layer(clean_name(layer.name), layer.param_names, layer.params) for layer in layers
            ]
            names = [layer.name for layer in self.layers]
            self._tags = depth_tags(names)
            if not self.layers:
                self.warn_once(
                    "no parameters",
                    "GradFlowMonitor: the model has no parameters; nothing to monitor.",
                )
            self._summary.remap(names)
            self._history.remap(names)
            sharded = self.run.sharded if self.sharded is None else self.sharded
            self._collector = GradientCollector(
                self.layers,
                bins=self.histogram_bins,
                linear_bins=self.linear_histogram_bins,
                sharded=sharded,
            )
        return self._collector

    def _parameters_of(
        self, optimizer: torch.optim.Optimizer, index: int, collector: GradientCollector
    ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The optimizer's parameters, and those neither monitored nor known to be outside the
        model; worked out again only when its parameter lists or the collector change."""
        lists = [group["params"] for group in optimizer.param_groups]
        cached = self._parameters.get(index)
        if (
            cached is not None
            and cached[0] is optimizer
            and cached[1] is collector
            and len(cached[2]) == len(lists)
            and all(a is b and len(a) == n for (a, n), b in zip(cached[2], lists, strict=True))
        ):
            return cached[3], cached[4]
        params = [p for group in lists for p in group]
        known = collector.layer_of
        unclassified = [p for p in params if id(p) not in known and id(p) not in self._unmonitored]
        sizes = [(group, len(group)) for group in lists]
        self._parameters[index] = (optimizer, collector, sizes, params, unclassified)
        return params, unclassified

    def _regroup(self, model: nn.Module, params: Sequence[Any], step: int) -> GradientCollector:
        """Parameters appeared mid-fit (a grown model, a re-created optimizer): regroup.

        The new layers' depth is known once a forward pass has run with them, so the forward
        order is recorded again on the next step and the layers are sorted once more.
        """
        before = {layer.name for layer in self.layers}
        collector = self._rebuild(model)
        self._recorder = ForwardOrderRecorder(model)
        added = [layer.name for layer in self.layers if layer.name not in before]
        outside = [p for p in params if id(p) not in collector.layer_of]
        self._unmonitored.update(id(p) for p in outside)
        message = f"GradFlowMonitor: new parameters at step {step}"
        if added:
            message += f"; now monitoring {len(self.layers)} layers (new: {', '.join(added)})"
        if outside:
            message += (
                f"; {len(outside)} optimizer parameter(s) are not part of the model "
                "and are not monitored"
            )
        if self.run.is_rank_zero:
            warnings.warn(
                message,
                GradFlowWarning,
                stacklevel=2,  # pragma: no mutate (a library line either way)
            )
        return collector

    def _rebuild(self, model: nn.Module) -> GradientCollector:
        if self._collector is not None and self._collector.num_pending:
            action = self._handle(self._collector.flush(), self._last_info)
            self._deferred = "stop" if action == "stop" else self._deferred
        self._collector = None
        return self._ensure_collector(model)  # its summary.remap starts a new band

    def _budgeted(self, count: int, histogram: bool, plot: bool) -> bool:
        """An ``"auto"`` output is due at a step other than the first and the last."""
        if is_first_or_last(count, self.run.total_steps):
            return False
        return (histogram and self.histogram_every_n_steps == "auto") or (
            plot and self.plot_every_n_steps == "auto"
        )

    def _affordable(self) -> bool:
        """Whether the outputs are within their time budget on every rank.

        Clocks differ between ranks, and a step that one rank plans for a picture and another
        not would flush (a collective) on one rank only: every rank takes the same answer.
        """
        return not self.run.reduce_any(not self._budget.allows())

    def _diagnose_if_nonfinite(self, step: int, rerun: Callable[[], object]) -> None:
        """Before the update spreads it into the weights, find where a NaN/Inf began.

        Runs only when this step's gradients or loss are non-finite, at most once per alert
        cooldown (the alert it explains is announced once per cooldown too).
        """
        cooldown = self.detector_config.cooldown_steps
        if any(step - d < cooldown for d in self._nan_origins):
            return
        if self._collector.last_step_is_finite():
            return
        origin = diagnose_without_side_effects(self._model, rerun, inputs=self._batch)
        self._nan_origins[step] = origin

    def _handle_probes(self, epoch: int | None, all_ranks: bool = True) -> list[Alert]:
        """Collect the probe step's statistics (one copy; summed over ranks), log, detect."""
        self._probe_pending = False
        self._probes.detach()
        stats: ProbeStats = self._probes.collect(all_ranks=all_ranks and self.run.world_size > 1)
        step = self._probed_step
        alerts = self._probe_detectors.update(step, epoch, stats)
        announced = self._manager.submit(
            [replace(a, layers=tuple(clean_name(n) for n in a.layers)) for a in alerts]
        )
        self._announce(announced)
        self._outputs.scalars(step, {clean_name(k): v for k, v in stats.scalars().items()})
        if stats.histograms:
            hists = {clean_name(k): v for k, v in stats.histograms.items()}
            self._outputs.histograms(step, hists)
        return announced

    def _handle(
        self,
        records: list[StepRecord],
        info: StepInfo,
        probe_alerts: Sequence[Alert] = (),
        act: bool = True,
    ) -> Action:
        plans, self._plans = self._plans[: len(records)], self._plans[len(records) :]
        multi = len(self.optimizer_steps) > 1
        ctx = StepContext(
            layer_names=[layer.name for layer in self.layers],
            epoch=info.epoch,
            clip_norm=info.clip_norm,
            amp_scaler=info.amp_scaler,
        )
        fresh: list[Alert] = list(probe_alerts)
        for record, plan in zip(records, plans, strict=True):
            self._summary.update(record)
            alerts = [self._with_origin(a) for a in self._detectors.update(record, ctx)]
            announced = self._manager.submit(alerts)
            fresh += announced
            self._announce(announced)
            self._outputs.record(record)
            if plan.log or plan.plot:
                self._history.add(record.step, record.layer_norms, record.has_grad)
            if plan.log:
                self._log_scalars(record, multi)
            started = time.perf_counter()
            if record.log_histograms is not None:
                self._log_histograms(record)
            if plan.plot:
                self._log_picture(record)
            self._budget.spend(time.perf_counter() - started)
            self._last_record, self._last_plotted = record, plan.plot
        return self._act(fresh) if act else "warn"

    def _with_origin(self, alert: Alert) -> Alert:
        """Name the module (and op) where a NaN/Inf began, if the step was diagnosed."""
        if alert.kind != "nonfinite":
            return alert
        cooldown = self.detector_config.cooldown_steps
        step = min(
            (d for d in self._nan_origins if 0 <= d - alert.step < max(cooldown, 1)), default=None
        )
        origin = self._nan_origins.get(step)
        if origin is None:
            return alert
        origin = replace(origin, module=clean_name(origin.module))
        details = {**(alert.details or {}), "origin_module": origin.module, "origin_op": origin.op}
        message = (
            f"{alert.message}; first non-finite value in the forward pass of step {step}: "
            f"{origin.describe()}"
        )
        return replace(alert, message=message, details=details)

    def _announce(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self._outputs.alert(alert, self._manager.counts[alert.kind])

    def _act(self, fresh: list[Alert]) -> Action:
        """The strongest action called for on any rank (every rank decides the same)."""
        if not self._manager.may_interrupt:
            return "warn"
        action = self._manager.action(fresh)
        if self.run.reduce_any(action == "raise"):
            raise GradientPathologyError(
                [a for a in fresh if self._manager.action_of(a) == "raise"] or fresh
            )
        if not self.run.reduce_any(action == "stop"):
            return "warn"
        self.stop_kinds = sorted({a.kind for a in fresh if self._manager.action_of(a) == "stop"})
        return "stop"

    def _log_scalars(self, record: StepRecord, multi: bool) -> None:
        suffix = f"_optimizer{record.optimizer_index}" if multi else ""
        floor = self.detector_config.vanishing_floor
        metrics = step_scalars(record, self._tags, floor, suffix, self.log_weight_norms)
        metrics.update(alert_scalars(self._manager.announced_counts, self._manager.counts))
        self._outputs.scalars(record.step, metrics)

    def _log_histograms(self, record: StepRecord) -> None:
        if not self._outputs:
            return
        edges = np.asarray(self.histogram_bins.edges())
        hists = {
            f"grad_log10_hist/{tag}": (record.log_histograms[i], edges)
            for i, tag in enumerate(self._tags)
            if record.has_grad[i]
        }
        if record.linear_histograms is not None:
            counts, maxima = record.linear_histograms
            unit = np.linspace(-1.0, 1.0, counts.shape[1] + 1)
            for i, tag in enumerate(self._tags):
                if record.has_grad[i] and maxima[i] > 0:
                    hists[f"grad_values/{tag}"] = (counts[i], unit * maxima[i])
        self._outputs.histograms(record.step, hists)

    def _log_picture(self, record: StepRecord) -> None:
        if not self._outputs or not self.layers:
            return
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # pictures are optional
            self.warn_once(
                "matplotlib",
                "GradFlowMonitor: install matplotlib to log the gradient-flow picture.",
            )
            return
        from lightning_gradflow.writers.flow_figure import render_gradient_flow
        from lightning_gradflow.writers.flow_heatmap import render_flow_heatmap

        low, high, bad = self._summary.take_band()
        image = render_gradient_flow(
            [layer.name for layer in self.layers],
            record.layer_norms,
            low,
            high,
            record.step,
            nonfinite=bad,
            log10_range=self.flow_log10_range,
        )
        self._outputs.image(record.step, "grad_flow/picture", image)
        if self._history.steps.size:
            heatmap = render_flow_heatmap(
                self._history.names,
                self._history.steps,
                self._history.log10_norms(),
                value_range=self.flow_log10_range,
            )
            self._outputs.image(record.step, "grad_flow/heatmap", heatmap)
