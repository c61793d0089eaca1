"""Dead ReLU units and saturated sigmoid/tanh activations, measured on the device.

**Dead units.** A unit is a feature of the last dimension (for ``(B, T, D)`` activations every
one of the ``B*T`` rows is a sample), or a channel (dim 1) of a conv feature map with four or
more dimensions. It is *dead* on a probe batch when it outputs zero on every row: no gradient
reaches its weights from that batch. A ReLU that is zero for every input stays dead, since
nothing moves its pre-activation back.

**Saturation.** The share of activations in the flat tails: sigmoid outputs outside
``[tail, 1 - tail]`` or tanh outputs with ``|y| > 1 - tail`` (``tail`` = 0.01 by default,
where the derivative passes less than 1 % resp. 2 % of the gradient).

Both give per-layer sums (indicators, counts), so ranks add up; nothing leaves the device.

Example:
    >>> import torch
    >>> y = torch.relu(torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 0.5]]))
    >>> alive_units(y)
    (tensor([ True, False,  True]), 2)
    >>> unit_activity(y)
    tensor([2, 0, 1])
    >>> saturated_count(torch.tensor([0.001, 0.5, 0.999]), "sigmoid", tail=0.01)
    tensor(2)
"""

from __future__ import annotations

from torch import Tensor


def unit_dim(activations: Tensor) -> int:
    """The dimension holding the units: channels (1) for 4-D+ feature maps, else the last."""
    return 1 if activations.dim() >= 4 else activations.dim() - 1


def _other_dims(activations: Tensor) -> list[int]:
    dim = unit_dim(activations)
    return [d for d in range(activations.dim()) if d != dim]


def alive_units(activations: Tensor) -> tuple[Tensor, int]:
    """Which units are positive on at least one row, and the number of rows.

    Returns:
        ``(alive, rows)``: a bool tensor of shape ``(units,)`` on the activations' device
        (a max-reduction: cheaper than counting), and the number of rows (samples ×
        positions) as a host integer.
    """
    other = _other_dims(activations)
    alive = (activations.amax(dim=other) if other else activations) > 0
    return alive, activations.numel() // max(alive.numel(), 1)


def unit_activity(activations: Tensor) -> Tensor:
    """How many rows each unit is positive on: int64 counts of shape ``(units,)``."""
    other = _other_dims(activations)
    positive = activations > 0
    return positive.sum(dim=other) if other else positive.long()


def saturated_count(activations: Tensor, kind: str, tail: float) -> Tensor:
    """Number of activations in the flat tails of a ``"sigmoid"`` or ``"tanh"`` (0-d, device)."""
    if kind == "sigmoid":
        return ((activations < tail) | (activations > 1.0 - tail)).sum()
    return (activations.abs() > 1.0 - tail).sum()
