"""TensorBoard writer: raw histograms from on-device counts, images and alerts as text.

Example:
    >>> from torch.utils.tensorboard import SummaryWriter  # doctest: +SKIP
    >>> writer = TensorBoardWriter(SummaryWriter("runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.sinks import Histogram, Sink
from lightning_gradflow.writers.tensorboard_layout import gradient_flow_layout


class TensorBoardWriter(Sink):
    """Writes to a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger`` holds).

    Histograms are written with ``add_histogram_raw``: the bucket counts computed on the device
    are stored as they are, with summary statistics taken from the bucket centres.

    Args:
        summary_writer: the ``SummaryWriter``.
        scalars: also write scalars (a plain loop); under Lightning the logger writes them.
    """

    def __init__(self, summary_writer: Any, scalars: bool = False) -> None:
        self.summary_writer = summary_writer
        self.write_scalars = scalars

    def start(self, num_optimizers: int) -> None:
        self.summary_writer.add_custom_scalars(gradient_flow_layout(max(num_optimizers, 1)))

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.write_scalars:
            for tag, value in metrics.items():
                self.summary_writer.add_scalar(tag, value, global_step=step)

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        for tag, (counts, edges) in histograms.items():
            counts = np.asarray(counts, dtype=np.float64)  # pragma: no mutate (float input)
            edges = np.asarray(edges, dtype=np.float64)  # pragma: no mutate (float input)
            total = float(counts.sum())
            if total <= 0:
                continue
            centres = (edges[:-1] + edges[1:]) / 2
            used = np.flatnonzero(counts)
            self.summary_writer.add_histogram_raw(
                tag,
                min=float(edges[used[0]]),
                max=float(edges[used[-1] + 1]),
                num=total,
                sum=float((counts * centres).sum()),
                sum_squares=float((counts * centres**2).sum()),
                bucket_limits=edges[1:].tolist(),
                bucket_counts=counts.tolist(),
                global_step=step,
            )

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        fmt = "HWC"  # pragma: no mutate (TensorBoard upper-cases it)
        self.summary_writer.add_image(tag, image, global_step=step, dataformats=fmt)

    def alert(self, alert: Alert, count: int) -> None:
        text = (
            f"**{alert.severity}** at step {alert.step}: {alert.message}\n\n"
            f"*threshold* {alert.threshold:g}, *value* {alert.value:.4g}\n\n*fix:* {alert.hint}"
        )
        self.summary_writer.add_text(f"alerts/{alert.kind}", text, global_step=alert.step)
