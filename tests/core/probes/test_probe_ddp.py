"""Two real gloo ranks, each probing half of a batch: the summed statistics are those of the
whole batch, so every rank's detectors see the same numbers and decide alike."""

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 8),
        nn.Sigmoid(),
    )
    nn.init.constant_(model[2].bias, -1.0)  # some units dead on one half, alive on the other
    nn.init.normal_(model[4].weight, std=2.0)
    return model


def _stats(model: nn.Module, x: torch.Tensor, all_ranks: bool):
    probes = ActivationProbes(model, ProbeConfig(max_samples=64))
    with probes.attached():
        model(x)
    return probes.collect(all_ranks=all_ranks)


def _worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(1)
        x = torch.randn(8, 6, 8)
        model = _model()
        local = _stats(model, x[rank * 4 : (rank + 1) * 4], all_ranks=False)
        reduced = _stats(model, x[rank * 4 : (rank + 1) * 4], all_ranks=True)
        full = _stats(model, x, all_ranks=False)
        queue.put((rank, local, reduced, full))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_all_ranks_statistics_equal_the_whole_batch():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted((queue.get(timeout=90) for _ in procs), key=lambda r: r[0])
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    (_, local0, reduced0, full), (_, local1, reduced1, _) = results
    assert local0.dead_relu["3"] != local1.dead_relu["3"]  # the halves disagree ...
    for reduced in (reduced0, reduced1):  # ... the reduced statistics do not
        assert reduced.dead_relu == pytest.approx(full.dead_relu)
        assert reduced.relu_rows == full.relu_rows
        assert reduced.saturation == pytest.approx(full.saturation)
        assert reduced.effective_rank == pytest.approx(full.effective_rank)
        assert reduced.block_tokens == full.block_tokens == {"1": 6}  # lengths, not summed
        for name, heads in full.attention_entropy.items():
            np.testing.assert_allclose(reduced.attention_entropy[name], heads, rtol=1e-6)
