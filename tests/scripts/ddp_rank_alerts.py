"""Two CPU processes (gloo) whose monitors see different alerts (run as a script).

A parameter (``gate.scale``) is left out of DDP's gradient all-reduce, so each rank keeps its own
gradient for it; at step 5 that gradient turns NaN on rank 1 only. Rank 1's monitor sees
``nonfinite``, rank 0's sees nothing: ``stop`` and ``raise`` must still be carried out by both.

Usage: python -m tests.scripts.ddp_rank_alerts OUT_DIR ACTION   (ACTION: stop | raise)
Each rank writes ``rank<r>.json``: the step it ended at, whether it raised, its alerts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from pytorch_lightning import seed_everything
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lightning_gradflow import GradFlowMonitor, GradientPathologyError
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader
from tests.helpers.subprocess_runs import release_process_group

NAN_STEP = 5


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class LocalGate(Regressor):
    """A regressor whose output gate is rank-local; rank 1's gate gradient is NaN at step 5."""

    def __init__(self) -> None:
        super().__init__(mlp(depth=3))
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.net(x))

    def training_step(self, batch, batch_idx):
        if self.global_rank == 1 and self.global_step == NAN_STEP:
            # the loss stays finite; only this rank's gradient of the gate is NaN
            self.gate.scale.register_hook(lambda g: torch.full_like(g, float("nan")))
        return super().training_step(batch, batch_idx)


class DDPIgnoringGate(DDPStrategy):
    """DDP that does not all-reduce the gate's gradient (names as DDP sees them)."""

    def _setup_model(self, model: nn.Module) -> DistributedDataParallel:
        names = [n for n, _ in model.named_parameters() if n.endswith("gate.scale")]
        assert len(names) == 1, names
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
        return super()._setup_model(model)


def main(out_dir: str, action: str) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    monitor = GradFlowMonitor(
        log_every_n_steps=1,
        on_alert=action,
        probe_every_n_steps=None,
        histogram_every_n_steps=None,
        plot_every_n_steps=None,
    )
    trainer = quiet_trainer(
        devices=2,
        strategy=DDPIgnoringGate(),
        callbacks=[monitor],
        max_steps=20,
        default_root_dir=out_dir,  # nothing lands in the working directory
    )
    raised = False
    try:
        trainer.fit(LocalGate(), regression_loader(n=512, batch_size=8))
    except GradientPathologyError:
        raised = True
    result = {
        "step": trainer.global_step,
        "raised": raised,
        "alerts": [[a.kind, a.step, list(a.layers)] for a in monitor.alerts],
        "stop_kinds": monitor.engine.stop_kinds,
    }
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
    release_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
