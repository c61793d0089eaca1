"""The shared checks of every setting: what they accept, what they reject, and the wording."""

from dataclasses import dataclass

import pytest

from lightning_gradflow.core.validation import (
    as_config,
    check_choice,
    check_count,
    check_flag,
    check_kinds,
    check_log10_range,
    check_number,
    fail,
)


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def test_fail_names_the_setting_its_value_and_what_is_allowed():
    assert _message(fail, "bins", "ten", "a positive integer") == (
        "bins='ten' is not allowed: expected a positive integer"
    )


def test_check_choice_accepts_members_of_tuples_lists_and_dict_keys():
    check_choice("loss", "mse", ("mse", "qlike"))
    check_choice("loss", "qlike", ["mse", "qlike"])
    check_choice("loss", "mse", {"mse": 1})
    assert _message(check_choice, "loss", "mae", {"mse": 1, "qlike": 2}) == (
        "loss='mae' is not allowed: expected one of ['mse', 'qlike']"
    )


def test_check_kinds_returns_the_set_and_names_the_unknown_sorted():
    assert check_kinds(("b", "a", "b"), ["a", "b", "c"]) == {"a", "b"}
    assert check_kinds(iter(["c"]), ("a", "c")) == {"c"}  # a one-shot iterable is read once
    assert check_kinds([], ()) == set()
    assert _message(check_kinds, ["z", 3, "a"], ("a",), "alert kinds") == (
        "disable=[3, 'z'] holds unknown alert kinds; allowed: ('a',)"
    )
    assert "holds unknown kinds;" in _message(check_kinds, ["z"], ("a",))


@pytest.mark.parametrize("value", ["vanishing", b"vanishing", {"vanishing": 1}, 3, None])
def test_check_kinds_wants_a_list(value):
    assert _message(check_kinds, value, ("vanishing",), "alert kinds") == (
        f"disable={value!r} is not allowed: expected a list of alert kinds"
    )
    assert _message(check_kinds, value, ("vanishing",)).endswith("expected a list of kinds")


@pytest.mark.parametrize("value", [1, 2, 10**9])
def test_check_count_accepts_positive_integers(value):
    check_count("bins", value)
    check_count("bins", value, allow_none=True)


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, False, "3"])
def test_check_count_rejects_the_rest(value):
    assert _message(check_count, "bins", value) == (
        f"bins={value!r} is not allowed: expected a positive integer"
    )
    assert _message(check_count, "bins", value, allow_none=True) == (
        f"bins={value!r} is not allowed: expected a positive integer or None (off)"
    )


def test_check_count_takes_none_only_when_allowed():
    check_count("bins", None, allow_none=True)
    assert _message(check_count, "bins", None) == (
        "bins=None is not allowed: expected a positive integer"
    )


def test_check_flag():
    for value in (True, False):
        check_flag("sharded", value)
        check_flag("sharded", value, allow_none=True)
    check_flag("sharded", None, allow_none=True)
    assert _message(check_flag, "sharded", None) == (
        "sharded=None is not allowed: expected True or False"
    )
    assert _message(check_flag, "sharded", 1, allow_none=True) == (
        "sharded=1 is not allowed: expected True, False or None"
    )
    assert "expected True or False" in _message(check_flag, "sharded", "yes")


@pytest.mark.parametrize("value", [0, -3, 2.5, 1e300, -0.0])
def test_check_number_accepts_finite_numbers(value):
    check_number("lr", value)


@pytest.mark.parametrize(
    "value", [True, False, "1", None, float("inf"), -float("inf"), float("nan")]
)
def test_check_number_rejects_the_rest(value):
    assert _message(check_number, "lr", value) == (
        f"lr={value!r} is not allowed: expected a finite number"
    )


def test_check_log10_range_gives_floats_and_passes_none():
    assert check_log10_range("range", None) is None
    assert check_log10_range("range", [-3, 2]) == (-3.0, 2.0)
    low, high = check_log10_range("range", (-1.5, -1.25))
    assert (low, high) == (-1.5, -1.25) and type(low) is float and type(high) is float
    assert type(check_log10_range("range", (1, 2))[0]) is float


@pytest.mark.parametrize(
    "value",
    [
        "ab",
        b"ab",
        {0: 1, 1: 2},
        3,
        (1,),
        (1, 2, 3),
        (True, 2),
        (1, False),
        ("1", 2),
        (1, None),
        (float("nan"), 1),
        (0, float("inf")),
        (-float("inf"), 0),
        (2, 2),  # low == high
        (2, 1.5),
    ],
)
def test_check_log10_range_rejects(value):
    assert _message(check_log10_range, "range", value) == (
        f"range={value!r} is not allowed: expected None or two finite numbers (low, high)"
        " with low < high"
    )


@dataclass
class _Config:
    patience: int = 3
    share: float = 0.5

    def __post_init__(self) -> None:
        check_count("patience", self.patience)


def test_as_config_from_none_an_instance_or_a_mapping():
    assert as_config("probes", None, _Config) == _Config()
    given = _Config(patience=7)
    assert as_config("probes", given, _Config) is given
    assert as_config("probes", {"patience": 5}, _Config) == _Config(patience=5, share=0.5)
    assert as_config("probes", {}, _Config) == _Config()


def test_as_config_names_the_config_in_a_field_error():
    assert _message(as_config, "probes", {"patience": 0}, _Config) == (
        "probes.patience=0 is not allowed: expected a positive integer"
    )


def test_as_config_names_unknown_fields_sorted_and_the_allowed_ones():
    assert _message(as_config, "probes", {"zeta": 1, "alpha": 2, "share": 0.1}, _Config) == (
        "probes={'zeta': 1, 'alpha': 2, 'share': 0.1} is not allowed: expected a _Config or a"
        " mapping of its fields; unknown: ['alpha', 'zeta'], allowed: ['patience', 'share']"
    )


@pytest.mark.parametrize("value", [3, "patience=5", [("patience", 5)]])
def test_as_config_rejects_what_is_not_a_config(value):
    assert _message(as_config, "probes", value, _Config) == (
        f"probes={value!r} is not allowed: expected a _Config, a mapping of its fields or None"
    )


def test_as_config_sorts_unknown_keys_of_mixed_types_by_their_text():
    message = _message(as_config, "probes", {"zeta": 1, 10: 2, 9: 3}, _Config)
    assert "unknown: [10, 9, 'zeta']" in message
