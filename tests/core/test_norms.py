import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lightning_gradflow.core.histograms import LogBins, linear_histogram, log_magnitude_histogram
from lightning_gradflow.core.norms import LayerNormPlan, all_reduce, squared_norms_by_layer
from tests.helpers.dispatch import OpRecorder
from tests.helpers.threaded import run_on_threaded_ranks


def test_matches_vector_norm_per_layer():
    tensors = [torch.randn(5, 3), torch.randn(7), torch.randn(2, 2, 2)]
    sq = squared_norms_by_layer(tensors, [0, 1, 0], num_layers=3)
    expected0 = torch.linalg.vector_norm(torch.cat([tensors[0].flatten(), tensors[2].flatten()]))
    assert sq.dtype == torch.float64
    assert sq[0].sqrt().item() == pytest.approx(expected0.item(), rel=1e-6)
    assert sq[1].sqrt().item() == pytest.approx(torch.linalg.vector_norm(tensors[1]).item())
    assert sq[2].item() == 0.0


def test_total_matches_clip_grad_norm_return_value():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    model(torch.randn(4, 6)).square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    sq = squared_norms_by_layer(grads, [0, 0, 1, 1], num_layers=2)
    clipped_total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9)
    assert sq.sum().sqrt().item() == pytest.approx(clipped_total.item(), rel=1e-6)


def test_nan_and_inf_mark_only_their_layer():
    sq = squared_norms_by_layer(
        [torch.tensor([1.0, float("nan")]), torch.tensor([float("inf")]), torch.ones(4)],
        [0, 1, 2],
        num_layers=3,
    )
    assert math.isnan(sq[0].item())
    assert math.isinf(sq[1].item())
    assert sq[2].item() == 4.0


def test_large_tensor_norms_do_not_overflow_when_summed_over_a_layer():
    tensors = [torch.full((4,), 1e18), torch.full((4,), 1e18)]  # norms 2e18: squares > fp32 max
    sq = squared_norms_by_layer(tensors, [0, 0], num_layers=1)
    assert math.isfinite(sq[0].item())
    assert sq[0].sqrt().item() == pytest.approx(8**0.5 * 1e18, rel=1e-6)


def test_half_precision_gradients():
    t = torch.full((1000,), 300.0, dtype=torch.float16)  # squared sum 9e7 overflows fp16
    sq = squared_norms_by_layer([t], [0], num_layers=1)
    assert sq[0].item() == pytest.approx(1000 * 300.0**2, rel=1e-3)


def test_sparse_gradient_with_duplicate_indices_is_coalesced():
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 1, 4])).sum().backward()
    assert emb.weight.grad.is_sparse
    sq = squared_norms_by_layer([emb.weight.grad], [0], num_layers=1)
    dense = emb.weight.grad.to_dense()
    assert sq[0].sqrt().item() == pytest.approx(torch.linalg.vector_norm(dense).item())


def test_no_tensors_gives_zeros():
    assert squared_norms_by_layer([], [], num_layers=2).tolist() == [0.0, 0.0]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 tensors but 1 layer indices"):
        squared_norms_by_layer([torch.ones(1), torch.ones(1)], [0], num_layers=1)


def test_float64_norms_are_computed_in_float64():
    tiny = torch.full((4,), 1e-30, dtype=torch.float64)
    huge = torch.full((9,), 1e100, dtype=torch.float64)
    sq = squared_norms_by_layer([tiny, huge], [0, 1], num_layers=2)  # float32: 0 and inf
    assert sq.sqrt().tolist() == pytest.approx([2e-30, 3e100], rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_norm_is_the_norm_of_the_magnitudes(dtype):
    z = torch.tensor([3 + 4j, 1j, -2.0], dtype=dtype)
    real = torch.tensor([1.0, 2.0])
    sq = squared_norms_by_layer([z, real, z], [0, 0, 1], num_layers=2)
    assert sq.tolist() == pytest.approx([25.0 + 1 + 4 + 1 + 4, 30.0], rel=1e-6)
    assert sq[1].sqrt().item() == pytest.approx(torch.linalg.vector_norm(z).item())


def test_one_norm_kernel_per_dtype_and_the_layer_index_cached_per_group():
    dtypes = [torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.float32]
    tensors = [torch.ones(n**2, dtype=d) for n, d in zip([2, 3, 4, 5, 6], dtypes, strict=True)]
    cache: dict = {}
    with OpRecorder() as rec:
        sq = squared_norms_by_layer(tensors, [0, 0, 1, 1, 2], num_layers=3, index_cache=cache)
    assert sq.tolist() == [4.0 + 9, 16.0 + 25, 36.0]
    assert rec.ops.count("_foreach_norm") == 4
    assert sorted(str(dtype) for _, dtype, _ in cache) == [
        "torch.bfloat16",
        "torch.float16",
        "torch.float32",
        "torch.float64",
    ]
    assert cache[(torch.device("cpu"), torch.float32, (0, 2))].tolist() == [0, 2]


@pytest.mark.parametrize(
    "to_layout",
    [
        lambda d: d.to_sparse_csr(),
        lambda d: d.to_sparse_csc(),
        lambda d: d.to_sparse_bsr((1, 2)),
        lambda d: d.to_sparse_bsc((2, 1)),
    ],
    ids=["csr", "csc", "bsr", "bsc"],
)
def test_compressed_sparse_layouts_count_like_their_dense_tensor(to_layout):
    dense = torch.tensor([[0.0, 3.0], [5.0, 0.0], [0.0, 0.0], [12.0, 0.0]])
    sparse = to_layout(dense)
    assert squared_norms_by_layer([sparse], [0], num_layers=1).tolist() == pytest.approx([178.0])
    bins = LogBins(low_exp=-1, high_exp=2, per_decade=1)
    assert log_magnitude_histogram([sparse], bins).tolist() == [5.0, 0.0, 2.0, 1.0, 0.0]
    counts, maxabs = linear_histogram([sparse], num_bins=3)
    assert maxabs.item() == 12.0 and counts.tolist() == [0.0, 6.0, 2.0]  # 0, 3 | 5, 12 over 12


def test_the_result_lives_on_the_tensors_device_or_the_one_asked_for():
    meta = torch.device("meta")  # a device other than the CPU, without an accelerator
    assert squared_norms_by_layer([torch.ones(3, device=meta)], [0], 2).device == meta
    assert squared_norms_by_layer([], [], 2, device=meta).device == meta
    plan = LayerNormPlan([torch.ones(3, device=meta)], [1], 2, meta)
    assert plan([torch.ones(3, device=meta)]).device == meta


def test_a_plan_over_mixed_dtypes_matches_the_general_function():
    dtypes = [torch.float32, torch.float16, torch.float32, torch.float64, torch.float32]
    tensors = [torch.full((n,), float(n), dtype=d) for n, d in enumerate(dtypes, start=1)]
    layer_index = [0, 2, 1, 2, 0]  # float16 and float64 alone in their groups
    plan = LayerNormPlan(tensors, layer_index, num_layers=4, device=torch.device("cpu"))
    again = [t * 2 for t in tensors]
    # by hand: n elements of value n have squared norm n**3, doubled values 4 * n**3
    expected = [4.0 * (1 + 125), 4.0 * 27, 4.0 * (8 + 64), 0.0]
    assert plan(again).tolist() == pytest.approx(expected, rel=1e-6)
    assert squared_norms_by_layer(again, layer_index, num_layers=4).tolist() == pytest.approx(
        expected, rel=1e-6
    )
    assert plan(again).dtype == torch.float64


def test_a_plan_without_tensors_gives_zeros_and_a_length_mismatch_is_an_error():
    assert LayerNormPlan([], [], 2, torch.device("cpu"))([]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="1 tensors but 2 layer indices"):
        LayerNormPlan([torch.ones(1)], [0, 1], 2, torch.device("cpu"))


def test_all_reduce_without_a_process_group_leaves_the_tensor_as_it_is():
    values = torch.tensor([1.0, -2.0])
    for op in ("sum", "max"):
        assert all_reduce(values, op) is values
    assert all_reduce(values) is values and values.tolist() == [1.0, -2.0]


def _reduce_on_rank(rank: int) -> tuple[list[float], list[float], list[float], bool]:
    pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]  # every rank makes every group
    values = torch.tensor([float(rank), 10.0 - rank])
    summed, maxima, in_pair = values.clone(), values.clone(), values.clone()
    all_reduce(summed)
    all_reduce(maxima, "max")
    same = all_reduce(in_pair, group=pairs[rank // 2])
    return summed.tolist(), maxima.tolist(), in_pair.tolist(), same is in_pair


def test_all_reduce_sums_or_takes_the_maximum_in_place_over_the_group():
    """Four ranks (threads of this process, so that mutmut sees them): the sum and the
    maximum over all of them, and the sum over each rank's pair when a group is given."""
    results = run_on_threaded_ranks(_reduce_on_rank, world=4)
    pair_sums = [[1.0, 19.0], [1.0, 19.0], [5.0, 15.0], [5.0, 15.0]]
    for (summed, maxima, in_pair, same), pair_sum in zip(results, pair_sums, strict=True):
        assert summed == [6.0, 34.0] and maxima == [3.0, 10.0]
        assert in_pair == pair_sum and same
