"""How the forecasting application rejects a setting: the value, and what is allowed.

Example:
    >>> check_choice("loss", "mae", ("mse", "qlike"))
    Traceback (most recent call last):
    ...
    ValueError: loss='mae' is not allowed: expected one of ['mse', 'qlike']
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn


def fail(name: str, value: object, allowed: str) -> NoReturn:
    """Raise ``ValueError`` naming the setting, its value and what is allowed."""
    raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def check_choice(name: str, value: object, allowed: Collection[object]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        fail(name, value, f"one of {list(allowed)}")
