"""When histograms and pictures are due: the interval's validation, ``"auto"`` at the bounds of
its ``ceil(total / 10)`` capped at 500, and the first and last steps."""

import re

import pytest

from lightning_gradflow.core.schedule import (
    AUTO_MAX,
    AUTO_PER_RUN,
    check_interval,
    is_due,
    resolve_interval,
)


@pytest.mark.parametrize("value", [None, "auto", 1, 2, 10**6])
def test_positive_integers_auto_and_none_are_accepted(value):
    assert check_interval("plot_every_n_steps", value) is None


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "5", "Auto", [5]])
def test_anything_else_is_refused_naming_the_setting_and_value(value):
    message = f'plot_every_n_steps={value!r} is not allowed: expected a positive integer, "auto"'
    with pytest.raises(ValueError, match=re.escape(message)):
        check_interval("plot_every_n_steps", value)


@pytest.mark.parametrize(
    ("total_steps", "expected"),
    [
        (None, 500),  # length unknown
        (0, 500),
        (-3, 500),
        (1, 1),  # ceil(0.1) = 1
        (10, 1),
        (11, 2),  # ceil(1.1): never fewer than 10 outputs
        (20, 2),
        (21, 3),
        (4990, 499),
        (4991, 500),
        (5000, 500),
        (5001, 500),  # ceil(500.1) = 501, capped
        (10**6, 500),
    ],
)
def test_auto_is_a_tenth_of_the_run_rounded_up_and_at_most_500(total_steps, expected):
    assert (AUTO_MAX, AUTO_PER_RUN) == (500, 10)
    assert resolve_interval("auto", total_steps) == expected


@pytest.mark.parametrize("value", [1, 7, 1000, None])
def test_a_fixed_interval_or_off_is_kept_whatever_the_run_length(value):
    assert resolve_interval(value, None) == value
    assert resolve_interval(value, 30) == value


def test_steps_due_are_the_multiples_and_the_last_step():
    due = [s for s in range(12) if is_due(s, 5, total_steps=12)]
    assert due == [0, 5, 10, 11]
    assert [s for s in range(12) if is_due(s, 5)] == [0, 5, 10]  # length unknown: no last step
    assert [s for s in range(12) if is_due(s, 5, total_steps=11)] == [0, 5, 10]  # 10 is both
    assert [s for s in range(4) if is_due(s, 1, total_steps=4)] == [0, 1, 2, 3]


def test_off_is_never_due_not_even_on_the_first_or_last_step():
    assert not any(is_due(s, None, total_steps=3) for s in range(3))
