"""Run a function on ranks that are threads of this process, in one real process group.

The ranks talk through torch's threaded process group (the one its own distributed tests use:
real collectives between threads), so code that only runs with ``world_size > 1`` runs here in
the test's own process, where mutmut switches its mutants (it cannot see into spawned ranks,
see ``tests/helpers/gloo.py``). Skips the test where this torch lacks it (a private module).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist


def run_on_threaded_ranks(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(rank, *args)`` on ``world`` threads in one threaded group; results in rank order."""
    try:
        from torch.testing._internal.distributed.multi_threaded_pg import (
            ProcessLocalGroup,
            _install_threaded_pg,
            _uninstall_threaded_pg,
        )

        isolate = torch._C._distributed_c10d._set_thread_isolation_mode
    except (ImportError, AttributeError) as error:
        pytest.skip(f"no threaded process group in this torch: {error}")
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    store = dist.HashStore()

    def rank_main(rank: int) -> None:
        dist.init_process_group("threaded", rank=rank, world_size=world, store=store)
        try:
            results[rank] = fn(rank, *args)
        except BaseException as error:
            errors.append(error)
            ProcessLocalGroup.exception_handle(error)  # wakes the ranks waiting for this one
        finally:
            dist.destroy_process_group()

    _install_threaded_pg()
    isolate(True)
    try:
        threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        isolate(False)
        _uninstall_threaded_pg()
        # torch.compile's stance is process-wide: ranks entering and leaving the engine's eager
        # forward in interleaved order can leave "force_eager" behind for later tests
        set_stance = getattr(torch.compiler, "set_stance", None)
        if set_stance is not None:
            set_stance("default")
    if errors:
        raise errors[0]
    return [results[rank] for rank in range(world)]
