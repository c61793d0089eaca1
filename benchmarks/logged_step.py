"""Where a logged step's time goes: capture, copy, judging the pending steps, writing.

A logged step does, once every ``--every`` steps, what the quiet steps put off: the weights and
the update are measured, the pending steps' statistics are copied to the host in one copy and
judged by the detectors one by one, and the scalars (and histograms) are written. This trains
the overhead benchmark's transformer in a plain loop with a TensorBoard and an offline W&B
writer (as a plain loop gets them) and times each part with the calling thread's CPU clock,
wrapping the functions that do it:

    capture      the logged step's capture (gradients, weights, update measurement set up;
                 the histograms' computation included)
    update       reading the update after the optimizer's step
    copy         the one copy of the pending steps' statistics to the host (and their records)
    detectors    the gradient detectors over every pending step
    summary      the run summary over every pending step
    histograms   of which computing the histograms on the device (``--histograms``)
    tb, wandb    each writer's scalars (and histograms)
    other        the rest: the scalars' names and values, alerts, the flow history, Python
    logged step  everything the engine does on that step

Each part is the median over the logged steps; "per step" divides it by ``--every``.

Usage:
    python benchmarks/logged_step.py                   # every 50 steps, weights and updates
    python benchmarks/logged_step.py --histograms      # with histograms on the logged steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from overhead import PreNormTransformer  # this folder is on the path when run as a script

from lightning_gradflow.core import collector as collector_module
from lightning_gradflow.core.detectors import GradientDetectors
from lightning_gradflow.core.summary import RunSummary
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo

SPENT: dict[str, float] = defaultdict(float)


def timed(owner: Any, name: str, part: str) -> None:
    """Add the thread CPU time of every call of ``owner.name`` to ``SPENT[part]``."""
    function: Callable = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[part] += time.thread_time() - start

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--logged-steps", type=int, default=12)
    parser.add_argument("--histograms", action="store_true")
    parser.add_argument("--no-weights", action="store_true", help="no weight norms or updates")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB__DISABLE_STATS", "true")
    import wandb
    from torch.utils.tensorboard import SummaryWriter

    from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter
    from lightning_gradflow.writers.wandb_writer import WandbWriter

    collector = collector_module.GradientCollector
    timed(collector, "capture", "capture")
    timed(collector, "after_optimizer_step", "update")
    timed(collector, "flush", "copy")
    timed(collector, "_log_histograms", "histograms")
    timed(GradientDetectors, "update", "detectors")
    timed(RunSummary, "update", "summary")
    with tempfile.TemporaryDirectory() as tmp:
        run = wandb.init(mode="offline", dir=tmp, project="logged-step")
        tb = TensorBoardWriter(SummaryWriter(f"{tmp}/tb"), scalars=True)
        wb = WandbWriter(run, scalars=True)
        for writer, part in ((tb, "tb"), (wb, "wandb")):
            timed(writer, "scalars", part)
            timed(writer, "histograms", part)
        torch.manual_seed(0)
        model = PreNormTransformer(depth=args.depth, d_model=args.d_model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch_size, 32, 8)
        y = x.mean(dim=(1, 2)).unsqueeze(1)
        engine = GradFlowEngine(
            log_every_n_steps=args.every,
            histogram_every_n_steps=args.every if args.histograms else None,
            plot_every_n_steps=None,
            probe_every_n_steps=None,
            log_weight_norms=not args.no_weights,
            log_update_ratios=not args.no_weights,
        )
        engine.start(RunContext(sinks=[tb, wb]))
        engine.watch(model)
        parts: dict[str, list[float]] = defaultdict(list)
        for step in range(args.every * (args.logged_steps + 1) + 1):
            SPENT.clear()
            spent = 0.0
            start = time.thread_time()
            engine.forward_start(step, (x, y))
            spent += time.thread_time() - start
            loss = torch.nn.functional.mse_loss(model(x), y)
            start = time.thread_time()
            engine.loss(loss)
            spent += time.thread_time() - start
            loss.backward()
            start = time.thread_time()
            engine.before_optimizer_step(model, optimizer, step, rerun=lambda: model(x))
            spent += time.thread_time() - start
            optimizer.step()
            optimizer.zero_grad()
            start = time.thread_time()
            engine.after_optimizer_step()
            engine.end_batch(StepInfo(step))
            spent += time.thread_time() - start
            if step >= args.every and step % args.every == 0:  # the first flush sets up
                for part, seconds in SPENT.items():
                    parts[part].append(seconds)
                parts["logged step"].append(spent)
        engine.finish(StepInfo(step))
        wandb.finish()
    order = ("capture", "histograms", "update", "copy", "detectors", "summary", "tb", "wandb")
    for i, total in enumerate(parts["logged step"]):
        named = sum(parts[p][i] for p in order if p in parts and p != "histograms")
        parts["other"].append(total - named)
    total = statistics.median(parts["logged step"])
    setting = (
        f"{args.depth} layers, d={args.d_model}: logged every {args.every} steps, "
        f"{'no weight norms or updates' if args.no_weights else 'weight norms and updates'}"
        f"{', histograms' if args.histograms else ''}; median of {args.logged_steps} logged "
        "steps, thread CPU time"
    )
    header = "| part | ms | share of the logged step | ms per step |"
    lines = [setting, "", header, "|---|---|---|---|"]
    for part in (*[p for p in order if p in parts], "other", "logged step"):
        ms = 1e3 * statistics.median(parts[part])
        lines.append(
            f"| {part} | {ms:.2f} | {100 * ms / (1e3 * total):.0f} % | {ms / args.every:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    command = " ".join(["python benchmarks/logged_step.py", *sys.argv[1:]])
    tag = ("_hist" if args.histograms else "") + ("_noweights" if args.no_weights else "")
    path = args.out / f"logged_step_d{args.depth}x{args.d_model}{tag}_cpu.md"
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(f"`{command}` (one torch thread, torch {torch.__version__}):\n\n{table}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
