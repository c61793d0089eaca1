"""Train a tiny regressor with GradFlowMonitor on 1 or 2 CPU processes (run as a script).

Usage: python -m tests.scripts.ddp_gradflow OUT_DIR DEVICES
With DEVICES=2, Lightning's ``ddp`` strategy relaunches this command for rank 1 (gloo).
"""

from __future__ import annotations

import sys

import torch
from pytorch_lightning import seed_everything
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, DistributedSampler

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader

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


def main(out_dir: str, devices: int) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    model = InOrder(mlp(depth=3))
    monitor = GradFlowMonitor(log_every_n_steps=1, histogram_every_n_steps=2, plot_every_n_steps=4)
    trainer = quiet_trainer(
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=TensorBoardLogger(out_dir, name="tb", version=0),
        callbacks=[monitor],
        max_steps=6,
        use_distributed_sampler=False,
    )
    trainer.fit(model)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
