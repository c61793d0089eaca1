"""Items in consecutive runs whose sizes add up to at most a limit: batched work in bounded memory.

Example:
    >>> runs_within([0, 1, 2, 3], [5, 3, 9, 1], limit=8)
    [[0, 1], [2], [3]]
"""

from __future__ import annotations

from collections.abc import Sequence


def runs_within(items: Sequence[int], sizes: Sequence[int], limit: int) -> list[list[int]]:
    """``items`` in order, in runs whose ``sizes`` sum to at most ``limit``; an item larger
    than ``limit`` is a run of its own.

    Example:
        >>> runs_within([7, 8], [10, 1], limit=4)
        [[7], [8]]
    """
    runs: list[list[int]] = []
    size = limit
    for item, item_size in zip(items, sizes, strict=True):
        if size + item_size > limit:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += item_size
    return runs
