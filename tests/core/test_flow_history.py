"""FlowHistory: bounded columns by pairwise merging, the cell rules, remap by name, state."""

import json
import warnings

import numpy as np
import pytest

from lightning_gradflow.core.flow_history import NONFINITE_LOG10, ZERO_LOG10, FlowHistory

INF = NONFINITE_LOG10


def _decades(history: FlowHistory, steps: range) -> None:
    """Layer ``a`` at 10**-step, layer ``b`` at 1."""
    for step in steps:
        history.add(step, np.array([10.0**-step, 1.0]))


def test_columns_merge_pairwise_keeping_the_earliest_step():
    history = FlowHistory(["a", "b"], max_columns=4)
    _decades(history, range(4))
    assert history.steps.tolist() == [0, 1, 2, 3]
    _decades(history, range(4, 9))
    assert history.steps.tolist() == [0, 4, 8]
    assert history.widths.tolist() == [4, 4, 1]
    assert history.stride == 4
    np.testing.assert_allclose(history.log10_norms(), [[-1.5, -5.5, -8.0], [0.0, 0.0, 0.0]])


def test_an_odd_column_limit_fills_the_unpaired_last_column_first():
    history = FlowHistory(["a", "b"], max_columns=3)
    _decades(history, range(5))
    # 0,1,2 -> merge: [0+1], [2] (stride 2); 3 joins [2]; 4 opens a column.
    assert history.steps.tolist() == [0, 2, 4]
    assert history.widths.tolist() == [2, 2, 1]
    np.testing.assert_allclose(history.log10_norms()[0], [-0.5, -2.5, -4.0])


def test_memory_stays_bounded_on_a_long_run():
    history = FlowHistory(["a", "b"], max_columns=200)
    _decades(history, range(10_000))
    assert history.steps.size <= 200
    assert history.stride == 64
    assert history.steps[0] == 0
    assert np.all(np.diff(history.steps) == 64)
    assert history.widths.sum() == 10_000


def test_cells_read_nonfinite_then_zero_majority_then_mean_then_no_gradient():
    nan = np.nan
    history = FlowHistory(["bad", "zero", "mixed", "mostly zero", "none"], max_columns=2)
    history.add(0, np.array([1.0, 0.0, 1e-2, 0.0, nan]))
    history.add(1, np.array([np.inf, 0.0, 0.0, 0.0, nan]))
    history.add(2, np.array([1.0, 0.0, 1e-4, 1e-3, nan]))
    history.add(3, np.array([1.0, 0.0, 1e-4, 0.0, nan]))
    # Four steps merged: [0, 1] and [2, 3].
    expected = [
        [INF, 0.0],
        [ZERO_LOG10, ZERO_LOG10],
        [ZERO_LOG10, -4.0],  # one zero of two finite steps counts as zero; 1e-2 alone otherwise
        [ZERO_LOG10, ZERO_LOG10],
        [nan, nan],
    ]
    np.testing.assert_array_equal(history.log10_norms(), expected)


def test_has_grad_tells_a_nan_gradient_from_no_gradient():
    history = FlowHistory(["nan grad", "frozen", "fine"])
    history.add(5, np.array([np.nan, np.nan, 1e-3]), has_grad=np.array([True, False, True]))
    np.testing.assert_array_equal(history.log10_norms(), [[INF], [np.nan], [-3.0]])


def test_remap_carries_rows_by_name():
    history = FlowHistory(["a", "b", "c"])
    history.add(0, np.array([1e-1, 1e-2, 1e-3]))
    history.add(1, np.array([1e-1, 0.0, np.inf]))
    history.remap(["c", "new", "a"])
    history.add(2, np.array([1e-5, 1e-6, 1e-7]))
    assert history.names == ["c", "new", "a"]
    np.testing.assert_array_equal(
        history.log10_norms(),
        [[-3.0, INF, -5.0], [np.nan, np.nan, -6.0], [-1.0, -1.0, -7.0]],
    )


def test_state_round_trips_through_json_and_continues_the_same():
    original = FlowHistory(["a", "b"], max_columns=4)
    _decades(original, range(6))
    original.add(6, np.array([0.0, np.inf]))
    restored = FlowHistory(max_columns=4)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    for history in (original, restored):
        _decades(history, range(7, 12))
    assert restored.names == original.names
    assert restored.steps.tolist() == original.steps.tolist() == [0, 4, 8]
    np.testing.assert_array_equal(restored.log10_norms(), original.log10_norms())


def test_restoring_into_fewer_columns_merges_down():
    wide = FlowHistory(["a", "b"], max_columns=8)
    _decades(wide, range(8))
    narrow = FlowHistory(max_columns=3)
    narrow.load_state_dict(wide.state_dict())
    assert narrow.steps.tolist() == [0, 4]
    assert narrow.stride == 4
    np.testing.assert_allclose(narrow.log10_norms()[0], [-1.5, -5.5])


def test_invalid_column_limit_and_norm_count_are_refused():
    with pytest.raises(ValueError, match=r"max_columns=1.*>= 2"):
        FlowHistory(max_columns=1)
    history = FlowHistory(["a", "b"])
    with pytest.raises(ValueError, match="3 norms for 2 layers"):
        history.add(0, np.ones(3))


@pytest.mark.parametrize("names", [[], ["a", "b"]])
def test_an_empty_history_restored_from_json_keeps_integer_steps_and_boolean_marks(names):
    restored = FlowHistory(max_columns=4)
    restored.load_state_dict(json.loads(json.dumps(FlowHistory(names).state_dict())))
    restored.remap(["a", "b"])
    restored.add(3, np.array([np.inf, 1e-2]))
    restored.add(4, np.array([1.0, 0.0]))
    state = restored.state_dict()
    assert state["steps"] == [3, 4] and state["widths"] == [1, 1]
    assert state["log_count"] == [[0, 1], [1, 1]]
    counts = (*state["steps"], *state["widths"], *state["log_count"][1])
    assert all(type(v) is int for v in counts)
    np.testing.assert_array_equal(restored.log10_norms(), [[INF, 0.0], [-2.0, ZERO_LOG10]])


def test_restoring_exactly_max_columns_keeps_every_column():
    full = FlowHistory(["a", "b"], max_columns=4)
    _decades(full, range(4))
    restored = FlowHistory(max_columns=4)
    restored.load_state_dict(full.state_dict())
    assert restored.steps.tolist() == [0, 1, 2, 3] and restored.stride == 1
    np.testing.assert_array_equal(restored.log10_norms(), full.log10_norms())


def test_a_cell_with_fewer_than_half_zeros_averages_only_its_nonzero_steps():
    history = FlowHistory(["a"], max_columns=3)
    for step, norm in enumerate([1e-1, 0.0, 1e-3, 1e-3, 0.0, 1e-2, 1e-4]):
        history.add(step, np.array([norm]))
    # columns: steps 0-3 (one zero of four) and 4-6 (one zero of three: a third, not half)
    assert history.steps.tolist() == [0, 4] and history.widths.tolist() == [4, 3]
    np.testing.assert_allclose(history.log10_norms(), [[-7 / 3, -3.0]])


def test_reading_cells_without_a_gradient_raises_no_warning():
    history = FlowHistory(["frozen", "zero"])
    history.add(0, np.array([np.nan, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in divide"
        np.testing.assert_array_equal(history.log10_norms(), [[np.nan], [ZERO_LOG10]])
