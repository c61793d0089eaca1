"""RunSummary: per-layer sums by name, the zero-share boundary of 50 %, the largest finite total,
the picture band's reset, and the state through JSON."""

import json
import warnings

import numpy as np
import pytest

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.summary import RunSummary

NAN, INF = np.nan, np.inf


def _record(norms, has_grad=None, total=1.0):
    """A step's record; a NaN norm means "no gradient" unless ``has_grad`` says otherwise."""
    norms = np.asarray(norms, dtype=np.float64)
    has_grad = ~np.isnan(norms) if has_grad is None else np.asarray(has_grad)
    return StepRecord(0, 0, norms, has_grad, total)


def _summary(names, *records):
    summary = RunSummary()
    summary.remap(list(names))
    for record in records:
        summary.update(record)
    return summary


def test_sums_count_finite_nonzero_norms_and_steps_with_a_gradient():
    summary = _summary(
        ["a", "b", "c"],
        _record([1e-2, 0.0, NAN], has_grad=[True, True, False]),
        _record([1e-4, INF, 1.0]),
        _record([1.0, 1e-3, 1e-1]),
    )
    np.testing.assert_allclose(summary.log_sum, [-6.0, -3.0, -1.0])
    assert summary.log_count.tolist() == [3.0, 1.0, 2.0]
    assert summary.grad_steps.tolist() == [3.0, 3.0, 2.0]
    assert summary.zero_steps.tolist() == [0.0, 1.0, 0.0]
    assert summary.nonfinite_steps == 1


@pytest.mark.parametrize(
    ("zeros", "nonzeros", "mean"),
    [(1, 1, None), (2, 2, None), (1, 2, -2.0), (2, 3, -2.0), (3, 2, None)],
)
def test_a_layer_zero_on_half_of_its_steps_or_more_has_no_mean(zeros, nonzeros, mean):
    records = [_record([0.0, 1.0])] * zeros + [_record([1e-2, 1.0])] * nonzeros
    result = _summary(["a", "b"], *records).as_dict()
    assert result["mean_log10_norm"] == [mean, 0.0]
    assert result["zero_grad_share"] == [pytest.approx(zeros / (zeros + nonzeros)), 0.0]


def test_the_fit_uses_the_layers_with_a_mean_and_is_absent_below_two():
    result = _summary(["in", "mid", "out"], _record([1e-4, 1e-2, 1.0])).as_dict()
    assert result["first_last_ratio"] == pytest.approx(1e-4)
    assert result["gamma"] == pytest.approx(0.01)
    alone = _summary(["in", "out"], _record([0.0, 1.0])).as_dict()
    assert alone["first_last_ratio"] is None and alone["gamma"] is None
    assert alone["mean_log10_norm"] == [None, 0.0]


def test_a_layer_that_never_had_a_gradient_reads_none_without_a_warning():
    summary = _summary(["frozen", "b"], _record([NAN, 1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in divide"
        result = summary.as_dict()
    assert result["layers"] == ["frozen", "b"]
    assert result["mean_log10_norm"] == [None, 0.0]
    assert result["zero_grad_share"] == [None, 0.0]


def test_the_largest_total_skips_steps_with_a_nonfinite_layer_or_total():
    summary = _summary(
        ["a"],
        _record([2.0], total=2.0),
        _record([INF], total=9.0),  # a finite total beside a NaN layer: skipped
        _record([3.0], total=INF),
        _record([1.5], total=1.5),
    )
    assert summary.as_dict()["grad_norm_max"] == 2.0
    assert summary.as_dict()["nonfinite_grad_steps"] == 1
    empty = _summary(["a"], _record([INF], total=INF)).as_dict()
    assert empty["grad_norm_max"] is None and empty["nonfinite_grad_steps"] == 1


def test_the_band_holds_low_high_and_nonfinite_marks_until_taken():
    summary = _summary(
        ["a", "b", "c"],
        _record([2.0, 1.0, NAN], has_grad=[True, True, False]),
        _record([1.0, NAN, NAN], has_grad=[True, True, False]),
        _record([3.0, 4.0, NAN], has_grad=[True, True, False]),
    )
    low, high, bad = summary.take_band()
    np.testing.assert_array_equal(low, [1.0, 1.0, NAN])
    np.testing.assert_array_equal(high, [3.0, 4.0, NAN])
    assert bad.tolist() == [False, True, False]
    assert summary.take_band() == (None, None, None)
    summary.update(_record([5.0, 6.0, 7.0]))
    low, high, bad = summary.take_band()
    assert low.tolist() == high.tolist() == [5.0, 6.0, 7.0] and not bad.any()


def test_remap_carries_sums_by_name_new_layers_start_at_zero_and_the_band_resets():
    summary = _summary(["a", "b"], _record([1e-2, 0.0]), _record([1e-4, 1.0]))
    summary.remap(["b", "new", "a"])
    assert summary.names == ["b", "new", "a"]
    assert summary.band is None
    np.testing.assert_allclose(summary.log_sum, [0.0, 0.0, -6.0])
    assert summary.log_count.tolist() == [1.0, 0.0, 2.0]
    assert summary.grad_steps.tolist() == [2.0, 0.0, 2.0]
    assert summary.zero_steps.tolist() == [1.0, 0.0, 0.0]
    summary.update(_record([1.0, 1e-3, 1e-1]))
    assert summary.as_dict()["mean_log10_norm"] == [
        pytest.approx(0.0),
        pytest.approx(-3.0),
        pytest.approx(-7 / 3),
    ]


def test_state_round_trips_through_json_and_continues_the_same():
    records = [_record([1e-2, 0.0], total=3.0), _record([INF, 1.0], total=5.0)]
    original = _summary(["a", "b"], *records)
    restored = RunSummary()
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    for summary in (original, restored):
        summary.update(_record([1e-4, 1e-1], total=2.0))
    assert restored.as_dict() == original.as_dict()
    assert restored.as_dict()["grad_norm_max"] == 3.0
    assert restored.as_dict()["nonfinite_grad_steps"] == 1
    assert restored.grad_steps.dtype == np.float64


def test_a_state_without_per_layer_sums_restores_zeros():
    restored = RunSummary()
    restored.load_state_dict({"layers": ["a", "b"], "max_total": NAN, "nonfinite_steps": 2})
    for key in ("log_sum", "log_count", "grad_steps", "zero_steps"):
        assert getattr(restored, key).tolist() == [0.0, 0.0]
    assert restored.as_dict()["grad_norm_max"] is None
    assert restored.as_dict()["nonfinite_grad_steps"] == 2
