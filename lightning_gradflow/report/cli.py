"""The ``lightning-gradflow`` command: ``lightning-gradflow report <dir> [--out DIR]``.

Example:
    >>> main(["report", "lightning_logs"])  # doctest: +SKIP
    report written to lightning_logs/report.html
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_gradflow.report.build import build_report


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log_dir", type=Path, help="directory with TensorBoard event files")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write report.html (default: log_dir)"
    )


def _report(args: argparse.Namespace) -> int:
    try:
        path = build_report(args.log_dir, args.out)
    except (ImportError, FileNotFoundError) as error:
        print(f"lightning-gradflow report: {error}", file=sys.stderr)
        return 1
    print(f"report written to {path}")
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """``python -m lightning_gradflow.report <dir> [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_gradflow.report",
        description="Write a gradient-flow report (report.html) for a log directory.",
    )
    _add_report_arguments(parser)
    return _report(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-gradflow <command> ...``; the exit status."""
    parser = argparse.ArgumentParser(prog="lightning-gradflow")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report", help="write a self-contained report.html comparing the runs of a directory"
    )
    _add_report_arguments(report)
    args = parser.parse_args(argv)
    return _report(args)


if __name__ == "__main__":
    sys.exit(main())
