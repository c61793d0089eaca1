"""Batched per-layer norms: one fused kernel family per device, no host synchronisation.

Each tensor's norm is computed in float32 (half-precision gradients are upcast, so they do not
overflow at 65504), as ``clip_grad_norm_`` does: a tensor norm above ~1.8e19 overflows to ``inf``
there too. Per-layer sums of squares are then taken in float64. A NaN or Inf anywhere in a tensor
makes its layer's norm non-finite, which is how non-finite gradients are detected at no extra
cost.

Example:
    >>> import torch
    >>> sq = squared_norms_by_layer([torch.ones(4), torch.ones(9)], [0, 0], num_layers=1)
    >>> float(sq[0].sqrt())
    3.605551275463989
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor


def dense_values(tensor: Tensor) -> Tensor:
    """The tensor itself, or the stored values of a sparse tensor (duplicates summed)."""
    if tensor.layout == torch.sparse_coo:
        return tensor.coalesce().values()
    if tensor.is_sparse_csr or tensor.layout in (torch.sparse_csc, torch.sparse_bsr):
        return tensor.values()
    return tensor


def squared_norms_by_layer(
    tensors: Sequence[Tensor],
    layer_index: Sequence[int],
    num_layers: int,
    device: torch.device | None = None,
    index_cache: dict[tuple, Tensor] | None = None,
) -> Tensor:
    """Sum of squared L2 norms of ``tensors`` per layer, on ``device``, in float64.

    Args:
        tensors: gradients, parameters or updates (dense or sparse, any float dtype/device).
        layer_index: the layer each tensor belongs to (same length as ``tensors``).
        num_layers: size of the result; layers with no tensor get 0.
        device: where the result lives (default: the first tensor's device, else CPU).
        index_cache: a dict kept by the caller between steps, so the layer index is copied to
            the device once rather than every step.

    Returns:
        A float64 tensor of shape ``(num_layers,)``.

    Example:
        >>> import torch
        >>> squared_norms_by_layer([torch.tensor([3.0, 4.0])], [1], num_layers=2).tolist()
        [0.0, 25.0]
    """
    if len(tensors) != len(layer_index):
        raise ValueError(f"{len(tensors)} tensors but {len(layer_index)} layer indices")
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    by_device: dict[torch.device, tuple[list[Tensor], list[int]]] = {}
    strided = torch.strided
    for tensor, index in zip(tensors, layer_index, strict=True):
        values = tensor if tensor.layout == strided else dense_values(tensor)
        group = by_device.setdefault(values.device, ([], []))
        group[0].append(values)
        group[1].append(index)
    out: Tensor | None = None
    for tensor_device, (values, indices) in by_device.items():
        upcast = any(v.dtype != torch.float32 for v in values)  # fp16/bf16/fp64 -> float32 norms
        norms = (
            torch._foreach_norm(values, 2, dtype=torch.float32)
            if upcast
            else (torch._foreach_norm(values))
        )
        key = (tensor_device, tuple(indices))
        index = None if index_cache is None else index_cache.get(key)
        if index is None:
            index = torch.tensor(indices, device=tensor_device)
            if index_cache is not None:
                index_cache[key] = index
        squares = torch.stack(norms).double().square_()
        partial = torch.zeros(num_layers, dtype=torch.float64, device=tensor_device)
        partial = partial.index_add_(0, index, squares).to(device, non_blocking=True)
        out = partial if out is None else out + partial
    if out is None:
        out = torch.zeros(num_layers, dtype=torch.float64, device=device)
    return out


def all_reduce(
    tensor: Tensor, op: Literal["sum", "max"] = "sum", group: object | None = None
) -> Tensor:
    """Sum (or take the elementwise maximum of) ``tensor`` in place over a process group; a
    no-op without one.

    Used for sharded parameters (FSDP): each rank holds a shard of every gradient, so the squared
    norm of a layer is the sum of the ranks' squared shard norms.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        reduce_op = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        dist.all_reduce(tensor, op=reduce_op, group=group)
    return tensor
