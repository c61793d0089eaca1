"""Peak memory of measuring update ratios: read from the optimizer's state vs a copy of the weights.

Trains a stack of square ``Linear`` layers with an optimizer and ``GradFlowEngine`` logging
every step, each variant in a fresh process, and prints how far a logged step raises the
process's peak memory above the same training without the monitor (on the CPU the peak
resident set size, with glibc returning every large block at once; on a GPU
``torch.cuda.max_memory_allocated``). Histograms, pictures and probes are off:

    off     ``log_update_ratios=False``
    read    ``log_update_ratios=True`` with the optimizer as given (AdamW, or SGD with momentum:
            the update is read from its state, one tensor at a time)
    copy    the same optimizer as a trivial subclass, which the monitor cannot read: it copies
            every parameter before the step (the path any other optimizer takes)

Usage:
    python benchmarks/update_memory.py                       # 8 x 2048^2 (33.6 M parameters)
    python benchmarks/update_memory.py --optimizer sgd --width 4096 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch
from torch import nn

from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo

VARIANTS = ("off", "read", "copy")


def _optimizer(name: str, variant: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    base = torch.optim.AdamW if name == "adamw" else torch.optim.SGD
    kind = type("Copied" + base.__name__, (base,), {}) if variant == "copy" else base
    if name == "adamw":
        return kind(params, lr=1e-4, foreach=False)
    return kind(params, lr=1e-3, momentum=0.9, foreach=False)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def measure(variant: str, args: argparse.Namespace) -> dict[str, float]:
    """This process: peak memory before and after logged steps of ``variant``."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(args.width, args.width) for _ in range(args.depth)))
    model.to(device)
    params = list(model.parameters())
    optimizer = _optimizer(args.optimizer, variant, params)
    x = torch.randn(args.batch_size, args.width, device=device)

    def train_step() -> None:
        optimizer.zero_grad()
        model(x).square().mean().backward()

    for _ in range(3):  # optimizer state, allocator and peak of plain training settled
        train_step()
        optimizer.step()
    before = _peak_mb(device)
    engine = GradFlowEngine(  # the update ratios alone: no histograms, picture or probes
        log_update_ratios=variant != "off",
        histogram_every_n_steps=None,
        plot_every_n_steps=None,
        probe_every_n_steps=None,
    )
    engine.start(RunContext(sinks=[]), log_every_n_steps=1)
    engine.watch(model)
    for step in range(3):
        train_step()
        engine.before_optimizer_step(model, optimizer, step)
        optimizer.step()
        engine.after_optimizer_step()
        engine.end_batch(StepInfo(step))
    return {"before_mb": before, "after_mb": _peak_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child: one variant in a fresh process
        print(json.dumps(measure(args.variant, args)))
        return
    params = args.depth * (args.width + 1) * args.width
    size_mb = params * 4 / 2**20
    print(
        f"{args.depth} x Linear({args.width}, {args.width}): {params / 1e6:.1f} M float32 "
        f"parameters ({size_mb:.0f} MB), {args.optimizer}, {args.device}; peak memory a logged "
        "step adds to training's own:"
    )
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--variant", variant],
            check=True,
            capture_output=True,
            text=True,
            # big blocks mapped and unmapped one by one: the resident peak is the live peak
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        extra = result["after_mb"] - result["before_mb"]
        print(f"  {variant:5s} +{extra:7.1f} MB ({extra / size_mb:.2f}x the parameters)")


if __name__ == "__main__":
    main()
