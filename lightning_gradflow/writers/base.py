"""The interface every backend writer implements.

Scalars never go through a writer: the callback sends them to every Lightning logger with
``logger.log_metrics``. Writers carry only what needs backend-specific calls: histograms,
images and alert text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

Histogram = tuple[np.ndarray, np.ndarray]
"""``(counts, edges)`` with ``len(edges) == len(counts) + 1``, as returned by ``np.histogram``."""


class Writer(Protocol):
    """A backend that can show histograms, images and alert text."""

    def histograms(self, step: int, histograms: Mapping[str, Histogram]) -> None:
        """Write one histogram per tag at ``step``."""

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Write an ``(height, width, 3)`` uint8 image at ``step``."""

    def text(self, step: int, tag: str, text: str) -> None:
        """Write a piece of markdown text at ``step``."""
