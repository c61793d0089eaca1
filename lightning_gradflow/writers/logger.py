"""Scalars to any logger with ``log_metrics(metrics, step)``: Lightning's, Fabric's, your own.

Example:
    >>> class Printer:
    ...     def log_metrics(self, metrics, step=None):
    ...         print(step, dict(metrics))
    >>> LoggerScalars(Printer()).scalars(5, {"grad_norm/total": 0.5})
    5 {'grad_norm/total': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_gradflow.core.sinks import Sink


class LoggerScalars(Sink):
    """Sends scalars to ``logger.log_metrics``; every logger type gets them, known or not."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @property
    def name(self) -> str:
        return type(self.logger).__name__

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        self.logger.log_metrics(dict(metrics), step=step)
