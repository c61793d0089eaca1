"""Helpers for the recipe tests: compose configs from ``conf/`` and run the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import recipes.resolvers  # noqa: F401  (registers the gf.* resolvers)

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "conf"
MODELS = (
    "mlp_vanilla",
    "resnet",
    "transformer_prenorm",
    "lstm",
    "rnn_vanilla",
    "transformer_postnorm",
    "mlp_relu",
    "rnn_orthogonal",
)
# ~135 training days of simulated data, three steps: a run takes about a second
TINY = (
    "trainer=debug",
    "data=garch_sim",
    "data.sim_days=1700",
    "data.batch_size=64",
    "num_threads=1",
    "logger=csv",
)


@contextmanager
def composed(
    overrides: Sequence[str] = (), *, return_hydra_config: bool = False
) -> Iterator[DictConfig]:
    """``conf/train.yaml`` composed with ``overrides``; Hydra's global state is cleared after."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            yield compose(
                "train", overrides=list(overrides), return_hydra_config=return_hydra_config
            )
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """An empty working directory: nothing may be written to it."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


@pytest.fixture
def compose_cfg(tmp_path: Path):
    """Compose with ``paths.output_dir`` pointing into ``tmp_path`` (no Hydra run needed)."""

    def _compose(overrides: Sequence[str] = (), **kwargs: Any) -> Any:
        return composed([f"paths.output_dir={tmp_path / 'out'}", *overrides], **kwargs)

    return _compose


def run_cli(
    args: Sequence[str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python -m recipes.train <args>`` in ``cwd``, with a clean distributed environment."""
    drop = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        HYDRA_FULL_ERROR="0",
    )
    return subprocess.run(
        [sys.executable, "-m", "recipes.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with the tail of stderr/stdout if the CLI failed."""
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
