import re

import pytest
import torch

from lightning_gradflow.core.histograms import LogBins, linear_histogram, log_magnitude_histogram


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
