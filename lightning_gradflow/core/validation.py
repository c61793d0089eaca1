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
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import NoReturn


def fail(name: str, value: object, allowed: str) -> NoReturn:
    """Raise ``ValueError`` naming the setting, its value and what is allowed."""
    raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def check_choice(name: str, value: object, allowed: Collection[object]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed`` (a tuple, list or dict's keys)."""
    if value not in allowed:
        fail(name, value, f"one of {list(allowed)}")


def check_kinds(disable: Iterable[str], allowed: Sequence[str], what: str = "kinds") -> set[str]:
    """``disable`` as a set, or ``ValueError`` listing the names not in ``allowed``."""
    disable = set(disable)
    unknown = sorted(disable - set(allowed))
    if unknown:
        raise ValueError(f"disable={unknown} holds unknown {what}; allowed: {allowed}")
    return disable
