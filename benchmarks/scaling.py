"""How the monitor's per-step cost grows with the number of gradient tensors and parameters.

Synthetic models (``n`` tensors, ``p`` parameters in all, one layer per tensor, gradients set
directly) on the CPU, one torch thread, the calling thread's CPU time (``time.thread_time``).
Per point, the median over steps of:

* ``quiet``: the engine's work on a step that logs nothing (``before_optimizer_step``,
  ``after_optimizer_step``, ``end_batch``);
* ``logged``: the same on a logged step (one copy to the host, detectors over the pending
  steps, weight norms and the update-ratio snapshot; no writers);
* ``foreach``: one bare ``torch._foreach_norm`` over the gradients (the floor: one read),
  back to back, so small models' gradients are in cache where the engine's first read of them
  may not be: below ~10 M parameters the ratio overstates the cost (see ``per_step.py`` for
  both timed at the same point of a training loop);
* ``grad_norm``: Lightning's ``grad_norm`` alone (a norm per tensor, on the device), without
  the ``log_dict`` of its hundreds of values that usually follows it every step and costs
  far more (see ``overhead.py``).

Writes ``scaling.md`` (the table) and ``scaling.png`` (the plot) into ``--out``.

Usage:
    python benchmarks/scaling.py            # about half a minute on one CPU core
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pytorch_lightning.utilities import grad_norm
from torch import nn

from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo

LOG_EVERY = 10


class Holder(nn.Module):
    """A layer of one parameter."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(size) * 0.1)
        self.weight.grad = torch.randn(size) * 1e-3


def synthetic(tensors: int, params: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """``tensors`` layers of one ``params // tensors``-element parameter, with gradients."""
    size = max(params // tensors, 1)
    model = nn.ModuleList(Holder(size) for _ in range(tensors))
    return model, torch.optim.SGD(model.parameters(), lr=0.0)


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def measure(tensors: int, params: int, steps: int) -> dict[str, float]:
    """Median seconds per call of each contender on one synthetic model."""
    model, optimizer = synthetic(tensors, params)
    engine = GradFlowEngine(log_every_n_steps=LOG_EVERY, probe_every_n_steps=None)
    engine.start(RunContext(sinks=[]))
    quiet, logged = [], []
    for step in range(steps * LOG_EVERY + 1):
        start = time.thread_time()
        engine.before_optimizer_step(model, optimizer, step)
        engine.after_optimizer_step()
        engine.end_batch(StepInfo(step))
        spent = time.thread_time() - start
        if step:  # step 0 sets up
            (logged if step % LOG_EVERY == 0 else quiet).append(spent)
    grads = [p.grad for p in model.parameters()]
    return {
        "quiet": statistics.median(quiet),
        "logged": statistics.median(logged),
        "foreach": _median_seconds(lambda: torch._foreach_norm(grads, 2), steps),
        "grad_norm": _median_seconds(lambda: grad_norm(model, norm_type=2), steps),
    }


def table(rows: list[tuple[int, int, dict[str, float]]]) -> str:
    lines = [
        "| tensors | parameters | quiet step ms | foreach_norm ms | quiet / foreach "
        "| logged step ms | Lightning grad_norm ms | grad_norm / quiet |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, p, r in rows:
        lines.append(
            f"| {n} | {p / 1e6:g} M | {1e3 * r['quiet']:.3f} | {1e3 * r['foreach']:.3f} "
            f"| {r['quiet'] / r['foreach']:.2f} | {1e3 * r['logged']:.2f} "
            f"| {1e3 * r['grad_norm']:.2f} | {r['grad_norm'] / r['quiet']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(by_tensors, by_params, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, rows, index, label in (
        (axes[0], by_tensors, 0, "gradient tensors (1 M parameters)"),
        (axes[1], by_params, 1, "parameters (100 tensors)"),
    ):
        x = [row[index] for row in rows]
        for key, style in (
            ("quiet", "o-"),
            ("logged", "s--"),
            ("foreach", "k:"),
            ("grad_norm", "^-"),
        ):
            ax.plot(x, [1e3 * row[2][key] for row in rows], style, label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per step (thread CPU time)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("GradFlow per-step cost vs a bare _foreach_norm and Lightning's grad_norm")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, nargs="*", default=[10, 30, 100, 300, 1000, 2000])
    parser.add_argument("--params", type=float, nargs="*", default=[1e6, 3e6, 1e7, 3e7, 1e8])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    by_tensors = []
    for n in args.tensors:
        by_tensors.append((n, 1_000_000, measure(n, 1_000_000, steps=6)))
        print(table(by_tensors[-1:]).splitlines()[-1], flush=True)
    by_params = []
    for p in (int(p) for p in args.params):
        by_params.append((100, p, measure(100, p, steps=3 if p > 2e7 else 6)))
        print(table(by_params[-1:]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    text = (
        "Own time per step vs number of gradient tensors (1 M parameters):\n\n"
        + table(by_tensors)
        + "\nvs number of parameters (100 tensors):\n\n"
        + table(by_params)
    )
    (args.out / "scaling.md").write_text(text)
    plot(by_tensors, by_params, args.out / "scaling.png")
    print(text)


if __name__ == "__main__":
    main()
