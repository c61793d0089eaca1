"""Test-wide settings: no network, offline W&B, deterministic CPU threads."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("WANDB_CONSOLE", "off")
os.environ.setdefault("PL_DISABLE_FORK", "1")
# Under mutmut (pytest runs inside its fork server) one thread: a forked child that inherits
# libgomp's thread pool waits forever at its first parallel operation (MKL's vectorised sin).
torch.set_num_threads(1 if "mutmut" in sys.modules else 2)


@pytest.fixture(autouse=True)
def _run_in_a_temporary_directory(tmp_path, monkeypatch):
    """Whatever a run writes to its default root (the working directory) lands in tmp_path."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _no_process_group_left_behind():
    """A test that leaves a process group or LOCAL_RANK behind breaks the next one."""
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)
