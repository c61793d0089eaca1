"""The one wording of a rejected setting, shared by every config check.

Example:
    >>> check_kinds(["vanishing"], ("vanishing", "exploding"))
    {'vanishing'}
    >>> check_choice("loss", "mae", ("mse", "qlike"))
    Traceback (most recent call last):
    ...
    ValueError: loss='mae' is not allowed: expected one of ['mse', 'qlike']
    >>> fail("patience", 0, "a positive integer")
    Traceback (most recent call last):
    ...
    ValueError: patience=0 is not allowed: expected a positive integer
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     patience: int = 3
    >>> as_config("probes", {"patience": 5}, Config)
    Config(patience=5)
    >>> as_config("probes", {"patient": 5}, Config)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: probes={'patient': 5} is not allowed: ... unknown: ['patient'], allowed: [...]
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import fields
from typing import NoReturn, TypeVar

T = TypeVar("T")


def fail(name: str, value: object, allowed: str) -> NoReturn:
    """Raise ``ValueError`` naming the setting, its value and what is allowed."""
    raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def check_choice(name: str, value: object, allowed: Collection[object]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed`` (a tuple, list or dict's keys)."""
    if value not in allowed:
        fail(name, value, f"one of {list(allowed)}")


def check_kinds(disable: Iterable[str], allowed: Sequence[str], what: str = "kinds") -> set[str]:
    """``disable`` as a set, or ``ValueError`` for a non-list or the names not in ``allowed``."""
    if isinstance(disable, str | bytes | Mapping) or not isinstance(disable, Iterable):
        fail("disable", disable, f"a list of {what}")
    disable = list(disable)
    unknown = sorted((k for k in disable if k not in allowed), key=str)
    if unknown:
        raise ValueError(f"disable={unknown} holds unknown {what}; allowed: {allowed}")
    return set(disable)


def check_count(name: str, value: object, allow_none: bool = False) -> None:
    """``ValueError`` unless ``value`` is a positive ``int`` (not a bool), or allowed ``None``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or None (off)" if allow_none else "a positive integer"
        fail(name, value, allowed)


def check_flag(name: str, value: object, allow_none: bool = False) -> None:
    """``ValueError`` unless ``value`` is ``True`` or ``False`` (or ``None`` if allowed)."""
    if not (isinstance(value, bool) or (value is None and allow_none)):
        fail(name, value, "True, False or None" if allow_none else "True or False")


def check_number(name: str, value: object) -> None:
    """``ValueError`` unless ``value`` is a finite ``int`` or ``float`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(name, value, "a finite number")
    if isinstance(value, float) and not math.isfinite(value):
        fail(name, value, "a finite number")


def check_log10_range(name: str, value: object) -> tuple[float, float] | None:
    """``value`` as ``(low, high)`` floats, ``low < high``; ``None`` passes through."""
    if value is None:
        return None
    allowed = "None or two finite numbers (low, high) with low < high"
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        fail(name, value, allowed)
    if len(value) != 2:
        fail(name, value, allowed)
    for bound in value:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            fail(name, value, allowed)
        if not math.isfinite(bound):
            fail(name, value, allowed)
    low, high = (float(bound) for bound in value)
    if low >= high:
        fail(name, value, allowed)
    return (low, high)


def as_config(name: str, value: object, cls: type[T]) -> T:
    """``value`` as a ``cls`` dataclass: ``None`` gives the defaults, a mapping (what Hydra
    builds from ``+callbacks.gradflow.probes.patience=5``) its fields, an instance itself."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        allowed = [f.name for f in fields(cls)]
        unknown = sorted((k for k in value if k not in allowed), key=str)
        if not unknown:
            try:
                return cls(**value)
            except ValueError as error:  # name the config: probes.patience=0, not patience=0
                raise ValueError(f"{name}.{error}") from None
        fail(
            name,
            dict(value),
            f"a {cls.__name__} or a mapping of its fields; unknown: {unknown}, allowed: {allowed}",
        )
    fail(name, value, f"a {cls.__name__}, a mapping of its fields or None")
