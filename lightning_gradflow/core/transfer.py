"""One device-to-host copy for many named tensors.

Statistics are computed on the device as small named tensors, grouped (one group per step, or
per probed module). :func:`copy_to_host` packs every group into one float64 buffer, optionally
sums it over the process group, copies it to the host **once** and unpacks it.

Example:
    >>> import torch
    >>> [a, b] = copy_to_host([{"x": torch.ones(2)}, {"x": torch.zeros(1), "y": torch.tensor(3)}])
    >>> a["x"].tolist(), b["x"].tolist(), float(b["y"])
    ([1.0, 1.0], [0.0], 3.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_gradflow.core.norms import all_reduce


def copy_to_host(
    groups: Sequence[Mapping[str, Tensor]], all_ranks: bool = False
) -> list[dict[str, np.ndarray]]:
    """Copy every tensor of every group to the host in one transfer, as float64 arrays.

    Args:
        groups: named tensors per group; all are moved to the device of the first one.
        all_ranks: sum the values over the default process group first (a collective: call it
            on every rank with groups of the same layout).

    Returns:
        One dict per group with the same names and shapes, as numpy arrays.
    """
    tensors = [t for group in groups for t in group.values()]
    if not tensors:
        return [{} for _ in groups]
    device = tensors[0].device
    layout = [(i, name, tuple(t.shape)) for i, g in enumerate(groups) for name, t in g.items()]
    buffer = torch.cat([t.reshape(-1).to(device=device, dtype=torch.float64) for t in tensors])
    if all_ranks:
        all_reduce(buffer)
    host = buffer.cpu().numpy()
    values: list[dict[str, np.ndarray]] = [{} for _ in groups]
    offset = 0
    for i, name, shape in layout:
        size = int(np.prod(shape)) if shape else 1
        values[i][name] = host[offset : offset + size].reshape(shape)
        offset += size
    return values
