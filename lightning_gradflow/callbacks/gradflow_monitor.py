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

import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
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
from lightning_gradflow.core.probes import (
    PROBE_ALERT_KINDS,
    ActivationProbes,
    ProbeConfig,
    ProbeDetectors,
    ProbeStats,
)
from lightning_gradflow.core.validation import check_kinds, fail
from lightning_gradflow.writers.base import Writer

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
ALERTS_FILE = "gradflow_alerts.jsonl"


class GradFlowWarning(UserWarning):
    """The category of the console warnings an alert prints (filter it like any warning)."""


def _check_interval(name: str, value: int | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or None (off)" if allow_none else "a positive integer"
        fail(name, value, allowed)


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
    ) -> None:
        _check_interval("log_every_n_steps", log_every_n_steps)
        _check_interval("histogram_every_n_steps", histogram_every_n_steps)
        _check_interval("plot_every_n_steps", plot_every_n_steps)
        _check_interval("linear_histogram_bins", linear_histogram_bins)
        _check_interval("check_every_n_steps", check_every_n_steps)
        _check_interval("probe_every_n_steps", probe_every_n_steps)
        check_kinds(disable, ALERT_KINDS, "alert kinds")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity={granularity!r} is not one of {GRANULARITIES}")
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.plot_every_n_steps = plot_every_n_steps
        self.granularity = granularity
        self.log_weight_norms = log_weight_norms
        self.log_update_ratios = log_update_ratios
        self.linear_histogram_bins = linear_histogram_bins
        self.histogram_bins = histogram_bins or LogBins()
        self.sharded = sharded
        self._sharded = bool(sharded)
        self.check_every_n_steps = check_every_n_steps
        self.detector_config = detectors or DetectorConfig()
        self._detectors = GradientDetectors(
            self.detector_config, [k for k in disable if k in GRADIENT_KINDS]
        )
        self.probe_every_n_steps = probe_every_n_steps
        self.probe_config = probes or ProbeConfig()
        self._probe_detectors = ProbeDetectors(
            self.probe_config, [k for k in disable if k in PROBE_ALERT_KINDS]
        )
        self._probes: ActivationProbes | None = None
        self._probed_step: int | None = None
        self._probe_pending = False
        self._eager: ExitStack | None = None
        self._manager = AlertManager(on_alert, actions, self.detector_config.cooldown_steps)
        self._alerts_path: Path | None = None
        self.layers: list[Layer] = []
        self._log_every = log_every_n_steps or 50
        self._check_every = check_every_n_steps or self._log_every
        self._collector: GradientCollector | None = None
        self._recorder: ForwardOrderRecorder | None = None
        self._writers: list[Writer] = []
        self._snapshot_pending = False
        self._flush_due = False
        self._band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._log_sum: np.ndarray | None = None
        self._log_count: np.ndarray | None = None
        self._max_total = float("nan")
        self._nonfinite_steps = 0
        self._warned_no_matplotlib = False

    @property
    def alerts(self) -> list[Alert]:
        """Every announced alert, in order (identical on every rank)."""
        return self._manager.announced

    @property
    def alert_counts(self) -> dict[str, int]:
        """Occurrences per kind, including those not re-announced during a cooldown."""
        return dict(self._manager.counts)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            log_every_n_steps=self.log_every_n_steps, granularity=self.granularity
        )

    # --- set-up -----------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._log_every = self.log_every_n_steps or trainer.log_every_n_steps or 1
        self._check_every = self.check_every_n_steps or self._log_every
        from pytorch_lightning.strategies import FSDPStrategy

        self._sharded = (
            isinstance(trainer.strategy, FSDPStrategy) if self.sharded is None else self.sharded
        )
        self._writers = self._find_writers(trainer)
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective: call on all ranks
        if trainer.is_global_zero:
            self._alerts_path = Path(log_dir) / ALERTS_FILE
        if not trainer.loggers:
            rank_zero_warn(
                "GradFlowMonitor: the Trainer has no logger, so gradient norms, histograms and "
                "pictures are computed but not shown (alerts still work). Pass "
                "`logger=TensorBoardLogger(...)` (or WandbLogger/CSVLogger) to see them."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collector = None
        self._band = None
        self._log_sum = self._log_count = None
        self._max_total = float("nan")
        self._nonfinite_steps = 0
        self._recorder = ForwardOrderRecorder(pl_module)
        self._probed_step = None
        if self.probe_every_n_steps is not None:
            self._probes = ActivationProbes(pl_module, self.probe_config)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Attach the probes for the first forward pass of a probe step."""
        step = trainer.global_step
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
            order = None
            if self._recorder is not None:
                order = self._recorder.order
                self._recorder.remove()
                self._recorder = None
            layers = group_parameters(pl_module, order, self.granularity)
            self.layers = [
                Layer(_clean_name(layer.name), layer.param_names, layer.params) for layer in layers
            ]
            if not self.layers:
                rank_zero_warn("GradFlowMonitor: the model has no parameters; nothing to monitor.")
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

    def _due(self, step: int, every: int | None) -> bool:
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
        logged = self._due(step, self._log_every)
        histogram = self._due(step, self.histogram_every_n_steps)
        plot = self._due(step, self.plot_every_n_steps)
        snapshot = logged and self.log_update_ratios
        collector.capture(
            step=step,
            params=[p for group in optimizer.param_groups for p in group["params"]],
            optimizer_index=self._optimizer_index(trainer, optimizer),
            weights=logged and self.log_weight_norms,
            histograms=histogram,
            snapshot=snapshot,
        )
        self._snapshot_pending = self._snapshot_pending or snapshot
        checked = self._due(step, self._check_every)
        self._flush_due = self._flush_due or logged or histogram or plot or checked

    @staticmethod
    def _optimizer_index(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> int:
        for index, candidate in enumerate(trainer.optimizers):
            inner = getattr(candidate, "optimizer", candidate)
            if candidate is optimizer or inner is optimizer:
                return index
        return 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._end_eager()  # a step without backward (training_step returned None)
        probe_alerts = self._handle_probes(trainer) if self._probe_pending else []
        if self._collector is None:
            return
        if self._snapshot_pending:
            self._collector.after_optimizer_step()
            self._snapshot_pending = False
        if self._flush_due or probe_alerts:
            self._flush_due = False
            self._handle(trainer, self._collector.flush(), probe_alerts=probe_alerts)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._collector is not None and self._collector.num_pending:
            self._handle(trainer, self._collector.flush(), final=True)
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
        if self._probes is not None:
            self._probes.detach()
        self._end_eager()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._end_eager()

    # --- reporting --------------------------------------------------------------------------

    def _handle_probes(self, trainer: pl.Trainer) -> list[Alert]:
        """Collect the probe step's statistics (one copy; summed over ranks), log, detect."""
        self._probe_pending = False
        self._probes.detach()
        stats: ProbeStats = self._probes.collect(all_ranks=trainer.world_size > 1)
        step = self._probed_step
        alerts = self._probe_detectors.update(step, trainer.current_epoch, stats)
        announced = self._manager.submit(
            [replace(a, layers=tuple(_clean_name(n) for n in a.layers)) for a in alerts]
        )
        if trainer.is_global_zero:
            self._announce(trainer, announced)
            scalars = {_clean_name(k): v for k, v in stats.scalars().items()}
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=step)
            if stats.histograms:
                hists = {_clean_name(k): v for k, v in stats.histograms.items()}
                for writer in self._writers:
                    writer.histograms(step, hists)
        return announced

    def _handle(
        self,
        trainer: pl.Trainer,
        records: list[StepRecord],
        final: bool = False,
        probe_alerts: Sequence[Alert] = (),
    ) -> None:
        multi = len(trainer.optimizers) > 1
        ctx = self._context(trainer)
        fresh: list[Alert] = list(probe_alerts)
        for record in records:
            self._update_band(record)
            announced = self._manager.submit(self._detectors.update(record, ctx))
            fresh += announced
            if not trainer.is_global_zero:
                continue
            self._announce(trainer, announced)
            if self._due(record.step, self._log_every):
                self._log_scalars(trainer, record, multi)
            if record.log_histograms is not None:
                self._log_histograms(record)
            if self._due(record.step, self.plot_every_n_steps):
                self._log_picture(record)

        self._act(trainer, fresh, final)

    def _context(self, trainer: pl.Trainer) -> StepContext:
        clip = trainer.gradient_clip_val
        by_norm = trainer.gradient_clip_algorithm in (None, "norm")
        return StepContext(
            layer_names=[layer.name for layer in self.layers],
            epoch=trainer.current_epoch,
            clip_norm=float(clip) if clip and by_norm else None,
            amp_scaler=getattr(trainer.precision_plugin, "scaler", None) is not None,
        )

    def _announce(self, trainer: pl.Trainer, alerts: list[Alert]) -> None:
        """Rank zero: console, backends and the JSON-lines file."""
        for alert in alerts:
            rank_zero_warn(alert.format(), category=GradFlowWarning)
            for writer in self._writers:
                writer.alert(alert)
            if self._alerts_path is not None:
                self._alerts_path.parent.mkdir(parents=True, exist_ok=True)
                line = {**alert.to_dict(), "count": self._manager.counts[alert.kind]}
                with self._alerts_path.open("a") as f:
                    f.write(json.dumps(line) + "\n")

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
        if must_stop and not final:
            trainer.should_stop = True
            rank_zero_warn(
                f"GradFlowMonitor: stopping training at step {trainer.global_step} "
                f"({', '.join(sorted({a.kind for a in fresh})) or 'alert on another rank'}).",
                category=GradFlowWarning,
            )

    def _update_band(self, record: StepRecord) -> None:
        norms = np.where(np.isfinite(record.layer_norms), record.layer_norms, np.nan)
        usable = np.isfinite(norms) & (norms > 0)
        if self._log_sum is None:
            self._log_sum = np.zeros(len(norms))
            self._log_count = np.zeros(len(norms))
            self._grad_steps = np.zeros(len(norms))  # steps with a gradient, per layer
            self._zero_steps = np.zeros(len(norms))  # ... of which exactly zero
        self._log_sum[usable] += np.log10(norms[usable])
        self._log_count[usable] += 1
        self._grad_steps[record.has_grad] += 1
        self._zero_steps[record.has_grad & (record.layer_norms == 0)] += 1
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
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=record.step)

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
            writer.histograms(record.step, hists)

    def _log_picture(self, record: StepRecord) -> None:
        if not self._writers or not self.layers:
            return
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # pictures are optional
            if not self._warned_no_matplotlib:
                rank_zero_warn(
                    "GradFlowMonitor: install matplotlib to log the gradient-flow picture."
                )
                self._warned_no_matplotlib = True
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
            writer.image(record.step, "grad_flow", image)

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
            (steps with a NaN/Inf gradient) and ``alert_counts``.

        Example:
            >>> GradFlowMonitor().gradient_summary()["first_last_ratio"] is None
            True
        """
        names = [layer.name for layer in self.layers]
        if self._log_sum is None:
            means, zero_share = np.full(len(names), np.nan), np.full(len(names), np.nan)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                means = self._log_sum / self._log_count
                zero_share = self._zero_steps / self._grad_steps
                means[zero_share >= 0.5] = np.nan
        fit = fit_depth_profile(10.0**means)
        return {
            "layers": names,
            "mean_log10_norm": [None if not np.isfinite(m) else float(m) for m in means],
            "zero_grad_share": [None if not np.isfinite(z) else float(z) for z in zero_share],
            "first_last_ratio": None if fit is None else fit.first_last_ratio,
            "gamma": None if fit is None else fit.gamma,
            "grad_norm_max": self._max_total if np.isfinite(self._max_total) else None,
            "nonfinite_grad_steps": self._nonfinite_steps,
            "alert_counts": self.alert_counts,
        }

    # --- checkpointing ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "detectors": self._detectors.state_dict(),
            "probe_detectors": self._probe_detectors.state_dict(),
            "alerts": self._manager.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._detectors.load_state_dict(state_dict["detectors"])
        self._probe_detectors.load_state_dict(state_dict["probe_detectors"])
        self._manager.load_state_dict(state_dict["alerts"])
