"""rank_contribution: summed over the ranks, every element of a parameter is counted once."""

import pytest
import torch

from lightning_gradflow.core.sharding import has_dtensor, rank_contribution
from tests.helpers.threaded import run_on_threaded_ranks

dtensor = pytest.importorskip("torch.distributed.tensor")


def test_alone_a_plain_tensor_is_all_this_process_contributes():
    t = torch.arange(3.0)
    assert rank_contribution(t, plain_is_shard=True) is t
    assert rank_contribution(t, plain_is_shard=False) is t  # rank 0 of no group
    assert not has_dtensor([]) and not has_dtensor([t, torch.ones(1)])


def _contributions(rank: int, mesh_shape: tuple[int, ...], placements: list[str]):
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", mesh_shape)
    kinds = {"shard": dtensor.Shard(0), "replicate": dtensor.Replicate()}
    whole = torch.arange(8.0, dtype=torch.float64).reshape(4, 2)
    param = dtensor.distribute_tensor(whole, mesh, [kinds[p] for p in placements])
    plain = torch.full((2,), float(rank + 1), dtype=torch.float16)
    replica, shard = rank_contribution(plain, False), rank_contribution(plain, True)
    return (
        has_dtensor([plain, param]),
        rank_contribution(param, plain_is_shard=True).tolist(),
        (replica.tolist(), replica.dtype, replica.device.type),
        shard is plain,
    )


@pytest.mark.parametrize(
    ("mesh_shape", "placements", "expected"),
    [
        ((2,), ["shard"], [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]]]),
        ((2,), ["replicate"], [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]], []]),
        # rows sharded over the first mesh dimension, replicated over the second: only the
        # ranks at coordinate 0 of the second dimension (ranks 0 and 2) contribute
        (
            (2, 2),
            ["shard", "replicate"],
            [[[0.0, 1.0], [2.0, 3.0]], [], [[4.0, 5.0], [6.0, 7.0]], []],
        ),
        (
            (2, 2),
            ["replicate", "shard"],
            [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]], [], []],
        ),
    ],
)
def test_dtensors_count_each_element_once_and_plain_replicas_only_on_rank_0(
    mesh_shape, placements, expected
):
    world = len(expected)
    results = run_on_threaded_ranks(_contributions, mesh_shape, placements, world=world)
    assert [local for _, local, _, _ in results] == expected
    for rank, (found, _, replica, shard_is_plain) in enumerate(results):
        assert found and shard_is_plain
        values, dtype, device = replica
        assert values == ([1.0, 1.0] if rank == 0 else []) and dtype == torch.float16
        assert device == "cpu"
