import re

import pytest
import torch

from lightning_gradflow.core.histograms import (
    LogBins,
    linear_histogram,
    log_magnitude_histogram,
    max_magnitude,
)


def test_counts_sum_to_element_count_with_zeros_and_nonfinite():
    grad = torch.randn(1000) * 1e-3
    grad[:10] = 0.0
    grad[10] = float("nan")
    grad[11] = float("inf")
    grad[12] = 1e-20  # below the lowest bin: first value bin
    grad[13] = 1e9  # above the highest: last value bin
    bins = LogBins()
    counts = log_magnitude_histogram([grad, torch.ones(3)], bins)
    assert counts.shape == (bins.num_buckets,)
    assert counts.sum().item() == 1003
    assert counts[0].item() == 10
    assert counts[-1].item() == 2
    assert counts[1].item() >= 1 and counts[-2].item() >= 1


def test_decade_placement_matches_numpy_reference():
    values = torch.tensor([1e-7, 3e-7, 2e-3, 5e-3, 0.9, 12.0], dtype=torch.float64)
    bins = LogBins(low_exp=-8, high_exp=2, per_decade=2)
    counts = log_magnitude_histogram([values], bins)
    import numpy as np

    edges = bins.edges()[1:-1]
    expected, _ = np.histogram(np.log10(values.numpy()), bins=edges)
    assert counts[1:-1].tolist() == expected.astype(float).tolist()


def test_edges_layout():
    bins = LogBins(low_exp=-2, high_exp=1, per_decade=2)
    assert bins.edges() == [-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    assert len(bins.edges()) == bins.num_buckets + 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"low_exp": 2, "high_exp": 2},
            "high_exp=2 is not allowed: expected an integer above low_exp=2",
        ),
        (
            {"low_exp": 3, "high_exp": 1},
            "high_exp=1 is not allowed: expected an integer above low_exp=3",
        ),
        ({"per_decade": 0}, "per_decade=0 is not allowed: expected a positive integer"),
        ({"per_decade": 2.5}, "per_decade=2.5 is not allowed: expected a positive integer"),
        ({"per_decade": True}, "per_decade=True is not allowed: expected a positive integer"),
        ({"high_exp": float("inf")}, "high_exp=inf is not allowed: expected an integer"),
        ({"low_exp": float("nan")}, "low_exp=nan is not allowed: expected an integer"),
        ({"low_exp": -12.0}, "low_exp=-12.0 is not allowed: expected an integer"),
    ],
)
def test_invalid_bins_rejected(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LogBins(**kwargs)


def test_linear_histogram_spans_largest_magnitude():
    grad = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, float("nan")])
    counts, maxabs = linear_histogram([grad], num_bins=4)
    assert maxabs.item() == 2.0
    assert counts.sum().item() == 5
    assert counts.tolist() == [1.0, 1.0, 2.0, 1.0]  # scaled: -1, -.5 | 0, .25 | .5


def test_float64_magnitudes_beyond_float32_range_land_in_the_end_value_bins():
    grad = torch.tensor([0.0, 1e-50, -1e300, 0.5], dtype=torch.float64)
    bins = LogBins(low_exp=-2, high_exp=2, per_decade=1)
    counts = log_magnitude_histogram([grad], bins)
    assert counts.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # zero, 1e-50 | 0.5 | 1e300


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_largest_finite_magnitude_is_a_value_and_infinity_is_not(dtype):
    big = torch.finfo(dtype).max
    grad = torch.tensor([big, -big, float("inf"), float("-inf"), float("nan"), 0.0], dtype=dtype)
    counts = log_magnitude_histogram([grad], LogBins(low_exp=-2, high_exp=2, per_decade=1))
    assert counts.tolist() == [1.0, 0.0, 0.0, 0.0, 2.0, 3.0]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_values_are_binned_by_magnitude(dtype):
    z = torch.tensor([3 + 4j, -0.03j, 0, complex("nan")], dtype=dtype)
    bins = LogBins(low_exp=-2, high_exp=2, per_decade=1)
    counts = log_magnitude_histogram([z, torch.tensor([-20.0])], bins)
    assert counts.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # 0 | .03 | 5 | 20 | nan
    linear, maxabs = linear_histogram([z, torch.tensor([-2.5])], num_bins=4)
    assert maxabs.item() == 5.0
    assert linear.tolist() == [0.0, 1.0, 2.0, 1.0]  # -2.5 | 0, .03 | 5 (magnitudes)


@pytest.mark.parametrize(
    ("num_bins", "expected"),
    [(1, [800.0]), (4, [0.0, 0.0, 776.0, 24.0]), (5, [0.0, 0.0, 776.0, 16.0, 8.0])],
)
def test_sparse_implicit_zeros_are_counted_like_dense_zeros(num_bins, expected):
    emb = torch.nn.Embedding(100, 8, sparse=True)
    emb(torch.tensor([1, 2, 3, 3])).sum().backward()
    grad = emb.weight.grad  # rows 1, 2 (ones) and 3 (twos): 24 values, 776 implicit zeros
    counts, maxabs = linear_histogram([grad], num_bins)
    assert maxabs.item() == 2.0 and counts.tolist() == expected  # 0 | 0.5 | 1 after scaling
    assert counts.tolist() == linear_histogram([grad.to_dense()], num_bins)[0].tolist()
    bins = LogBins()
    log_counts = log_magnitude_histogram([grad], bins)
    assert log_counts.tolist() == log_magnitude_histogram([grad.to_dense()], bins).tolist()
    assert log_counts[0].item() == 776


def test_no_tensors_give_empty_float64_counts_and_a_zero_range():
    counts = log_magnitude_histogram([], LogBins(low_exp=-2, high_exp=2, per_decade=1))
    assert counts.dtype == torch.float64 and counts.tolist() == [0.0] * 6
    linear, maxabs = linear_histogram([], num_bins=4)
    assert linear.dtype == maxabs.dtype == torch.float64
    assert linear.tolist() == [0.0] * 4 and maxabs.item() == 0.0
    assert max_magnitude([]).dtype == torch.float64 and max_magnitude([]).item() == 0.0


@pytest.mark.parametrize(
    ("dtype", "value", "bin_index"),
    [
        # log10 is -3.00024 (bin [-3.25, -3)) but -3.0 when taken in bfloat16
        (torch.bfloat16, 0.00099945068359375, 4),
        # log10 is -2.75085 (bin [-3, -2.75)) but -2.75 when taken in float16
        (torch.float16, 0.0017747879028320312, 5),
    ],
)
def test_half_precision_values_land_in_the_bins_of_their_exact_log10(dtype, value, bin_index):
    grad = torch.tensor([value, -value], dtype=dtype)
    assert grad.double()[0].item() == value  # exactly representable
    counts = log_magnitude_histogram([grad], LogBins(low_exp=-4, high_exp=0, per_decade=4))
    expected = [0.0] * 18
    expected[bin_index] = 2.0  # bucket 0 holds zeros: value bin i is bucket i + 1
    assert counts.dtype == torch.float64 and counts.tolist() == expected


def test_a_range_below_one_still_spans_the_bins():
    counts, maxabs = linear_histogram([torch.tensor([-0.5, 0.25, 0.5])], num_bins=4)
    assert maxabs.item() == 0.5
    assert counts.dtype == torch.float64
    assert counts.tolist() == [1.0, 0.0, 0.0, 2.0]  # scaled: -1 | .5, 1


def test_an_all_zero_gradient_fills_the_bin_that_holds_zero():
    counts, maxabs = linear_histogram([torch.zeros(6), torch.zeros(2)], num_bins=5)
    assert maxabs.item() == 0.0
    assert counts.tolist() == [0.0, 0.0, 8.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("values", "largest"),
    [
        ([0.5, float("nan")], 0.5),
        ([0.5, float("inf")], 0.5),
        ([-0.25, float("-inf"), 0.125], 0.25),
        ([float("nan"), float("inf")], 0.0),
    ],
)
def test_the_range_is_the_largest_finite_magnitude(values, largest):
    tensors = [torch.tensor(values), torch.tensor([0.0])]
    assert max_magnitude(tensors).item() == largest
    assert max_magnitude(tensors).dtype == torch.float64
    assert max_magnitude(tensors[:1]).item() == largest
    counts, maxabs = linear_histogram(tensors, num_bins=2)
    assert maxabs.item() == largest
    finite = sum(v == v and abs(v) != float("inf") for v in values) + 1
    assert counts.sum().item() == finite  # NaN and Inf are left out


def test_counts_stay_on_the_gradients_device():
    meta = torch.device("meta")  # a device other than the CPU, without an accelerator
    grads = [torch.ones(3, device=meta), torch.ones(2, 2, dtype=torch.float64, device=meta)]
    counts = log_magnitude_histogram(grads, LogBins())
    assert counts.device == meta and counts.dtype == torch.float64
    assert counts.shape == (LogBins().num_buckets,)
    linear, maxabs = linear_histogram(grads, num_bins=4)
    assert linear.device == maxabs.device == meta and linear.shape == (4,)
    assert max_magnitude(grads).device == meta
    empty = [torch.ones(0, device=meta)]  # no values: the range is a zero made on that device
    assert max_magnitude(empty).device == linear_histogram(empty, num_bins=2)[1].device == meta


def _reference(layer: list[torch.Tensor], bins: LogBins) -> list[float]:
    """The documented buckets, counted in numpy one value at a time."""
    import math

    counts = [0.0] * bins.num_buckets
    wide = any(t.dtype in (torch.float64, torch.complex128) for t in layer)
    for tensor in layer:
        dense = tensor.to_dense() if tensor.is_sparse else tensor
        values = dense.abs().to(torch.float64 if wide else torch.float32).double().flatten()
        for value in values.tolist():
            if value == 0.0:
                counts[0] += 1
            elif not math.isfinite(value):
                counts[-1] += 1
            else:
                position = (math.log10(value) - bins.low_exp) * bins.per_decade
                counts[1 + min(max(math.floor(position), 0), bins.num_value_bins - 1)] += 1
    return counts


def _zoo() -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)

    def spread(n: int, dtype: torch.dtype) -> torch.Tensor:  # magnitudes over 1e-16 ... 1e8
        exponents = torch.rand(n, generator=generator, dtype=torch.float64) * 24 - 16
        signs = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return (signs * 10.0**exponents).to(dtype)

    nan, inf = float("nan"), float("inf")
    special = torch.tensor([0.0, -0.0, nan, inf, -inf, 1e-30, 1e-45, 3e9])
    sparse = torch.zeros(6, 5)
    sparse[1, 2], sparse[4, 0] = 2.5e-3, float("nan")
    return [
        [spread(50, torch.float32), special],
        [],
        [spread(40, torch.float64), torch.tensor([1e-300, 0.0], dtype=torch.float64)],
        [spread(30, torch.float32).to(torch.complex64) * (1 + 1j)],
        [sparse.to_sparse(), spread(3, torch.float32)],
        [torch.zeros(0)],
        [spread(25, torch.float32)],
    ]


@pytest.mark.parametrize("chunk", [1, 60, 2**22])
def test_all_layers_at_once_count_what_the_reference_counts(monkeypatch, chunk: int):
    from lightning_gradflow.core import histograms

    monkeypatch.setattr(histograms, "CHUNK_ELEMENTS", chunk)  # a layer each ... all in one
    bins = LogBins(low_exp=-12, high_exp=4, per_decade=4)
    layers = _zoo()
    counts = histograms.log_magnitude_histograms(layers, bins, torch.device("cpu"))
    assert counts.shape == (len(layers), bins.num_buckets)
    for row, layer in zip(counts.tolist(), layers, strict=True):
        assert row == _reference(layer, bins)


@pytest.mark.parametrize(
    "bins",
    [
        LogBins(low_exp=-7, high_exp=5, per_decade=3),
        LogBins(low_exp=-50, high_exp=-1, per_decade=7),
    ],
)
def test_zeros_and_nonfinite_keep_their_own_buckets_in_any_bin_layout(bins: LogBins):
    """Zeros and NaN/Inf are told apart by sentinels on the log10 axis; their bins must be
    exact for any number of bins per decade, and a float32 subnormal is a value, not a zero."""
    from lightning_gradflow.core import histograms

    layers = _zoo()
    counts = histograms.log_magnitude_histograms(layers, bins, torch.device("cpu"))
    for row, layer in zip(counts.tolist(), layers, strict=True):
        assert row == _reference(layer, bins)
