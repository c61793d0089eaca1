"""A cross-run gradient-flow report: one self-contained ``report.html`` for a log directory.

Reads the TensorBoard event files the monitor wrote (and, in a recipe sweep, each job's
``metrics.json`` and ``predictions.csv``); needs the ``tensorboard`` extra (TensorBoard and
matplotlib), imported only when a report is built.

Usage:
    lightning-gradflow report <log dir> [--out DIR]
    python -m lightning_gradflow.report <log dir> [--out DIR]

Example:
    >>> from lightning_gradflow.report import build_report
    >>> build_report("lightning_logs")  # doctest: +SKIP
    PosixPath('lightning_logs/report.html')
"""

from lightning_gradflow.report.build import build_report

__all__ = ["build_report"]
