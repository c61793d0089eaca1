"""A quiet step's cost against the floor: one read of the gradients at the same point of the loop.

Trains the overhead benchmark's transformer in a plain loop (one torch thread) and times, with
the calling thread's CPU clock, what runs between ``backward`` and ``optimizer.step`` and after
it, under three variants taking turns run by run:

    foreach   one bare ``torch._foreach_norm`` over the gradients (one read: the floor for a
              monitor that sees every step)
    both      one ``_foreach_norm`` over the gradients and the weights (two reads)
    engine    GradFlowEngine with its defaults (all of its calls, ``forward_start`` to
              ``end_batch``)

and reports the median over the steps that log nothing, min and median over repeats. The same
``_foreach_norm`` repeated back to back (gradients in cache) is printed for reference: it is
several times cheaper than at its place in the loop, after backward has moved on.

Usage:
    python benchmarks/per_step.py                                   # 12 x d=64, batch 16
    python benchmarks/per_step.py --depth 6 --d-model 128 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from overhead import PreNormTransformer  # this folder is on the path when run as a script

from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo

VARIANTS = ("foreach", "both", "engine")


def run(variant: str, args: argparse.Namespace) -> float:
    """Median thread CPU seconds of the variant's work on the steps that log nothing."""
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
    quiet = []
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
        else:
            with torch.no_grad():
                grads = [p.grad for p in params]
                torch._foreach_norm(grads if variant == "foreach" else grads + params, 2)
        spent += clock() - start
        optimizer.step()
        optimizer.zero_grad()
        start = clock()
        if engine is not None:
            engine.after_optimizer_step()
            engine.end_batch(StepInfo(step))
        spent += clock() - start
        if step >= args.warmup and step % 50:
            quiet.append(spent)
    return statistics.median(quiet)


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
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            results[variant].append(run(variant, args))
    tensors = sum(1 for _ in PreNormTransformer(args.depth, args.d_model).parameters())
    print(f"{args.depth} layers, d={args.d_model}, batch {args.batch_size}: {tensors} tensors")
    floor = statistics.median(results["foreach"])
    for variant, values in results.items():
        low, mid = min(values), statistics.median(values)
        print(
            f"{variant:8s} quiet step {1e3 * low:.3f} / {1e3 * mid:.3f} ms "
            f"(min / median of {args.repeats}), {mid / floor:.2f}x foreach"
        )
    print(f"foreach back to back, gradients in cache: {1e3 * in_cache(args):.3f} ms")


if __name__ == "__main__":
    main()
