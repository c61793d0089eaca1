"""What do activation probes cost? Training step time as a ratio to bare training.

For a small pre-norm transformer and a ReLU/tanh MLP, times training steps (forward,
backward) under three variants that take turns step by step, so that machine noise hits them
alike, and reports each variant's median step time divided by bare training's in the same
repeat: median and range over repeats.

Variants:
    bare      the model alone
    probe     a probe step: hooks attached for the forward pass, then ``collect()`` (one
              device-to-host copy) and the detectors, all inside the timed step
    detached  an ``ActivationProbes`` exists but is detached: every step that is not probed

The probe step's share of the run is amortised over ``--probe-every`` steps.

Usage:
    python benchmarks/probes.py                      # ~80 s on 2 CPU cores
    python benchmarks/probes.py --repeats 9 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeDetectors

VARIANTS = ("bare", "probe", "detached")


class Transformer(nn.Module):
    """Pre-norm encoder regressing one number per sequence."""

    def __init__(self, depth: int, d_model: int, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, dropout=0.1, batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


def mlp(width: int, depth: int) -> nn.Sequential:
    """ReLU hidden layers with a tanh bottleneck before the output."""
    layers: list[nn.Module] = [nn.Linear(32, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers += [nn.Linear(width, 16), nn.Tanh(), nn.Linear(16, 1)]
    return nn.Sequential(*layers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(
    variant: str,
    model: nn.Module,
    probes: ActivationProbes,
    detectors: ProbeDetectors,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> float:
    """Seconds of one training step (forward, backward) of ``variant``."""
    x, y = batch
    _sync(x.device)
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    if variant == "probe":
        probes.attach()
    loss = nn.functional.mse_loss(model(x), y)
    probes.detach()
    loss.backward()
    if variant == "probe":
        detectors.update(0, 0, probes.collect())
    _sync(x.device)
    return time.perf_counter() - start


def benchmark(
    name: str, build: Callable[[], nn.Module], batch: tuple[torch.Tensor, torch.Tensor], args
) -> dict[str, list[float]]:
    """Per-variant median step time, one per repeat.

    The variants take turns step by step (in rotating order), so a burst of machine noise hits
    all of them; the median over a repeat's steps ignores the bursts.
    """
    torch.manual_seed(0)
    model = build().to(args.device).train()
    probes, detectors = ActivationProbes(model), ProbeDetectors()
    for _ in range(args.warmup):  # allocator and first-call overheads
        for variant in VARIANTS:
            time_step(variant, model, probes, detectors, batch)
    medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for step in range(args.steps):
            for variant in VARIANTS[step % 3 :] + VARIANTS[: step % 3]:
                times[variant].append(time_step(variant, model, probes, detectors, batch))
        for variant in VARIANTS:
            medians[variant].append(statistics.median(times[variant]))
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {len(probes.sites)} probed modules, {params} parameters")
    return medians


def report(name: str, medians: dict[str, list[float]], probe_every: int) -> None:
    """Print ms/step and the ratio to bare (median and range over repeats) of every variant."""
    for variant in VARIANTS:
        ratios = [m / b for m, b in zip(medians[variant], medians["bare"], strict=True)]
        ms = 1e3 * statistics.median(medians[variant])
        spread = f"{min(ratios):.3f}–{max(ratios):.3f}"
        print(
            f"  {variant:<9} {ms:8.2f} ms/step   ratio {statistics.median(ratios):.3f}  ({spread})"
        )
    probe = statistics.median(p / b for p, b in zip(medians["probe"], medians["bare"], strict=True))
    print(
        f"  probing every {probe_every} steps adds {100 * (probe - 1) / probe_every:.2f} % overall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(32, 64, 8, generator=generator).to(device)
    rows = torch.randn(256, 32, generator=generator).to(device)
    cases = {
        "transformer (4 pre-norm blocks, d=64, 32 x 64 tokens)": (
            lambda: Transformer(depth=4, d_model=64),
            (tokens, tokens.mean(dim=(1, 2)).unsqueeze(1)),
        ),
        "mlp (6 x 512 ReLU + tanh, batch 256)": (
            lambda: mlp(width=512, depth=6),
            (rows, rows[:, :1].sin()),
        ),
    }
    for name, (build, batch) in cases.items():
        report(name, benchmark(name, build, batch, args), args.probe_every)


if __name__ == "__main__":
    main()
