"""When the costly outputs (histograms, pictures) are due.

An interval is a number of an optimizer's own steps, ``None`` (off) or ``"auto"``: 500 steps,
or fewer when the run's length is known, so that a short run still gets about
:data:`AUTO_PER_RUN` of them. Step 0 is always due, and so is the run's last step when its length
is known: a user sees the initialised network *and* the trained one. Between those two, an
``"auto"`` step is postponed while the outputs so far took more than :data:`AUTO_SHARE` of the
run's time (:class:`CostBudget`): a picture costs about a quarter of a second whatever the step
time, which must not make a run of fast steps slower.

Example:
    >>> resolve_interval("auto", total_steps=126)
    13
    >>> [s for s in range(126) if is_due(s, 13, total_steps=126)][-2:]
    [117, 125]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

from lightning_gradflow.core.validation import fail

Interval = int | Literal["auto"] | None

AUTO_MAX = 500
"""``"auto"``'s interval when the run's length is unknown, and its upper bound."""

AUTO_PER_RUN = 10
"""About how many outputs ``"auto"`` aims for over a run of known length (plus the last step)."""

AUTO_SHARE = 0.01
"""The share of a run's time that ``"auto"`` outputs may take (beyond the first and last step)."""


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


def is_first_or_last(step: int, total_steps: int | None) -> bool:
    """Step 0, or the run's last step when its length is known.

    Example:
        >>> is_first_or_last(0, None), is_first_or_last(9, 10), is_first_or_last(9, None)
        (True, True, False)
    """
    return step == 0 or (total_steps is not None and step == total_steps - 1)


def is_due(step: int, every: int | None, total_steps: int | None = None) -> bool:
    """Whether ``step`` (0-based) is due: a multiple of ``every``, or the run's last step.

    Example:
        >>> is_due(0, 50), is_due(49, 50), is_due(49, 50, total_steps=50), is_due(3, None)
        (True, False, True, False)
    """
    if every is None:
        return False
    return step % every == 0 or is_first_or_last(step, total_steps)


class CostBudget:
    """Time spent on optional outputs, held to a ``share`` of the time since the run started.

    Example:
        >>> now = [0.0]
        >>> budget = CostBudget(share=0.02, clock=lambda: now[0])
        >>> budget.start()
        >>> budget.spend(0.25)  # a picture at step 0
        >>> now[0] = 10.0; budget.allows()  # 0.25 s > 2 % of 10 s
        False
        >>> now[0] = 12.5; budget.allows()
        True
    """

    def __init__(self, share: float = AUTO_SHARE, clock: Callable[[], float] = time.perf_counter):
        self.share = share
        self.clock = clock
        self.spent = 0.0
        self._start: float | None = None

    def start(self) -> None:
        """The run starts now; nothing spent yet."""
        self._start = self.clock()
        self.spent = 0.0

    def spend(self, seconds: float) -> None:
        """Outputs took ``seconds``."""
        self.spent += seconds

    def allows(self) -> bool:
        """Whether the outputs so far stay within the share of the run's time."""
        if self._start is None:
            return True
        return self.spent <= self.share * (self.clock() - self._start)
