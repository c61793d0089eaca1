"""Which part of a (possibly sharded) tensor this rank adds to a sum taken over all ranks.

Per-layer norms and histogram counts of sharded parameters are sums over ranks: each rank
computes them on what it holds and one all-reduce adds them up. That is exact only if every
element is counted once, so each rank contributes:

- a ``DTensor`` (FSDP2 ``fully_shard``, tensor parallel): its local shard, but only from the
  rank at coordinate 0 of every mesh dimension the tensor is replicated over;
- a plain tensor in a model that is sharded the FSDP1 way (``sharded=True``: each rank holds
  a flat slice): the whole of it;
- a plain tensor beside DTensors (a parameter FSDP2 does not manage, so a replica): all of it
  on global rank 0, nothing elsewhere.

Gradients in ``Partial`` placement (a sum still pending) are not expected after backward and
are treated as replicated.

Example:
    >>> import torch
    >>> t = torch.ones(3)
    >>> rank_contribution(t, plain_is_shard=True) is t
    True
    >>> has_dtensor([t])
    False
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed, or older than 2.4
    try:
        from torch.distributed._tensor import DTensor
    except ImportError:
        DTensor = None  # type: ignore[assignment,misc]


def has_dtensor(tensors: Iterable[Tensor]) -> bool:
    """Whether any of ``tensors`` is a ``DTensor``."""
    return DTensor is not None and any(isinstance(t, DTensor) for t in tensors)


def rank_contribution(tensor: Tensor, plain_is_shard: bool) -> Tensor:
    """The local data this rank adds to a cross-rank sum (possibly empty), never a DTensor.

    Args:
        tensor: a gradient or parameter, plain or ``DTensor``.
        plain_is_shard: plain tensors are shards (FSDP1); otherwise they are replicas and only
            global rank 0 contributes them.
    """
    if DTensor is not None and isinstance(tensor, DTensor):
        local = tensor.to_local()
        coordinate = tensor.device_mesh.get_coordinate() or []
        replica = any(
            not placement.is_shard() and coordinate[dim] != 0
            for dim, placement in enumerate(tensor.placements)
        )
        return _nothing_like(local) if replica else local
    if plain_is_shard or _global_rank() == 0:
        return tensor
    return _nothing_like(tensor)


def _nothing_like(tensor: Tensor) -> Tensor:
    return torch.empty(0, dtype=tensor.dtype, device=tensor.device)


def _global_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
