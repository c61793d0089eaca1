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


@pytest.mark.parametrize("kwargs", [{"low_exp": 2, "high_exp": 2}, {"per_decade": 0}])
def test_invalid_bins_rejected(kwargs):
    with pytest.raises(ValueError):
        LogBins(**kwargs)


def test_linear_histogram_spans_largest_magnitude():
    grad = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, float("nan")])
    counts, maxabs = linear_histogram([grad], num_bins=4)
    assert maxabs.item() == 2.0
    assert counts.sum().item() == 5
    assert counts.tolist() == [1.0, 1.0, 2.0, 1.0]  # scaled: -1, -.5 | 0, .25 | .5
