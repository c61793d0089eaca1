"""The unified ``lightning`` package under DDP: two CPU processes (gloo), where only rank 1 sees a
NaN batch at step 5 (run as a script).

Usage: python -m tests.scripts.ddp_lightning OUT_DIR ACTION   (ACTION: stop | raise)
Each rank writes ``rank<r>.json``: the step it ended at, whether it raised, its alert count.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightning_gradflow import GradientPathologyError
from lightning_gradflow.lightning import GradFlowMonitor
from tests.helpers.lightning_models import mlp, regression_loader
from tests.helpers.subprocess_runs import release_process_group

NAN_STEP = 5


class NanOnRankOne(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = mlp(depth=3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_rank == 1 and self.global_step == NAN_STEP:
            x = torch.full_like(x, float("nan"))
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main(out_dir: str, action: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    monitor = GradFlowMonitor(
        log_every_n_steps=1, histogram_every_n_steps=5, on_alert=action, probe_every_n_steps=5
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=TensorBoardLogger(out_dir, name="tb", version=0),
        callbacks=[monitor],
        max_steps=20,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    raised = False
    try:
        trainer.fit(NanOnRankOne(), regression_loader(n=512, batch_size=8))
    except GradientPathologyError as error:
        raised = "nonfinite" in str(error)
    result = {"step": trainer.global_step, "raised": raised, "alerts": len(monitor.alerts)}
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
    release_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
