"""``DetectorConfig`` at the edge of every allowed range: the last value rejected (with the
message naming the setting and what is allowed) and the first accepted."""

import dataclasses

import pytest

from lightning_gradflow.core.detectors import DetectorConfig

POSITIVE = "a number > 0"
BELOW_ONE = "a number in (0, 1)"
ABOVE_ONE = "a number > 1"
COUNT = "a positive integer"

REJECTED = [
    ("vanishing_floor", 0.0, POSITIVE),
    ("update_ratio_limit", 0.0, POSITIVE),
    ("weight_rms_floor", 0.0, POSITIVE),
    ("vanishing_depth_ratio", 0.0, BELOW_ONE),
    ("vanishing_depth_ratio", 1.0, BELOW_ONE),
    ("stalled_ratio", 0.0, BELOW_ONE),
    ("stalled_ratio", 1.0, BELOW_ONE),
    ("exploding_depth_ratio", 1.0, ABOVE_ONE),
    ("spike_factor", 1.0, ABOVE_ONE),
    ("loss_spike_factor", 1.0, ABOVE_ONE),
    ("clipping_share", 0.0, "a number in (0, 1]"),
    ("clipping_share", 1.01, "a number in (0, 1]"),
    ("growth_decades", 0.0, "a number of decades > 0"),
    *((name, 0, COUNT) for name in ("loss_spike_steps", "patience", "min_history")),
    *((name, 0, COUNT) for name in ("clipping_window", "amp_nonfinite_patience")),
    ("stalled_patience", 0, COUNT),
    ("stalled_patience", 2.0, COUNT),
    ("cooldown_steps", -1, "an integer >= 0"),
    ("cooldown_steps", 1.0, "an integer >= 0"),
    ("window", 2, "an integer >= 3 (a median needs history)"),
    ("window", 0, COUNT),
    ("window", 3.0, COUNT),
    ("patience", "10", "a finite number"),
]


@pytest.mark.parametrize(("field", "value", "allowed"), REJECTED)
def test_the_last_value_out_of_range_is_rejected_by_name(field, value, allowed):
    message = f"{field}={value!r} is not allowed: expected {allowed}"
    with pytest.raises(ValueError) as error:
        DetectorConfig(**{field: value})
    assert str(error.value) == message


ACCEPTED = [
    ("vanishing_floor", 1e-12),
    ("update_ratio_limit", 1e-12),
    ("weight_rms_floor", 1e-12),
    ("vanishing_depth_ratio", 0.999),
    ("vanishing_depth_ratio", 1e-12),
    ("stalled_ratio", 0.999),
    ("exploding_depth_ratio", 1.001),
    ("spike_factor", 1.001),
    ("loss_spike_factor", 1.001),
    ("clipping_share", 1.0),
    ("clipping_share", 1e-12),
    ("growth_decades", 1e-12),
    ("loss_spike_steps", 1),
    ("patience", 1),
    ("min_history", 1),
    ("clipping_window", 1),
    ("amp_nonfinite_patience", 1),
    ("stalled_patience", 1),
    ("cooldown_steps", 0),
    ("window", 3),
]


@pytest.mark.parametrize(("field", "value"), ACCEPTED)
def test_the_first_value_in_range_is_accepted(field, value):
    assert getattr(DetectorConfig(**{field: value}), field) == value


def test_every_field_is_checked_at_its_edges():
    """A field added to ``DetectorConfig`` needs its rows above."""
    names = {f.name for f in dataclasses.fields(DetectorConfig)}
    assert {field for field, *_ in REJECTED} == {field for field, _ in ACCEPTED} == names
