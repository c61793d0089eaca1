"""OmegaConf resolvers used by ``conf/`` (prefix ``gf.``), registered on import.

- ``${gf.len:${data.features}}``: length of a list (the model's ``input_dim``).
- ``${gf.num_devices:${trainer.devices}}``: devices as a count (``auto``/``-1``: the visible GPUs).
- ``${gf.sweep_strategy:${trainer.devices},${trainer.num_nodes}}``: the strategy for a sweep:
  ``auto`` on one device, ``ddp`` inside a SLURM job (SLURM starts the ranks), ``ddp_spawn``
  otherwise (plain ``ddp`` relaunches the script and hangs under ``-m``).
- ``${gf.gpus_per_node:${trainer.accelerator},${trainer.devices}}``: GPUs to request per node.
- ``${gf.wandb_offline:}``: ``True`` unless ``WANDB_MODE=online``.
- ``${gf.rank_zero_only:value}``: ``value`` except on SLURM tasks other than the first (``None``).
- ``${gf.run_name:}``, ``${gf.run_group:}``, ``${gf.run_tags:}``: the job's name from its
  overrides, its sweep (``<task_name>/<sweep dir name>``; a single run: ``task_name``) and its
  W&B tags (see :mod:`recipes.run_names`).
- ``${gf.single_run:}``: ``True`` in a single Hydra run, ``False`` in a multirun job or outside
  Hydra (progress bar and model summary only where one run has the console).

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

from omegaconf import ListConfig, OmegaConf

from recipes.run_names import JobNames, run_name, run_tags, swept_keys

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


def _hydra_config() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def single_run() -> bool:
    """``True`` inside ``@hydra.main`` without ``-m``."""
    from hydra.types import RunMode

    hc = _hydra_config()
    return hc is not None and hc.mode == RunMode.RUN


def job_names(task_name: str, model: str) -> JobNames:
    """The current job's name, group and tags; outside Hydra: ``model``, ``task_name``,
    ``[model]`` (``model``: the name used when no override names the run)."""
    from hydra.types import RunMode

    hc = _hydra_config()
    if hc is None:
        return JobNames(model, task_name, [model])
    model = hc.runtime.choices.get("model") or model
    overrides = list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN:
        swept = swept_keys(hc.sweep.dir, hc.sweeper.get("params"))
        group = f"{task_name}/{Path(str(hc.sweep.dir)).name}"
    else:
        swept, group = set(), task_name
    return JobNames(run_name(overrides, model, swept), group, run_tags(overrides, model))


def _names(root: Any) -> JobNames:
    net = str(root.model.net.get("_target_", "")) if "model" in root else ""
    return job_names(str(root.get("task_name") or "train"), net.rsplit(".", 1)[-1] or "model")


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
    "gf.single_run": single_run,
    "gf.run_name": lambda *, _root_: _names(_root_).name,
    "gf.run_group": lambda *, _root_: _names(_root_).group,
    # a ListConfig, not a list: OmegaConf.resolve() cannot put a plain list into the node
    "gf.run_tags": lambda *, _root_: ListConfig(_names(_root_).tags),
}


def register() -> None:
    """Register the resolvers (idempotent)."""
    for name, fn in _RESOLVERS.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


register()
