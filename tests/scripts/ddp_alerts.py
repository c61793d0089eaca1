"""Two CPU processes (gloo) where only rank 1 sees a NaN batch at step 5 (run as a script).

Usage: python -m tests.scripts.ddp_alerts OUT_DIR ACTION   (ACTION: stop | raise)
Each rank writes ``rank<r>.json``: the step it ended at and whether it raised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from pytorch_lightning import seed_everything
from pytorch_lightning.loggers import CSVLogger

from lightning_gradflow import GradFlowMonitor, GradientPathologyError
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader
from tests.helpers.subprocess_runs import release_process_group

NAN_STEP = 5


class NanOnRankOne(Regressor):
    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_rank == 1 and self.global_step == NAN_STEP:
            x = torch.full_like(x, float("nan"))
        return super().training_step((x, y), batch_idx)


def main(out_dir: str, action: str) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    monitor = GradFlowMonitor(log_every_n_steps=1, on_alert=action, probe_every_n_steps=None)
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp",
        logger=CSVLogger(out_dir, name="csv", version=0),
        callbacks=[monitor],
        max_steps=20,
    )
    raised = False
    try:
        trainer.fit(NanOnRankOne(mlp(depth=3)), regression_loader(n=512, batch_size=8))
    except GradientPathologyError as error:
        raised = "nonfinite" in str(error)
    result = {"step": trainer.global_step, "raised": raised, "alerts": len(monitor.alerts)}
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
    release_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
