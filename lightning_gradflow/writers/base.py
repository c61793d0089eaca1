"""The interface every backend writer implements.

Scalars never go through a writer: the callback sends them to every Lightning logger with
``logger.log_metrics``. Writers carry only what needs backend-specific calls: histograms,
images and alert text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from lightning_gradflow.core.alerts import Alert

Histogram = tuple[np.ndarray, np.ndarray]
"""``(counts, edges)`` with ``len(edges) == len(counts) + 1``, as returned by ``np.histogram``."""


class Writer(Protocol):
    """A backend that can show histograms, images and alerts."""

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        """Write one histogram per tag at ``step``."""

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Write an ``(height, width, 3)`` uint8 image at ``step``."""

    def alert(self, alert: Alert) -> None:
        """Show an alert (as text, or the backend's own alert mechanism)."""
