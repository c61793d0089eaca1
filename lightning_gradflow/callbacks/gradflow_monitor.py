"""GradFlowMonitor for ``pytorch_lightning``: per-layer gradient norms, histograms, alerts.

The callback only translates: Lightning's hooks drive a
:class:`~lightning_gradflow.engine.GradFlowEngine` (plain torch), and what comes out goes to
every logger the Trainer has. For the unified ``lightning`` package use
:mod:`lightning_gradflow.lightning`, for Fabric :mod:`lightning_gradflow.fabric`, for a plain
PyTorch loop :mod:`lightning_gradflow.torch`.

Example:
    >>> from pytorch_lightning import Trainer
    >>> from lightning_gradflow import GradFlowMonitor
    >>> trainer = Trainer(callbacks=[GradFlowMonitor(histogram_every_n_steps=200)])
"""

from __future__ import annotations

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.strategies import FSDPStrategy

from lightning_gradflow.callbacks.lightning_hooks import Framework, GradFlowHooks
from lightning_gradflow.core.sinks import GradFlowWarning
from lightning_gradflow.writers.alert_file import ALERTS_FILE

__all__ = ["ALERTS_FILE", "GradFlowMonitor", "GradFlowWarning"]


class GradFlowMonitor(GradFlowHooks, Callback):
    """Logs how the gradient flows through every layer, at a cost small enough to leave on.

    Every optimizer step, per-layer gradient norms are computed on the device in a few batched
    kernels and kept there; on logged steps everything pending is copied to the host at once.

    Logged scalars (to every logger, at ``log_every_n_steps`` and at the run's last step),
    under the same tags for every architecture:

    * ``grad_flow/first_last_ratio`` (and its ``log10_``), ``grad_flow/gamma`` (per-layer
      factor of the depth fit), ``grad_flow/dead_layers`` (below the vanishing floor),
      ``grad_flow/min_log10_norm`` and ``grad_flow/max_log10_norm``: the story in a few cards;
    * ``grad_norm/total`` and ``grad_nonfinite/layers``;
    * per layer, tagged ``<depth index>.<layer>`` so text order is depth order:
      ``grad_log10_norm/`` (an exact zero as -13, NaN/Inf as NaN), ``weight_norm/`` and
      ``update_ratio_log10/`` (``||Δθ|| / ||θ||`` of that step's update);
    * ``alerts/announced/<kind>`` and ``alerts/active_steps/<kind>`` (steps the condition held).

    Histograms of log10|g| per layer (``grad_log10_hist/<index>.<layer>``) go to TensorBoard and
    W&B, and the gradient-flow picture (``grad_flow/picture``) too, at the first step, every
    ``histogram_every_n_steps``/``plot_every_n_steps`` and at the last step (the picture also
    when a run ends early). TensorBoard gets a Custom Scalars layout; W&B an alerts table and
    the run's summary numbers (:meth:`run_summary`) in its run summary.

    Args:
        log_every_n_steps: scalar logging interval in optimizer steps; ``None`` takes the
            Trainer's ``log_every_n_steps``.
        histogram_every_n_steps: histogram interval; ``"auto"``: 500, or a tenth of the run
            when its length is known (a short run still gets several), postponed while
            histograms and pictures have taken more than 1 % of the run's time; ``None``: off.
        plot_every_n_steps: gradient-flow picture interval, as above.
        granularity: ``"layer"`` (parameters grouped by owning module) or ``"block"`` (by
            element of the outermost ``ModuleList``/``Sequential``, for very deep models).
        log_weight_norms: log per-layer weight norms on logged steps (the weights are read
            there anyway, in the gradients' batched norm, for the ``exploding`` update check;
            other steps read the gradients alone, except check steps and the step after each).
        log_update_ratios: log per-layer update-to-weight ratios on logged steps. Memory:
            for Adam, AdamW and SGD with momentum the update is read from the optimizer's
            state after the step (a few temporaries of the largest parameter); any other
            optimizer gets a copy of every parameter (in its dtype) from the capture until it
            has stepped, so a logged step's peak grows by the parameters' size (the difference
            is taken in place in that copy); ``False`` avoids it. Writing them and
            the weight norms costs ~2.5 ms per logged step for ~230 scalars to TensorBoard and
            W&B together (0.05 ms a step at the default 50), so both stay at the gradients'
            rate.
        linear_histogram_bins: also log a histogram of raw gradient values with this many bins.
        histogram_bins: the log10 bins (default 1e-12 … 1e4, four per decade).
        sharded: plain parameters are FSDP1 shards: sum squared norms and histogram counts
            over ranks before reporting; ``None`` detects Lightning's ``FSDPStrategy``.
            ``DTensor`` parameters (FSDP2, tensor parallel) are detected and reduced anyway.
        detectors: thresholds of the gradient detectors (:class:`DetectorConfig`, or a mapping
            of its fields, as Hydra builds it).
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
        locate_nan_origin: on the first step of a NaN/Inf streak, re-run its forward pass to
            name the module and op where the first bad value appeared.
        flow_log10_range: fixed ``(low, high)`` log10 limits of the picture's y-axis and the
            heatmap's colours, e.g. ``(-12, 2)``, so images compare across steps and runs;
            ``None``: from the data (the heatmap spans at least 6 decades).
        sinks: extra outputs (:class:`~lightning_gradflow.core.sinks.Sink`) beside the
            loggers, e.g. one that forwards alerts to a chat.

    Raises:
        ValueError: for an interval that is not a positive integer, an unknown granularity,
            a bad number of bins, threshold, kind or action.

    Alerts are in :attr:`alerts` (in order), counted per kind in :attr:`alert_counts`, printed
    once on rank zero as one line (category :class:`GradFlowWarning`), written as text to
    TensorBoard, as ``run.alert`` plus a row of the ``gradflow/alerts`` table to W&B, counted in
    the ``alerts/*`` scalars, and as a line of ``gradflow_alerts.jsonl`` in the run's log
    directory.
    """

    framework = Framework(TensorBoardLogger, WandbLogger, FSDPStrategy)
