"""A quiet step's cost against the floor: one read of the gradients at the same point of the loop.

Trains the overhead benchmark's transformer in a plain loop (one torch thread) and times, with
the calling thread's CPU clock, what runs between ``backward`` and ``optimizer.step`` and after
it, under four variants taking turns run by run:

    none      nothing (the reference for the optimizer's step below)
    foreach   one bare ``torch._foreach_norm`` over the gradients (one read: the floor for a
              monitor that sees every step)
    both      one ``_foreach_norm`` over the gradients and the weights (two reads)
    engine    GradFlowEngine with its defaults (all of its calls, ``forward_start`` to
              ``end_batch``)

and reports the median over the steps that log nothing, min and median over repeats. The same
``_foreach_norm`` repeated back to back (gradients in cache) is printed for reference: it is
several times cheaper than at its place in the loop, after backward has moved on.

It also times ``optimizer.step`` on the same steps. Part of what a monitor's own time holds is
work the step would otherwise do itself: the first ``p.grad`` of a step wraps each new gradient
in a Python object, and the first read brings the gradients into the cache. The ``net`` column
is the variant's own time plus its optimizer step minus the optimizer step of ``none``: what
the step as a whole pays.

Usage:
    python benchmarks/per_step.py                                   # 12 x d=64, batch 16
    python benchmarks/per_step.py --depth 6 --d-model 128 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from overhead import PreNormTransformer  # this folder is on the path when run as a script

from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo

VARIANTS = ("none", "foreach", "both", "engine")


def run(variant: str, args: argparse.Namespace) -> tuple[float, float]:
    """Median thread CPU seconds of the variant's work and of ``optimizer.step`` on the steps
    that log nothing."""
    torch.manual_seed(0)
    model = PreNormTransformer(depth=args.depth, d_model=args.d_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 32, 8)
    y = x.mean(dim=(1, 2)).unsqueeze(1)
    params = list(model.parameters())
    engine = GradFlowEngine() if variant == "engine" else None
    if engine is not None:
        engine.start(RunContext(sinks=[]))
        engine.watch(model)
    clock = time.thread_time
    quiet, stepping = [], []
    for step in range(args.steps):
        spent = 0.0
        start = clock()
        if engine is not None:
            engine.forward_start(step, (x, y))
        spent += clock() - start
        loss = torch.nn.functional.mse_loss(model(x), y)
        start = clock()
        if engine is not None:
            engine.loss(loss)
        spent += clock() - start
        loss.backward()
        start = clock()
        if engine is not None:
            engine.before_optimizer_step(model, optimizer, step, rerun=lambda: model(x))
        elif variant != "none":
            with torch.no_grad():
                grads = [p.grad for p in params]
                torch._foreach_norm(grads if variant == "foreach" else grads + params, 2)
        spent += clock() - start
        start = clock()
        optimizer.step()
        stepped = clock() - start
        optimizer.zero_grad()
        start = clock()
        if engine is not None:
            engine.after_optimizer_step()
            engine.end_batch(StepInfo(step))
        spent += clock() - start
        if step >= args.warmup and step % 50:
            quiet.append(spent)
            stepping.append(stepped)
    return statistics.median(quiet), statistics.median(stepping)


def in_cache(args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = PreNormTransformer(depth=args.depth, d_model=args.d_model)
    x = torch.randn(args.batch_size, 32, 8)
    torch.nn.functional.mse_loss(model(x), torch.zeros(args.batch_size, 1)).backward()
    grads = [p.grad for p in model.parameters()]
    times = []
    for _ in range(200):
        start = time.thread_time()
        torch._foreach_norm(grads, 2)
        times.append(time.thread_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            results[variant].append(run(variant, args))
    tensors = sum(1 for _ in PreNormTransformer(args.depth, args.d_model).parameters())
    lines = [
        f"{args.depth} layers, d={args.d_model}, batch {args.batch_size}: {tensors} tensors; "
        f"ms per quiet step, min / median of {args.repeats} repeats"
    ]
    own = {v: [r[0] for r in rs] for v, rs in results.items()}
    stepping = {v: [r[1] for r in rs] for v, rs in results.items()}
    floor = statistics.median(own["foreach"])
    reference = statistics.median(stepping["none"])
    for variant in VARIANTS:
        low, mid = min(own[variant]), statistics.median(own[variant])
        step_mid = statistics.median(stepping[variant])
        net = mid + step_mid - reference
        ratio = f", {mid / floor:.2f}x foreach" if variant != "none" else ""
        lines.append(
            f"{variant:8s} own {1e3 * low:.3f} / {1e3 * mid:.3f}{ratio}; optimizer.step "
            f"{1e3 * step_mid:.3f}; net {1e3 * net:.3f}"
        )
    lines.append(f"foreach back to back, gradients in cache: {1e3 * in_cache(args):.3f} ms")
    print("\n".join(lines))
    command = " ".join(["python benchmarks/per_step.py", *sys.argv[1:]])
    path = args.out / f"per_step_d{args.depth}x{args.d_model}_b{args.batch_size}_cpu.md"
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"`{command}` (one torch thread, thread CPU time, torch {torch.__version__}):\n\n"
        "```\n" + "\n".join(lines) + "\n```\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
