"""Batched per-layer norms: one fused kernel family per device, no host synchronisation.

Tensors are grouped by device and dtype, one ``_foreach_norm`` per group. Each tensor's norm is
computed in float32 for float16/bfloat16/float32 (half precision is upcast, so it does not
overflow at 65504), as ``clip_grad_norm_`` does: a tensor norm above ~1.8e19 overflows to ``inf``
there too. Float64 tensors keep float64 norms (whose squares overflow above ~1.3e154, as
``clip_grad_norm_``'s do). A complex tensor's norm is that of its magnitudes ``|z|``, in float32
for complex32/complex64 and float64 for complex128. Per-layer sums of squares are then taken in
float64. A NaN or Inf anywhere in a tensor makes its layer's norm non-finite, which is how
non-finite gradients are detected at no extra cost.

Example:
    >>> import torch
    >>> sq = squared_norms_by_layer([torch.ones(4), torch.ones(9)], [0, 0], num_layers=1)
    >>> float(sq[0].sqrt())
    3.605551275463989
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Literal

import torch
from torch import Tensor

# the dtype each tensor's norm is computed in, where not its own (a complex norm is real)
_NORM_DTYPE = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.complex32: torch.complex64,
}

_COMPRESSED = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


def dense_values(tensor: Tensor) -> Tensor:
    """The tensor itself, or the stored values of a sparse tensor (duplicates summed)."""
    if tensor.layout == torch.sparse_coo:
        return tensor.coalesce().values()
    if tensor.layout in _COMPRESSED:
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
        tensors: gradients, parameters or updates (dense or sparse, any floating or complex
            dtype, any device).
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
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[int]]] = {}
    strided = torch.strided
    for tensor, index in zip(tensors, layer_index, strict=True):
        values = tensor if tensor.layout == strided else dense_values(tensor)
        group = groups.setdefault((values.device, values.dtype), ([], []))
        group[0].append(values)
        group[1].append(index)
    out: Tensor | None = None
    for (tensor_device, dtype), (values, indices) in groups.items():
        norms = torch._foreach_norm(values, 2, dtype=_NORM_DTYPE.get(dtype))
        key = (tensor_device, dtype, tuple(indices))
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


class LayerNormPlan:
    """:func:`squared_norms_by_layer` for a fixed layout of dense tensors, worked out once.

    The grouping by device and dtype and the layer index on each device are settled at
    construction, so a call is one ``_foreach_norm``, ``stack`` and ``index_add_`` per group,
    with no Python loop over the tensors. Call it with tensors of the same devices and dtypes
    in the same order (gradients keep their parameter's); a sparse one raises
    ``NotImplementedError`` (use :func:`squared_norms_by_layer` then).

    Args:
        tensors: tensors of the layout (only their device and dtype are read).
        layer_index: the layer each tensor belongs to.
        num_layers: size of the result.
        device: where the result lives.

    Example:
        >>> import torch
        >>> plan = LayerNormPlan([torch.ones(4), torch.ones(9)], [0, 1], 2, torch.device("cpu"))
        >>> plan([torch.ones(4), torch.full((9,), 2.0)]).tolist()
        [4.0, 36.0]
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        layer_index: Sequence[int],
        num_layers: int,
        device: torch.device,
    ) -> None:
        if len(tensors) != len(layer_index):
            raise ValueError(f"{len(tensors)} tensors but {len(layer_index)} layer indices")
        positions: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, tensor in enumerate(tensors):
            positions.setdefault((tensor.device, tensor.dtype), []).append(i)
        self.num_layers = num_layers
        self.device = device
        self._groups: list[tuple[Callable[[Sequence[Tensor]], Sequence[Tensor]], Tensor, Any]] = []
        for (tensor_device, dtype), where in positions.items():
            select = _identity if len(where) == len(tensors) else _picker(where)
            index = torch.tensor([layer_index[i] for i in where], device=tensor_device)
            self._groups.append((select, index, _NORM_DTYPE.get(dtype)))

    def __call__(self, tensors: Sequence[Tensor]) -> Tensor:
        """Per-layer sums of squared norms of ``tensors`` (float64, ``(num_layers,)``)."""
        out: Tensor | None = None
        for select, index, norm_dtype in self._groups:
            norms = torch._foreach_norm(select(tensors), 2, dtype=norm_dtype)
            squares = torch.stack(norms).double().square_()
            partial = torch.zeros(self.num_layers, dtype=torch.float64, device=index.device)
            partial = partial.index_add_(0, index, squares).to(self.device, non_blocking=True)
            out = partial if out is None else out + partial
        if out is None:
            out = torch.zeros(self.num_layers, dtype=torch.float64, device=self.device)
        return out


def _identity(tensors: Sequence[Tensor]) -> Sequence[Tensor]:
    return tensors


def _picker(where: list[int]) -> Callable[[Sequence[Tensor]], Sequence[Tensor]]:
    get = itemgetter(*where)
    return (lambda tensors: (get(tensors),)) if len(where) == 1 else get


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
