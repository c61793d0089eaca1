"""OmegaConf resolvers used by ``conf/`` (prefix ``gf.``), registered on import.

- ``${gf.len:${data.features}}``: length of a list (the model's ``input_dim``).
- ``${gf.num_devices:${trainer.devices}}``: devices as a count (``auto``/``-1``: the visible GPUs).
- ``${gf.sweep_strategy:${trainer.devices},${trainer.num_nodes}}``: the strategy for a sweep:
  ``auto`` on one device, ``ddp`` inside a SLURM job (SLURM starts the ranks), ``ddp_spawn``
  otherwise (plain ``ddp`` relaunches the script and hangs under ``-m``).
- ``${gf.gpus_per_node:${trainer.accelerator},${trainer.devices}}``: GPUs to request per node.
- ``${gf.wandb_offline:}``: ``True`` unless ``WANDB_MODE=online``.
- ``${gf.rank_zero_only:value}``: ``value`` except on SLURM tasks other than the first (``None``).

Example:
    >>> from omegaconf import OmegaConf
    >>> OmegaConf.create({"f": [1, 2, 3], "n": "${gf.len:${f}}"}).n
    3
    >>> sweep_strategy(1, 1), num_devices([0, 1])
    ('auto', 2)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _cuda_count() -> int:
    try:
        import torch

        return max(torch.cuda.device_count(), 1)
    except ImportError:  # pragma: no cover - torch is a dependency
        return 1


def num_devices(devices: Any) -> int:
    """Number of devices a Trainer ``devices`` value asks for.

    Example:
        >>> num_devices(4), num_devices("0,1,2"), num_devices("3")
        (4, 3, 3)
    """
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return _cuda_count()
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return int(text)
    if isinstance(devices, Sequence):
        return len(devices)
    if devices == -1:
        return _cuda_count()
    return int(devices)


def in_slurm_job() -> bool:
    """True inside a batch SLURM task (not an interactive ``srun bash``), as Lightning decides."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect() and SLURMEnvironment.job_name() not in ("bash", "interactive")


def sweep_strategy(devices: Any, num_nodes: Any = 1) -> str:
    """``auto`` for one device; ``ddp`` under SLURM; ``ddp_spawn`` for several devices otherwise."""
    if num_devices(devices) * int(num_nodes) <= 1:
        return "auto"
    return "ddp" if in_slurm_job() else "ddp_spawn"


def gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs to request per node: none for a CPU run, else the Trainer's device count."""
    return None if accelerator == "cpu" else num_devices(devices)


def wandb_offline() -> bool:
    """W&B stays offline unless the environment asks for ``WANDB_MODE=online``."""
    return os.environ.get("WANDB_MODE", "offline").lower() != "online"


def rank_zero_only(value: Any) -> Any:
    """``value`` in every process except SLURM tasks with ``SLURM_PROCID > 0``."""
    return None if int(os.environ.get("SLURM_PROCID", "0")) > 0 else value


_RESOLVERS = {
    "gf.len": len,
    "gf.num_devices": num_devices,
    "gf.sweep_strategy": sweep_strategy,
    "gf.gpus_per_node": gpus_per_node,
    "gf.wandb_offline": wandb_offline,
    "gf.rank_zero_only": rank_zero_only,
}


def register() -> None:
    """Register the resolvers (idempotent)."""
    for name, fn in _RESOLVERS.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


register()
