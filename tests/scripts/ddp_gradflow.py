"""Train a tiny regressor with GradFlowMonitor on 1 or 2 CPU processes (run as a script).

Usage: python -m tests.scripts.ddp_gradflow OUT_DIR DEVICES [ddp | fsdp]
With DEVICES=2, Lightning relaunches this command for rank 1 (gloo). ``fsdp`` shards every
Linear layer's parameters (and gradients) across the two ranks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from pytorch_lightning import seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader
from tests.helpers.subprocess_runs import release_process_group

GLOBAL_BATCH = 16


class InOrder(Regressor):
    """Each rank takes every other sample in order, so the global batch equals one process's."""

    def train_dataloader(self) -> DataLoader:
        dataset = regression_loader(n=128).dataset
        world = self.trainer.world_size
        sampler = DistributedSampler(
            dataset, num_replicas=world, rank=self.trainer.global_rank, shuffle=False
        )
        return DataLoader(dataset, batch_size=GLOBAL_BATCH // world, sampler=sampler)


class Sharded(InOrder):
    """FSDP2: every Linear layer's parameters (and gradients) become DTensor shards.

    Lightning's ``FSDPStrategy`` (FSDP1) needs CUDA; ``ModelParallelStrategy`` runs FSDP2 on
    CPU/gloo.
    """

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)


def _strategy(devices: int, name: str) -> str | ModelParallelStrategy:
    if devices == 1:
        return "auto"
    if name == "fsdp":
        return ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1)
    return name


OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def main(out_dir: str, devices: int, strategy: str = "ddp", optimizer: str = "sgd") -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    model = (Sharded if strategy == "fsdp" and devices > 1 else InOrder)(
        mlp(depth=3), optimizer=OPTIMIZERS[optimizer]
    )
    monitor = GradFlowMonitor(
        log_every_n_steps=1,
        histogram_every_n_steps=2,
        plot_every_n_steps=4,
        linear_histogram_bins=8,
    )
    trainer = quiet_trainer(
        devices=devices,
        strategy=_strategy(devices, strategy),
        logger=TensorBoardLogger(out_dir, name="tb", version=0),
        callbacks=[monitor],
        max_steps=6,
        use_distributed_sampler=False,
    )
    trainer.fit(model)
    if trainer.is_global_zero:  # what the monitor saw: DTensor shards under fsdp
        kinds = sorted({type(p).__name__ for p in model.parameters()})
        Path(out_dir, "parameter_types.txt").write_text(" ".join(kinds))
    release_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
