"""Run a test script as a fresh Python process (real multi-process DDP needs one), and end one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository root; fails the test on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-12000:]
    return proc


def release_process_group() -> None:
    """Destroy the default process group at the end of a DDP script.

    Lightning leaves it alive after ``fit``; a gloo group still alive at interpreter exit can
    abort the process ("terminate called without an active exception", pytorch#190489).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
