"""When the costly outputs (histograms, pictures) are due.

An interval is a number of an optimizer's own steps, ``None`` (off) or ``"auto"``: 500 steps,
or fewer when the run's length is known, so that a short run still gets about
:data:`AUTO_PER_RUN` of them. Step 0 is always due, and so is the run's last step when its length
is known: a user sees the initialised network *and* the trained one.

Example:
    >>> resolve_interval("auto", total_steps=126)
    13
    >>> [s for s in range(126) if is_due(s, 13, total_steps=126)][-2:]
    [117, 125]
"""

from __future__ import annotations

import math
from typing import Literal

from lightning_gradflow.core.validation import fail

Interval = int | Literal["auto"] | None

AUTO_MAX = 500
"""``"auto"``'s interval when the run's length is unknown, and its upper bound."""

AUTO_PER_RUN = 10
"""About how many outputs ``"auto"`` aims for over a run of known length (plus the last step)."""


def check_interval(name: str, value: object) -> None:
    """``ValueError`` unless ``value`` is a positive ``int``, ``"auto"`` or ``None``."""
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(name, value, 'a positive integer, "auto" or None (off)')


def resolve_interval(value: Interval, total_steps: int | None) -> int | None:
    """The interval in steps: ``"auto"`` becomes ``ceil(total / 10)``, at most 500.

    Example:
        >>> resolve_interval("auto", None), resolve_interval("auto", 10**6), resolve_interval(7, 9)
        (500, 500, 7)
    """
    if value != "auto":
        return value
    if not total_steps or total_steps < 1:
        return AUTO_MAX
    return max(1, min(AUTO_MAX, math.ceil(total_steps / AUTO_PER_RUN)))


def is_due(step: int, every: int | None, total_steps: int | None = None) -> bool:
    """Whether ``step`` (0-based) is due: a multiple of ``every``, or the run's last step.

    Example:
        >>> is_due(0, 50), is_due(49, 50), is_due(49, 50, total_steps=50), is_due(3, None)
        (True, False, True, False)
    """
    if every is None:
        return False
    return step % every == 0 or (total_steps is not None and step == total_steps - 1)
