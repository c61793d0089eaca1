"""``ProbeConfig`` at the edge of every allowed range: the last value rejected (with the message
naming the setting and what is allowed) and the first accepted."""

import dataclasses
import math

import pytest

from lightning_gradflow.core.probes import ProbeConfig

SHARE = "a number in (0, 1)"
COUNT = "a positive integer"
SHARES = ("dead_relu_threshold", "saturation_threshold", "attention_entropy_threshold")
COUNTS = ("dead_relu_min_rows", "max_samples", "patience", "histogram_bins")

REJECTED = [
    *((name, value, SHARE) for name in (*SHARES, "rank_decay_ratio") for value in (0.0, 1.0)),
    *((name, value, COUNT) for name in COUNTS for value in (0, 1.0)),
    ("sigmoid_tail", 0.0, "a number in (0, 0.5)"),
    ("sigmoid_tail", 0.5, "a number in (0, 0.5)"),
    ("tanh_tail", 0.0, SHARE),
    ("tanh_tail", 1.0, SHARE),
    ("attention_head_share", 0.0, "a number in (0, 1]"),
    ("attention_head_share", 1.001, "a number in (0, 1]"),
    ("attention_min_keys", 1, "an integer >= 2"),
    ("attention_min_keys", 2.0, "an integer >= 2"),
    ("rank_collapse_threshold", 1.0, "a number > 1"),
    ("rank_min_tokens", 1, "an integer >= 2"),
    ("rank_min_tokens", 2.0, "an integer >= 2"),
    *((f.name, "1", "a finite number") for f in dataclasses.fields(ProbeConfig)),
    *((f.name, True, "a finite number") for f in dataclasses.fields(ProbeConfig)),
    ("rank_collapse_threshold", math.inf, "a finite number"),
    ("sigmoid_tail", math.nan, "a finite number"),
]


@pytest.mark.parametrize(("field", "value", "allowed"), REJECTED)
def test_the_last_value_out_of_range_is_rejected_by_name(field, value, allowed):
    with pytest.raises(ValueError) as error:
        ProbeConfig(**{field: value})
    assert str(error.value) == f"{field}={value!r} is not allowed: expected {allowed}"


ACCEPTED = [
    *((name, value) for name in (*SHARES, "rank_decay_ratio") for value in (1e-9, 0.999)),
    *((name, 1) for name in COUNTS),
    ("sigmoid_tail", 1e-9),
    ("sigmoid_tail", 0.499),
    ("tanh_tail", 1e-9),
    ("tanh_tail", 0.999),
    ("attention_head_share", 1e-9),
    ("attention_head_share", 1.0),
    ("attention_min_keys", 2),
    ("rank_collapse_threshold", 1.001),
    ("rank_collapse_threshold", 2),  # an int is a number
    ("rank_min_tokens", 2),
]


@pytest.mark.parametrize(("field", "value"), ACCEPTED)
def test_the_first_value_in_range_is_accepted(field, value):
    assert getattr(ProbeConfig(**{field: value}), field) == value


def test_the_documented_defaults():
    """The module table's defaults."""
    assert dataclasses.asdict(ProbeConfig()) == {
        "dead_relu_threshold": 0.5,
        "dead_relu_min_rows": 16,
        "sigmoid_tail": 0.01,
        "tanh_tail": 0.01,
        "saturation_threshold": 0.5,
        "attention_entropy_threshold": 0.1,
        "attention_head_share": 0.5,
        "attention_min_keys": 4,
        "rank_collapse_threshold": 1.5,
        "rank_decay_ratio": 0.25,
        "rank_min_tokens": 4,
        "max_samples": 8,
        "patience": 3,
        "histogram_bins": 20,
    }
