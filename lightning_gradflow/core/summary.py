"""The run's gradient flow in a few numbers, and the band the next picture shows.

:class:`RunSummary` is fed every judged :class:`~lightning_gradflow.core.collector.StepRecord`.
It keeps, per layer and by layer name (so layers added mid-run keep their history), the sum of
log10 norms of the finite non-zero gradients, their count, the steps with a gradient and, of
those, the steps where it was exactly zero; the largest finite global norm; the number of steps
with a NaN/Inf gradient; and the low/high band of each layer's norm since the last picture.

Example:
    >>> import numpy as np
    >>> from lightning_gradflow.core.collector import StepRecord
    >>> summary = RunSummary()
    >>> summary.remap(["a", "b"])
    >>> for norms in ([1e-4, 1.0], [1e-2, 1.0]):
    ...     summary.update(StepRecord(0, 0, np.array(norms), np.array([True, True]), 1.0))
    >>> summary.as_dict()["mean_log10_norm"], summary.as_dict()["first_last_ratio"]
    ([-3.0, 0.0], 0.001)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.flow import fit_depth_profile

_PER_LAYER = ("log_sum", "log_count", "grad_steps", "zero_steps")

Band = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]


@dataclass
class RunSummary:
    """Per-layer sums over the run (see the module docstring) and the picture's band."""

    names: list[str] = field(default_factory=list)
    log_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_count: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grad_steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    zero_steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_total: float = float("nan")
    nonfinite_steps: int = 0
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def remap(self, names: list[str]) -> None:
        """Carry the sums over to a new list of layers, by name (new layers start at zero)."""
        index = {n: i for i, n in enumerate(self.names)}
        for key in _PER_LAYER:
            old = getattr(self, key)
            new = [old[index[n]] if n in index else 0.0 for n in names]
            setattr(self, key, np.asarray(new, dtype=np.float64))
        self.names = list(names)
        self.band = None

    def update(self, record: StepRecord) -> None:
        """Add one judged step."""
        norms = np.where(np.isfinite(record.layer_norms), record.layer_norms, np.nan)
        usable = np.isfinite(norms) & (norms > 0)
        self.log_sum[usable] += np.log10(norms[usable])
        self.log_count[usable] += 1
        self.grad_steps[record.has_grad] += 1
        self.zero_steps[record.has_grad & (record.layer_norms == 0)] += 1
        nonfinite = np.zeros(len(norms), dtype=bool)
        nonfinite[record.nonfinite_layers] = True
        if nonfinite.any():
            self.nonfinite_steps += 1
        elif np.isfinite(record.total_norm):
            self.max_total = float(np.fmax(self.max_total, record.total_norm))
        if self.band is None:
            self.band = (norms.copy(), norms.copy(), nonfinite)
            return
        low, high, bad = self.band
        with np.errstate(invalid="ignore"):
            self.band = (np.fmin(low, norms), np.fmax(high, norms), bad | nonfinite)

    def take_band(self) -> Band:
        """Each layer's lowest and highest norm and NaN/Inf marks since the last call."""
        band, self.band = self.band, None
        return band if band is not None else (None, None, None)

    def as_dict(self) -> dict[str, Any]:
        """See :meth:`lightning_gradflow.engine.GradFlowEngine.gradient_summary`."""
        with np.errstate(invalid="ignore"):  # 0 / 0: a layer without a gradient
            means = self.log_sum / self.log_count
            zero_share = self.zero_steps / self.grad_steps
            means[zero_share >= 0.5] = np.nan
        fit = fit_depth_profile(10.0**means)
        return {
            "layers": list(self.names),
            "mean_log10_norm": [None if not np.isfinite(m) else float(m) for m in means],
            "zero_grad_share": [None if not np.isfinite(z) else float(z) for z in zero_share],
            "first_last_ratio": None if fit is None else fit.first_last_ratio,
            "gamma": None if fit is None else fit.gamma,
            "grad_norm_max": self.max_total if np.isfinite(self.max_total) else None,
            "nonfinite_grad_steps": self.nonfinite_steps,
        }

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {key: getattr(self, key).tolist() for key in _PER_LAYER}
        state.update(
            layers=list(self.names),
            max_total=self.max_total,
            nonfinite_steps=self.nonfinite_steps,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.names = list(state["layers"])
        for key in _PER_LAYER:
            default = np.zeros(len(self.names))
            setattr(self, key, np.asarray(state.get(key, default), dtype=np.float64))
        self.max_total = float(state["max_total"])
        self.nonfinite_steps = int(state["nonfinite_steps"])
