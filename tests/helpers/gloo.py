"""Run a function on real gloo ranks in spawned processes and gather what each returns."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def run_on_gloo_ranks(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(rank, *args)`` on ``world`` processes in one gloo group; results in rank order.

    ``fn`` must be a module-level function (it is pickled for ``spawn``).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_rank_main, args=(rank, world, port, fn, args, queue))
        for rank in range(world)
    ]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return [results[rank] for rank in range(world)]


def _rank_main(rank: int, world: int, port: int, fn: Callable, args: tuple, queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        queue.put((rank, fn(rank, *args)))
    finally:
        dist.destroy_process_group()
