"""What does gradient monitoring cost? Step time of each variant as a ratio to bare training.

Trains the same 12-layer pre-norm transformer for a fixed number of steps under each variant,
interleaving the variants in every repeat so that machine noise hits them alike, and reports the
mean step time (periodic work such as histograms included) divided by bare training's in the
same repeat: median and range over repeats.

Variants:
    bare                 Trainer with the loggers only
    gradflow_default     GradFlowMonitor() with default intervals
    lightning_grad_norm  Lightning's ``grad_norm`` + ``log_dict`` every step
    wandb_watch          ``wandb.watch(model, log="gradients", log_freq=K)`` (offline)
    gradflow_hist_K      GradFlowMonitor(histogram_every_n_steps=K, log_every_n_steps=K), with
                         probes, weight norms and update ratios off, like wandb.watch

Every variant has the same loggers (TensorBoard + offline W&B), so only the monitoring differs.

Usage:
    python benchmarks/overhead.py                     # ~8 minutes on 2 CPU cores
    python benchmarks/overhead.py --steps 100 --repeats 2 --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import grad_norm
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gradflow import GradFlowMonitor


class PreNormTransformer(pl.LightningModule):
    """A pre-norm transformer encoder regressing one number per sequence."""

    def __init__(self, depth: int = 12, d_model: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


class StepTimer(pl.Callback):
    """Wall and process CPU time of each training step, from batch start to the last callback.

    On a shared CPU machine the wall clock also counts time stolen by neighbours; process CPU
    time does not, so both are reported.
    """

    def __init__(self, device: torch.device, warmup: int, spent: list[float]) -> None:
        self.device = device
        self.warmup = warmup
        self.spent = spent
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._start = 0.0
        self._cpu_start = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        if len(self.times) == self.warmup:  # the measured window starts: reset the hook clock
            self.spent[0] = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._start)
        self.cpu_times.append(time.process_time() - self._cpu_start)


HOOKS = (
    "setup",
    "on_train_start",
    "on_train_batch_start",
    "on_before_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_end",
)


def time_hooks(callback: pl.Callback, spent: list[float]) -> pl.Callback:
    """Wrap the callback's hooks so the seconds spent inside them add up in ``spent[0]``.

    On the CPU all of GradFlowMonitor's work runs inside its hooks, so this measures its cost
    within one run, free of the run-to-run noise of a shared machine.
    """

    def wrap(hook):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return timed

    for name in HOOKS:
        setattr(callback, name, wrap(getattr(callback, name)))
    return callback


class LightningGradNorm(pl.Callback):
    """The usual hand-rolled monitoring: ``grad_norm`` + ``log_dict`` on every step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        pl_module.log_dict(grad_norm(pl_module, norm_type=2))


class WandbWatch(pl.Callback):
    """``wandb.watch`` on the Trainer's W&B run at the start of training."""

    def __init__(self, log_freq: int) -> None:
        self.log_freq = log_freq

    def on_train_start(self, trainer, pl_module) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.watch(pl_module, log="gradients", log_freq=self.log_freq)


def _callbacks(variant: str, hist_every: int) -> list[pl.Callback]:
    if variant == "bare":
        return []
    if variant == "gradflow_default":
        return [GradFlowMonitor()]
    if variant == "lightning_grad_norm":
        return [LightningGradNorm()]
    if variant == "wandb_watch":
        return [WandbWatch(hist_every)]
    if variant == "gradflow_hist":  # like for like with wandb.watch(log="gradients")
        return [
            GradFlowMonitor(
                log_every_n_steps=hist_every,
                histogram_every_n_steps=hist_every,
                plot_every_n_steps=None,
                probe_every_n_steps=None,
                log_weight_norms=False,
                log_update_ratios=False,
            )
        ]
    raise ValueError(f"unknown variant {variant!r}")


def run_variant(
    variant: str, args: argparse.Namespace, workdir: Path
) -> tuple[list[float], list[float], float]:
    """Train ``args.steps`` steps.

    Returns:
        Wall and CPU step times after warm-up, and the time spent inside the monitor's own
        hooks during those steps divided by the rest of their time (GradFlowMonitor variants;
        else NaN).
    """
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    n = args.batch_size * args.steps
    x = torch.randn(n, args.seq_len, 8, generator=generator)
    y = x.mean(dim=(1, 2)).unsqueeze(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size)
    spent = [0.0]
    timer = StepTimer(device, args.warmup, spent)
    callbacks = _callbacks(variant, args.hist_every)
    for callback in callbacks:
        if isinstance(callback, GradFlowMonitor):
            time_hooks(callback, spent)
    loggers = [
        TensorBoardLogger(workdir / variant, name="tb"),
        WandbLogger(save_dir=str(workdir / variant), offline=True, project="overhead"),
    ]
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=args.steps,
        logger=loggers,
        callbacks=[*callbacks, timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=50,
    )
    trainer.fit(PreNormTransformer(depth=args.depth, d_model=args.d_model), loader)
    window = sum(timer.times[args.warmup :])
    import wandb

    wandb.finish()
    wandb.teardown()  # stop the wandb-core service so it does not compete with the next run
    gc.collect()
    own = spent[0] / (window - spent[0]) if spent[0] else float("nan")
    return timer.times[args.warmup :], timer.cpu_times[args.warmup :], own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hist-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB__DISABLE_STATS", "true")  # no system-monitor process competing
    variants = ["bare", "gradflow_default", "lightning_grad_norm", "wandb_watch", "gradflow_hist"]
    means: dict[str, dict[str, list[float]]] = {
        v: {"wall": [], "cpu": [], "hooks": []} for v in variants
    }
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for variant in variants:
                wall, cpu, own = run_variant(variant, args, Path(tmp) / f"r{repeat}")
                means[variant]["hooks"].append(own)
                means[variant]["wall"].append(statistics.fmean(wall))
                means[variant]["cpu"].append(statistics.fmean(cpu))
                print(
                    f"repeat {repeat} {variant:<20} {1e3 * means[variant]['wall'][-1]:8.2f} ms/step"
                    f" wall {1e3 * means[variant]['cpu'][-1]:8.2f} ms/step CPU"
                )
    rows = []
    for variant in variants:
        row: dict[str, object] = {
            "variant": variant.replace("gradflow_hist", f"gradflow_hist_{args.hist_every}")
        }
        for clock in ("wall", "cpu"):
            ratios = [
                m / b for m, b in zip(means[variant][clock], means["bare"][clock], strict=True)
            ]
            row[f"{clock}_ms"] = 1e3 * statistics.median(means[variant][clock])
            row[f"{clock}_ratio"] = statistics.median(ratios)
            row[f"{clock}_range"] = (min(ratios), max(ratios))
        row["own_hooks_share"] = statistics.median(means[variant]["hooks"])
        rows.append(row)
    print(
        f"\n{'variant':<22} {'wall ms':>8} {'wall ratio':>11} {'range':>13} "
        f"{'CPU ms':>8} {'CPU ratio':>10} {'range':>13}"
    )
    for r in rows:
        print(
            f"{r['variant']:<22} {r['wall_ms']:8.2f} {r['wall_ratio']:11.3f} "
            f"{r['wall_range'][0]:6.3f}–{r['wall_range'][1]:.3f} {r['cpu_ms']:8.2f} "
            f"{r['cpu_ratio']:10.3f} {r['cpu_range'][0]:6.3f}–{r['cpu_range'][1]:.3f} "
            f"{100 * r['own_hooks_share']:9.2f}%"
        )
    print(
        "own hooks: time inside GradFlowMonitor's hooks / the rest of training, same run "
        "(all of its CPU work; the A/B ratios also carry run-to-run noise)"
    )
    by_name = {r["variant"]: r for r in rows}
    for clock in ("wall", "cpu"):
        watch = by_name["wandb_watch"][f"{clock}_ratio"] - 1.0
        ours = by_name[f"gradflow_hist_{args.hist_every}"][f"{clock}_ratio"] - 1.0
        factor = f"{watch / ours:.1f}x less" if ours > 0 else "no measurable overhead"
        print(
            f"{clock}: overhead with histograms every {args.hist_every} steps: "
            f"wandb.watch {100 * watch:+.1f} %, GradFlowMonitor {100 * ours:+.1f} % ({factor}); "
            f"defaults {100 * (by_name['gradflow_default'][f'{clock}_ratio'] - 1):+.1f} %"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
