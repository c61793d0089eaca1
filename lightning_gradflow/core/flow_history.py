"""Per-layer log10 gradient norms over training, in bounded memory: what the heatmap draws.

:class:`FlowHistory` keeps a ``(layers, columns)`` grid. Each column holds one or more
consecutive logged steps; once there are ``max_columns`` columns, adjacent pairs merge (each
merged column keeps the earlier step) and later columns take twice as many steps each, so a long
run costs at most ``max_columns`` columns and every column but the last covers as many steps.

A cell reads (:meth:`FlowHistory.log10_norms`), first match wins:

- :data:`NONFINITE_LOG10` (``+inf``) if the layer's gradient was NaN/Inf on any of its steps;
- :data:`ZERO_LOG10` if it was exactly zero on at least half of its steps with a finite gradient
  (as :class:`~lightning_gradflow.core.summary.RunSummary` counts a layer as zero);
- the mean log10 norm over its steps with a finite non-zero gradient;
- NaN if the layer had no gradient on any of its steps.

Layers are kept by name: :meth:`FlowHistory.remap` carries their rows over to a new list.

Example:
    >>> import numpy as np
    >>> history = FlowHistory(["in", "out"], max_columns=2)
    >>> for step, norms in enumerate([[1e-4, 1.0], [1e-2, 1e2], [0.0, np.inf]]):
    ...     history.add(step, np.array(norms))
    >>> history.steps.tolist(), history.log10_norms().tolist()
    ([0, 2], [[-3.0, -13.0], [1.0, inf]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ZERO_LOG10 = -13.0
"""The log10 norm an exactly zero gradient is shown as: one decade below the histogram floor."""

NONFINITE_LOG10 = float("inf")
"""The log10 norm a NaN/Inf gradient is shown as."""

_CELLS = ("log_sum", "log_count", "zero_count", "nonfinite")


class FlowHistory:
    """Per-layer log10 gradient norms of the logged steps, merged into ``max_columns`` columns.

    Args:
        names: layer names in depth order (input side first).
        max_columns: the most columns kept (at least 2).

    Raises:
        ValueError: if ``max_columns`` is below 2.
    """

    def __init__(self, names: Sequence[str] = (), max_columns: int = 200) -> None:
        if max_columns < 2:
            raise ValueError(f"FlowHistory: max_columns={max_columns!r}; allowed: an int >= 2")
        self.max_columns = max_columns
        self.names = list(names)
        self.steps = np.zeros(0, dtype=np.int64)
        self.widths = np.zeros(0, dtype=np.int64)
        self.stride = 1
        layers = len(self.names)
        self.log_sum = np.zeros((layers, 0))
        self.log_count = np.zeros((layers, 0), dtype=np.int64)
        self.zero_count = np.zeros((layers, 0), dtype=np.int64)
        self.nonfinite = np.zeros((layers, 0), dtype=bool)

    def add(self, step: int, norms: np.ndarray, has_grad: np.ndarray | None = None) -> None:
        """Record one logged step.

        Args:
            step: the optimizer step.
            norms: each layer's gradient L2 norm, in the order of :attr:`names`.
            has_grad: which layers had a gradient; by default those whose norm is not NaN (so a
                NaN norm means "no gradient" and an infinite one "non-finite gradient").

        Raises:
            ValueError: if ``norms`` does not hold one value per layer.
        """
        norms = np.asarray(norms, dtype=np.float64)
        if norms.shape != (len(self.names),):
            raise ValueError(
                f"FlowHistory.add: {norms.shape[0] if norms.ndim else 0} norms for "
                f"{len(self.names)} layers; pass one norm per layer (call remap first)"
            )
        has_grad = ~np.isnan(norms) if has_grad is None else np.asarray(has_grad, dtype=bool)
        finite = has_grad & np.isfinite(norms)
        positive = finite & (norms > 0)
        if not self.steps.size or self.widths[-1] >= self.stride:
            if self.steps.size >= self.max_columns:
                self._halve()
            if not self.steps.size or self.widths[-1] >= self.stride:
                self._append_column(step)
        self.widths[-1] += 1
        self.log_sum[positive, -1] += np.log10(norms[positive])
        self.log_count[finite, -1] += 1
        self.zero_count[finite & (norms == 0), -1] += 1
        self.nonfinite[has_grad & ~np.isfinite(norms), -1] = True

    def log10_norms(self) -> np.ndarray:
        """The ``(layers, columns)`` grid of log10 norms, read as the module docstring says."""
        positive = self.log_count - self.zero_count
        out = np.full(self.log_sum.shape, np.nan)
        np.divide(self.log_sum, positive, out=out, where=positive > 0)
        out[(self.log_count > 0) & (2 * self.zero_count >= self.log_count)] = ZERO_LOG10
        out[self.nonfinite] = NONFINITE_LOG10
        return out

    def remap(self, names: Sequence[str]) -> None:
        """Carry the rows over to a new list of layers, by name (new layers start empty)."""
        index = {n: i for i, n in enumerate(self.names)}
        rows = [index.get(n, -1) for n in names]
        for key in _CELLS:
            old = getattr(self, key)
            new = np.zeros((len(rows), old.shape[1]), dtype=old.dtype)
            for i, row in enumerate(rows):
                if row >= 0:
                    new[i] = old[row]
            setattr(self, key, new)
        self.names = list(names)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {key: getattr(self, key).tolist() for key in _CELLS}
        state.update(
            layers=list(self.names),
            steps=self.steps.tolist(),
            widths=self.widths.tolist(),
            stride=self.stride,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; merges columns if it holds more than ``max_columns``."""
        self.names = list(state["layers"])
        self.steps = np.asarray(state["steps"], dtype=np.int64)
        self.widths = np.asarray(state["widths"], dtype=np.int64)
        self.stride = int(state["stride"])
        shape = (len(self.names), self.steps.size)
        for key in _CELLS:
            dtype = getattr(self, key).dtype
            setattr(self, key, np.asarray(state[key], dtype=dtype).reshape(shape))
        while self.steps.size > self.max_columns:
            self._halve()

    def _append_column(self, step: int) -> None:
        self.steps = np.append(self.steps, step)
        self.widths = np.append(self.widths, 0)
        for key in _CELLS:
            old = getattr(self, key)
            setattr(self, key, np.concatenate([old, np.zeros((old.shape[0], 1), old.dtype)], 1))

    def _halve(self) -> None:
        """Merge columns pairwise (0+1, 2+3, ...); each merged column keeps the earlier step."""
        starts = np.arange(0, self.steps.size, 2)
        self.steps = self.steps[starts]
        self.widths = np.add.reduceat(self.widths, starts)
        for key in _CELLS[:3]:
            setattr(self, key, np.add.reduceat(getattr(self, key), starts, axis=1))
        self.nonfinite = np.logical_or.reduceat(self.nonfinite, starts, axis=1)
        self.stride *= 2
