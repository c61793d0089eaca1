"""``"auto"`` pictures under DDP when the ranks' time budgets disagree: rank 0's budget always
allows a picture, rank 1's never (run as a script). A step planned for a picture on one rank only
would flush, a collective, on that rank alone and hang the run.

Usage: python -m tests.scripts.ddp_budget OUT_DIR
Rank zero writes TensorBoard events under OUT_DIR/tb/version_0; each rank ``rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, regression_loader
from tests.helpers.subprocess_runs import release_process_group

STEPS = 40


class DisagreeingBudgets(pl.Callback):
    """Makes rank 0's budget always allow and rank 1's never."""

    def __init__(self, monitor: GradFlowMonitor):
        self.monitor = monitor

    def on_train_start(self, trainer, pl_module):
        rank = trainer.global_rank
        self.monitor.engine._budget.allows = lambda: rank == 0


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    monitor = GradFlowMonitor(log_every_n_steps=10, probe_every_n_steps=None)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=TensorBoardLogger(out_dir, name="tb", version=0),
        callbacks=[monitor, DisagreeingBudgets(monitor)],
        max_steps=STEPS,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Regressor(mlp(depth=2)), regression_loader(n=2048, batch_size=8))
    result = {"step": trainer.global_step}
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
    release_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
