"""Weights & Biases writer: histograms from on-device counts, images and alerts.

Announced alerts go to W&B's alert feed (``run.alert``) and to one table, ``gradflow/alerts``,
re-logged with every new alert; the run's summary numbers go to the run summary at the end.

Every call logs ``trainer/global_step`` beside its values, the step metric that Lightning's
``WandbLogger`` declares, so W&B plots these against the same x-axis as the scalars.

W&B refuses histograms of more than 512 bins. Finer ones (``linear_histogram_bins=1000``, a
``LogBins`` with many bins per decade) are merged here, on the host, rather than refused at
construction, so TensorBoard keeps every bin: see :func:`merge_bins`.

Example:
    >>> import wandb  # doctest: +SKIP
    >>> writer = WandbWriter(wandb.init(mode="offline"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.sinks import Histogram, Sink

STEP_KEY = "trainer/global_step"
ALERTS_TABLE = "gradflow/alerts"
ALERT_COLUMNS = ("step", "kind", "severity", "layers", "value", "threshold", "message", "hint")


def merge_bins(counts: np.ndarray, edges: np.ndarray, max_bins: int) -> Histogram:
    """At most ``max_bins`` bins: the two outer bins as they are, the inner ones merged in runs.

    The outer bins are kept because the log10 histograms hold exact zeros and non-finite values
    there. Runs of ``k`` adjacent inner bins (the last run may be shorter) are summed, with ``k``
    the smallest that fits, so the total count is unchanged.

    Example:
        >>> merge_bins(np.arange(6.0), np.arange(7.0), max_bins=4)
        (array([0., 3., 7., 5.]), array([0., 1., 3., 5., 6.]))
    """
    counts, edges = np.asarray(counts), np.asarray(edges)
    if len(counts) <= max_bins:
        return counts, edges
    run = -(-(len(counts) - 2) // (max_bins - 2))
    starts = np.arange(0, len(counts) - 2, run)
    merged = np.add.reduceat(counts[1:-1], starts)
    return (
        np.concatenate([counts[:1], merged, counts[-1:]]),
        np.concatenate([edges[:1], edges[1:-2][starts], edges[-2:]]),
    )


class WandbWriter(Sink):
    """Writes to a ``wandb`` run (what ``WandbLogger.experiment`` returns).

    Args:
        run: the run.
        scalars: also log scalars (a plain loop); under Lightning the logger logs them.
    """

    def __init__(self, run: Any, scalars: bool = False) -> None:
        import wandb

        self._wandb = wandb
        self.run = run
        self.write_scalars = scalars
        self._alert_rows: list[list[Any]] = []

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.write_scalars:
            self.run.log({**metrics, STEP_KEY: step})

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        limit = self._wandb.Histogram.MAX_LENGTH
        data = {
            tag: self._wandb.Histogram(np_histogram=merge_bins(c, e, limit))
            for tag, (c, e) in histograms.items()
        }
        if data:
            self.run.log({**data, STEP_KEY: step})

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self.run.log({tag: self._wandb.Image(image), STEP_KEY: step})

    def alert(self, alert: Alert, count: int) -> None:
        level = (
            self._wandb.AlertLevel.ERROR
            if alert.severity == "critical"
            else (self._wandb.AlertLevel.WARN)
        )
        self.run.alert(
            title=f"gradflow: {alert.kind} at step {alert.step}",
            text=f"{alert.message}\nThreshold {alert.threshold:g}. Fix: {alert.hint}",
            level=level,
            wait_duration=0,
        )
        self._alert_rows.append(
            [
                alert.step,
                alert.kind,
                alert.severity,
                ", ".join(alert.layers),
                alert.value,
                alert.threshold,
                alert.message,
                alert.hint,
            ]
        )
        table = self._wandb.Table(columns=list(ALERT_COLUMNS), data=self._alert_rows)
        self.run.log({ALERTS_TABLE: table, STEP_KEY: alert.step})

    def finish(self, summary: Mapping[str, float]) -> None:
        self.run.summary.update(dict(summary))
