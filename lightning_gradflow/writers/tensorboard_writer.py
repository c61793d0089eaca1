"""TensorBoard writer: raw histograms from on-device counts, images and alerts as text.

A step's scalars, and its histograms, are written as **one** event each: ``add_scalar`` per tag
puts one event per tag on the writer's queue (10 long by default), and with ~230 tags the
training thread waits on the writer thread for tens of milliseconds every logged step.

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


def histogram_fields(histograms: Mapping[str, Histogram]) -> dict[str, dict[str, Any]]:
    """``add_histogram_raw``'s arguments for each histogram with a count, its statistics taken
    from the bucket centres; those sharing their edges (every layer's log10 histogram) are
    computed together, as one matrix.

    Example:
        >>> edges = np.array([0.0, 1.0, 2.0])
        >>> hists = {"a": (np.array([1.0, 3.0]), edges), "b": (np.zeros(2), edges)}
        >>> fields = histogram_fields(hists)
        >>> list(fields), fields["a"]["sum"], fields["a"]["max"]
        (['a'], 5.0, 2.0)
    """
    groups: dict[bytes, tuple[np.ndarray, list[str], list[np.ndarray]]] = {}
    for tag, (counts, edges) in histograms.items():
        edges = np.asarray(edges, dtype=np.float64)  # pragma: no mutate (float input)
        group = groups.setdefault(edges.tobytes(), (edges, [], []))
        group[1].append(tag)
        group[2].append(np.asarray(counts, dtype=np.float64))  # pragma: no mutate (float input)
    fields = {}
    for edges, tags, rows in groups.values():
        counts = np.stack(rows)
        centres = (edges[:-1] + edges[1:]) / 2
        totals = counts.sum(axis=1)
        sums, squares = counts @ centres, counts @ centres**2
        used = counts != 0
        first = used.argmax(axis=1)
        last = counts.shape[1] - used[:, ::-1].argmax(axis=1)
        limits = edges[1:].tolist()
        for i, tag in enumerate(tags):
            if totals[i] > 0:
                fields[tag] = {
                    "min": float(edges[first[i]]),
                    "max": float(edges[last[i]]),
                    "num": float(totals[i]),
                    "sum": float(sums[i]),
                    "sum_squares": float(squares[i]),
                    "bucket_limits": limits,
                    "bucket_counts": counts[i].tolist(),
                }
    return {tag: fields[tag] for tag in histograms if tag in fields}


class TensorBoardWriter(Sink):
    """Writes to a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger`` holds).

    Histograms are written raw (TensorBoard's ``histogram_raw``): the bucket counts computed on
    the device are stored as they are, with summary statistics taken from the bucket centres.

    A ``torch.utils.tensorboard.SummaryWriter`` gets each call's scalars or histograms as one
    event; any other writer object (``tensorboardX``'s, your own) gets one ``add_scalar`` /
    ``add_histogram_raw`` call per tag.

    Args:
        summary_writer: the ``SummaryWriter``.
        scalars: also write scalars (a plain loop, or a TensorBoard logger's scalars: see
            :meth:`for_logger`).
        prefix: put before every scalar tag (a Lightning logger's ``prefix``, joined by ``-``).
    """

    def __init__(self, summary_writer: Any, scalars: bool = False, prefix: str = "") -> None:
        self.summary_writer = summary_writer
        self.write_scalars = scalars
        self.prefix = f"{prefix}-" if prefix else ""
        self._batched = type(summary_writer).__module__.startswith("torch.utils.tensorboard")

    @classmethod
    def for_logger(cls, logger: Any) -> TensorBoardWriter:
        """Everything for a Lightning or Fabric ``TensorBoardLogger``, its scalars included
        (one event per step rather than the logger's one per tag), under its prefix."""
        return cls(logger.experiment, scalars=True, prefix=getattr(logger, "_prefix", ""))

    def start(self, num_optimizers: int) -> None:
        self.summary_writer.add_custom_scalars(gradient_flow_layout(max(num_optimizers, 1)))

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.write_scalars:
            return
        tags = {f"{self.prefix}{tag}": float(value) for tag, value in metrics.items()}
        if not self._batched:
            for tag, value in tags.items():
                self.summary_writer.add_scalar(tag, value, global_step=step)
            return
        from torch.utils.tensorboard.summary import scalar

        self._write(step, [v for tag, value in tags.items() for v in scalar(tag, value).value])

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        fields = histogram_fields(histograms)
        if not self._batched:
            for tag, values in fields.items():
                self.summary_writer.add_histogram_raw(tag, **values, global_step=step)
            return
        from torch.utils.tensorboard.summary import histogram_raw

        self._write(
            step, [v for tag, values in fields.items() for v in histogram_raw(tag, **values).value]
        )

    def _write(self, step: int, values: list[Any]) -> None:
        """One event holding every value (what ``add_scalar`` does for one)."""
        if not values:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.summary_writer._get_file_writer().add_summary(Summary(value=values), step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        fmt = "HWC"  # pragma: no mutate (TensorBoard upper-cases it)
        self.summary_writer.add_image(tag, image, global_step=step, dataformats=fmt)

    def alert(self, alert: Alert, count: int) -> None:
        text = (
            f"**{alert.severity}** at step {alert.step}: {alert.message}\n\n"
            f"*threshold* {alert.threshold:g}, *value* {alert.value:.4g}\n\n*fix:* {alert.hint}"
        )
        self.summary_writer.add_text(f"alerts/{alert.kind}", text, global_step=alert.step)
