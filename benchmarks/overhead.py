"""What does gradient monitoring cost? Each variant's own time, and its step time against bare.

Trains the same pre-norm transformer for a fixed number of steps under each variant, the
variants taking turns in every repeat so that machine noise hits them alike. Two numbers per
variant, min and median over repeats:

* **own**: time spent inside the variant's own code in the same run, per step, as a share of
  the rest of the step (the monitor's hooks; Lightning's ``grad_norm`` + ``log_dict``; the
  tensor hooks ``wandb.watch`` registers, which also build and hand over its histograms;
  the ``add_histogram`` calls). On the CPU it is the calling thread's CPU time
  (``time.thread_time``), which other processes on a shared machine do not inflate; with
  CUDA it is the device time between CUDA events recorded around that code, plus the host
  time. Work that a writer hands to a background thread or process (TensorBoard's event
  writer thread, the W&B service) is not in it: it shows in the end-to-end ratio only.
* **own wall**: the wall-clock time the training thread spent inside the same code, waits
  included (a writer's queue that is full, a lock held by its thread); on a shared machine it
  also holds time the thread was preempted, so read its minimum.
* **e2e**: mean step time (wall clock, CUDA events on a GPU) divided by bare training's in the
  same repeat.

Variants (``K`` = ``--hist-every``, 50 by default, wandb.watch's usual rate):
    bare                  the loggers only (TensorBoard + offline W&B, in every variant)
    gradflow_default      GradFlowMonitor() with its defaults: in a run of known length the
                          "auto" histograms and pictures come at the first and last step
                          and at most ten times between, postponed while they have taken
                          over 1 % of the run, so a short window is mostly its first and
                          last pictures (``--steps 2000 --variants gradflow_default`` for
                          a longer run)
    gradflow_periodic_K   the defaults with histograms, picture and probes every K steps
                          (what a dense setting costs)
    gradflow_hist_K       GradFlowMonitor: scalars + histograms every K steps, no probes,
                          picture, weight norms or update ratios (what wandb.watch logs)
    gradflow_nohist_K     the same without histograms: the difference of their logged steps
                          is what the histograms cost (computing and writing them)
    lightning_grad_norm   Lightning's ``grad_norm`` + ``log_dict`` every step
    wandb_watch_K         ``wandb.watch(model, log="gradients", log_freq=K)``
    wandb_watch_1000      the same at wandb.watch's default ``log_freq``
    tb_histogram_K        ``SummaryWriter.add_histogram`` of every parameter's gradient

Usage:
    python benchmarks/overhead.py --steps 150 --warmup 10 --repeats 3 --threads 1
    python benchmarks/overhead.py --depth 6 --d-model 128 --batch-size 32 --repeats 3
    python benchmarks/overhead.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


class Clock:
    """Own time of a variant: the calling thread's CPU time, plus CUDA event time on a GPU.

    ``timed(fn)`` wraps ``fn`` so that every call adds up; :meth:`reset` starts the measured
    window; :meth:`seconds` reads it (synchronising the device once, at the end).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = 0.0
        self.wall = 0.0
        self.events: list[tuple[Any, Any]] = []

    def reset(self) -> None:
        self.host = 0.0
        self.wall = 0.0
        self.events = []

    def timed(self, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start, wall = time.thread_time(), time.perf_counter()
            begin = torch.cuda.Event(enable_timing=True) if self.cuda else None
            if begin is not None:
                begin.record()
            try:
                return fn(*args, **kwargs)
            finally:
                if begin is not None:
                    end = torch.cuda.Event(enable_timing=True)
                    end.record()
                    self.events.append((begin, end))
                self.host += time.thread_time() - start
                self.wall += time.perf_counter() - wall

        return wrapper

    def seconds(self) -> float:
        """Host CPU time, or on a GPU the device time between the events where it is larger."""
        if not self.cuda:
            return self.host
        torch.cuda.synchronize()
        device = sum(b.elapsed_time(e) for b, e in self.events) / 1e3
        return max(self.host, device)


class StepTimer(pl.Callback):
    """Step time (wall clock, CUDA events on a GPU) and the thread's CPU time, per step."""

    def __init__(self, device: torch.device, warmup: int, clock: Clock) -> None:
        self.cuda = device.type == "cuda"
        self.warmup = warmup
        self.clock = clock
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.own: list[float] = []  # the clock's host time of each step
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self.wall) == self.warmup:  # the measured window starts
            self.clock.reset()
        if self.cuda:
            self._event = torch.cuda.Event(enable_timing=True)
            self._event.record()
        self._start = time.perf_counter()
        self._cpu = time.thread_time()
        self._own = self.clock.host

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.cpu.append(time.thread_time() - self._cpu)
        self.own.append(self.clock.host - self._own)
        self.steps.append(trainer.global_step - 1)
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            self.wall.append(self._event.elapsed_time(end) / 1e3)
        else:
            self.wall.append(time.perf_counter() - self._start)


MONITOR_HOOKS = (
    "setup",
    "on_train_start",
    "on_train_batch_start",
    "on_before_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_end",
)


class LightningGradNorm(pl.Callback):
    """The usual hand-rolled monitoring: ``grad_norm`` + ``log_dict`` on every step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        pl_module.log_dict(grad_norm(pl_module, norm_type=2))


class WandbWatch(pl.Callback):
    """``wandb.watch`` on the Trainer's W&B run; the tensor hooks it registers are timed."""

    def __init__(self, log_freq: int, clock: Clock) -> None:
        self.log_freq = log_freq
        self.clock = clock

    def on_train_start(self, trainer, pl_module) -> None:
        with _timed_tensor_hooks(self.clock):
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.watch(pl_module, log="gradients", log_freq=self.log_freq)


@contextmanager
def _timed_tensor_hooks(clock: Clock):
    """Every ``Tensor.register_hook`` inside the block registers a timed hook."""
    register = torch.Tensor.register_hook

    def timed_register(tensor, hook):
        return register(tensor, clock.timed(hook))

    torch.Tensor.register_hook = timed_register
    try:
        yield
    finally:
        torch.Tensor.register_hook = register


class TensorBoardHistograms(pl.Callback):
    """``add_histogram`` of every parameter's gradient every ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step % self.every:
            return
        writer = trainer.loggers[0].experiment
        for name, param in pl_module.named_parameters():
            if param.grad is not None:
                writer.add_histogram(f"grad/{name}", param.grad, trainer.global_step)


def variants(k: int) -> list[str]:
    return [
        "bare",
        "gradflow_default",
        f"gradflow_periodic_{k}",
        f"gradflow_hist_{k}",
        f"gradflow_nohist_{k}",
        "lightning_grad_norm",
        f"wandb_watch_{k}",
        "wandb_watch_1000",
        f"tb_histogram_{k}",
    ]


def _callbacks(variant: str, clock: Clock) -> list[pl.Callback]:
    name, _, every = variant.rpartition("_")
    k = int(every) if every.isdigit() else 0
    if variant == "bare":
        return []
    if variant == "gradflow_default":
        return [_timed_hooks(GradFlowMonitor(), MONITOR_HOOKS, clock)]
    if name == "gradflow_periodic":
        monitor = GradFlowMonitor(
            histogram_every_n_steps=k, plot_every_n_steps=k, probe_every_n_steps=k
        )
        return [_timed_hooks(monitor, MONITOR_HOOKS, clock)]
    if name in ("gradflow_hist", "gradflow_nohist"):  # like for like with wandb.watch
        monitor = GradFlowMonitor(
            log_every_n_steps=k,
            histogram_every_n_steps=k if name == "gradflow_hist" else None,
            plot_every_n_steps=None,
            probe_every_n_steps=None,
            log_weight_norms=False,
            log_update_ratios=False,
        )
        return [_timed_hooks(monitor, MONITOR_HOOKS, clock)]
    if variant == "lightning_grad_norm":
        return [_timed_hooks(LightningGradNorm(), ("on_before_optimizer_step",), clock)]
    if name == "wandb_watch":
        return [WandbWatch(k, clock)]
    if name == "tb_histogram":
        return [_timed_hooks(TensorBoardHistograms(k), ("on_before_optimizer_step",), clock)]
    raise ValueError(f"unknown variant {variant!r}")


def _timed_hooks(callback: pl.Callback, hooks: tuple[str, ...], clock: Clock) -> pl.Callback:
    for name in hooks:
        setattr(callback, name, clock.timed(getattr(callback, name)))
    return callback


def run_variant(variant: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Train ``args.steps`` steps; mean step times and own time per step after warm-up."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    n = args.batch_size * args.steps
    x = torch.randn(n, args.seq_len, 8, generator=generator)
    y = x.mean(dim=(1, 2)).unsqueeze(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size)
    clock = Clock(device)
    timer = StepTimer(device, args.warmup, clock)
    loggers = [
        TensorBoardLogger(workdir / variant, name="tb"),
        WandbLogger(save_dir=str(workdir / variant), offline=True, project="overhead"),
    ]
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=args.steps,
        logger=loggers,
        callbacks=[*_callbacks(variant, clock), timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=50,
    )
    trainer.fit(PreNormTransformer(depth=args.depth, d_model=args.d_model), loader)
    own = clock.seconds()
    import wandb

    wandb.finish()
    wandb.teardown()  # stop the wandb-core service so it does not compete with the next run
    gc.collect()
    wall, cpu = timer.wall[args.warmup :], timer.cpu[args.warmup :]
    steps, own_steps = timer.steps[args.warmup :], timer.own[args.warmup :]
    # a variant's periodic steps are its dearest: as many as there are multiples of K (its
    # rate; wandb.watch's fall one step before them, the Trainer's logging on them)
    periodic = max(sum(s % args.hist_every == 0 for s in steps), 1)
    ranked = sorted(own_steps)
    quiet, logged = ranked[:-periodic], ranked[-periodic:]
    return {
        "wall": statistics.fmean(wall),
        "cpu": statistics.fmean(cpu),
        "own": own / len(wall),
        "own_wall": clock.wall / len(wall),
        "own_share": own / (sum(wall if device.type == "cuda" else cpu) - own),
        "quiet": statistics.median(quiet),
        "logged": statistics.fmean(logged),
    }


def summarise(runs: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per variant: own time and its share, end-to-end ratios; min and median over repeats."""
    rows = []
    for variant, results in runs.items():
        row: dict[str, Any] = {"variant": variant}
        for key in ("own", "own_wall", "own_share", "quiet", "logged"):
            values = [r[key] for r in results]
            row[key] = (min(values), statistics.median(values))
        for clock in ("wall", "cpu"):
            ratios = [r[clock] / b[clock] for r, b in zip(results, runs["bare"], strict=True)]
            row[f"e2e_{clock}"] = (min(ratios), statistics.median(ratios))
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, bare_ms: float) -> str:
    lines = [
        f"Model: {args.depth}-layer pre-norm transformer, d={args.d_model}, batch "
        f"{args.batch_size}, seq {args.seq_len}; {args.steps} steps ({args.warmup} warm-up), "
        f"{args.repeats} repeats, {args.threads} torch thread(s), {args.device}; bare step "
        f"{bare_ms:.1f} ms (wall, median). Each cell: min / median over repeats. Own: the "
        "variant's own time per step over the measured window (share: of the rest of the "
        "step); logged step: mean own time of the variant's dearest steps, as many as there "
        f"are multiples of {args.hist_every} in the window (its histograms, logging); quiet "
        "step: median own time of the others. Own wall: wall-clock time inside the same code, "
        "waits on writer queues included (and preemption on a shared machine: read the min).",
        "",
        "| variant | own ms/step | own share | own wall ms/step | quiet step ms "
        "| logged step ms | e2e wall ratio | e2e CPU ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own, share, wall, cpu = r["own"], r["own_share"], r["e2e_wall"], r["e2e_cpu"]
        quiet, logged = r["quiet"], r["logged"]
        lines.append(
            f"| {r['variant']} | {1e3 * own[0]:.3f} / {1e3 * own[1]:.3f} "
            f"| {100 * share[0]:.2f} % / {100 * share[1]:.2f} % "
            f"| {1e3 * r['own_wall'][0]:.3f} / {1e3 * r['own_wall'][1]:.3f} "
            f"| {1e3 * quiet[0]:.3f} / {1e3 * quiet[1]:.3f} "
            f"| {1e3 * logged[0]:.1f} / {1e3 * logged[1]:.1f} "
            f"| {wall[0]:.3f} / {wall[1]:.3f} | {cpu[0]:.3f} / {cpu[1]:.3f} |"
        )
    by = {r["variant"]: r for r in rows}
    k = args.hist_every
    ours, theirs = by.get(f"gradflow_hist_{k}"), by.get(f"gradflow_nohist_{k}")
    factors = []
    if ours is not None and theirs is not None:
        histograms = ours["logged"][1] - theirs["logged"][1]
        factors.append(
            f"- the histograms themselves (logged step of gradflow_hist_{k} minus "
            f"gradflow_nohist_{k}'s, medians): {1e3 * histograms:.1f} ms"
        )
        for peer in (f"wandb_watch_{k}", f"tb_histogram_{k}"):
            if peer not in by:
                continue
            factors.append(
                f"- histograms every {k} steps: {peer} / gradflow_hist_{k} = "
                f"{by[peer]['own'][1] / ours['own'][1]:.1f}x per step overall (ours also reads "
                "every step's norms for the detectors), "
                f"{by[peer]['logged'][1] / ours['logged'][1]:.1f}x per histogram step (ours "
                f"also judges the {k} pending steps and writes the scalars there), "
                + (
                    f"{by[peer]['logged'][1] / histograms:.1f}x against the histograms themselves"
                    if histograms > 0
                    else "the histograms themselves below the noise"
                )
            )
    if {"lightning_grad_norm", "gradflow_default"} <= set(by):
        factors.append(
            "- per-layer norms every step: lightning_grad_norm / gradflow_default = "
            f"{by['lightning_grad_norm']['own'][1] / by['gradflow_default']['own'][1]:.1f}x"
        )
    if factors:
        lines += ["", "Own time (medians), as factors:", "", *factors]
    return "\n".join(lines) + "\n"


def render(path: Path) -> None:
    """Rewrite the ``.md`` beside a saved ``.json`` from its runs (after a change of the table)."""
    raw = json.loads(path.read_text())
    saved = raw["args"]
    args = argparse.Namespace(
        **{k: saved[k] for k in ("device", "seq_len")},
        **{k: int(saved[k]) for k in ("depth", "d_model", "batch_size", "steps", "warmup")},
        **{k: int(saved[k]) for k in ("repeats", "threads", "hist_every")},
    )
    rows = summarise(raw["runs"])
    bare_ms = 1e3 * statistics.median(r["wall"] for r in raw["runs"]["bare"])
    raw["rows"] = rows
    path.write_text(json.dumps(raw, indent=2))
    path.with_suffix(".md").write_text(markdown(rows, args, bare_ms))
    print(f"wrote {path.with_suffix('.md')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hist-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="*", help="a subset (bare is always run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default="", help="appended to the result files' names")
    parser.add_argument(
        "--render", type=Path, help="write the table again from a saved .json, running nothing"
    )
    args = parser.parse_args()
    if args.render is not None:
        render(args.render)
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB__DISABLE_STATS", "true")  # no system-monitor process competing
    names = variants(args.hist_every)
    if args.variants:
        names = ["bare", *[v for v in names if v in args.variants and v != "bare"]]
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in names}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WANDB_DIR"] = tmp
        for repeat in range(args.repeats):
            for variant in names:
                result = run_variant(variant, args, Path(tmp) / f"r{repeat}")
                runs[variant].append(result)
                print(
                    f"repeat {repeat} {variant:<22} {1e3 * result['wall']:8.2f} ms/step wall, "
                    f"own {1e3 * result['own']:7.3f} ms/step ({100 * result['own_share']:.2f} %)",
                    flush=True,
                )
    rows = summarise(runs)
    bare_ms = 1e3 * statistics.median(r["wall"] for r in runs["bare"])
    name = f"overhead_d{args.depth}x{args.d_model}_b{args.batch_size}_{args.device}{args.tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    raw = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "rows": rows}
    (args.out / f"{name}.json").write_text(json.dumps(raw, indent=2))
    table = markdown(rows, args, bare_ms)
    (args.out / f"{name}.md").write_text(table)
    print(table)
    print(f"wrote {args.out / name}.*")


if __name__ == "__main__":
    main()
