"""``python -m lightning_gradflow.report <dir> [--out DIR]``."""

import sys

from lightning_gradflow.report.cli import report_main

sys.exit(report_main())
