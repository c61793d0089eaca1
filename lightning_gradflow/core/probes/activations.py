"""Dead ReLU units and saturated sigmoid/tanh activations, measured on the device.

**Dead units.** A unit is a feature of the last dimension (for ``(B, T, D)`` activations every
one of the ``B*T`` rows is a sample), or a channel (dim 1) when the layer that ran just before
the ReLU works on channel-first feature maps (:data:`CHANNEL_FIRST`: convolutions, batch,
instance and group norm, pooling; dropout and identity layers in between are looked through),
whatever the number of dimensions: ``(N, C, L)`` and ``(N, C, H, W)`` alike. It is *dead* on
a probe batch when it outputs zero on every row: no gradient reaches its weights from that
batch. A ReLU that is zero for every input stays dead, since nothing moves its pre-activation
back. Non-finite values (after a NaN step) are neither zero nor alive: they are left out, and a
unit without a finite value is not judged.

**Saturation.** The share of finite activations in the flat tails: sigmoid outputs outside
``[tail, 1 - tail]`` or tanh outputs with ``|y| > 1 - tail`` (``tail`` = 0.01 by default,
where the derivative passes less than 1 % resp. 2 % of the gradient).

Both give counts, so calls and ranks add up; nothing leaves the device.

Example:
    >>> import torch
    >>> y = torch.relu(torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 0.5], [float("nan")] * 3]))
    >>> unit_counts(y, dim=1)
    (tensor([2, 0, 1]), tensor([2, 2, 2]))
    >>> saturated_count(torch.tensor([0.001, 0.5, 0.999]), "sigmoid", tail=0.01)
    tensor(2)
"""

from __future__ import annotations

from torch import Tensor, nn

CHANNEL_FIRST: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
)
"""Layers whose output is ``(N, C, ...)``: a ReLU right after one has its units on dim 1."""

PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
"""Layers that keep their input's layout: the layer before them decides."""


def unit_dim(activations: Tensor, producer: nn.Module | None) -> int:
    """The dimension holding the units: 1 after a :data:`CHANNEL_FIRST` layer, else the last.

    Args:
        activations: the ReLU's output.
        producer: the module that ran just before the ReLU (``None`` if none did).
    """
    channel_first = isinstance(producer, CHANNEL_FIRST)
    if channel_first and activations.dim() >= 2:  # pragma: no mutate (2-D: dim 1 is the last)
        return 1
    return activations.dim() - 1


def unit_counts(activations: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Per unit (along ``dim``), on how many rows it is positive and on how many it is finite.

    Returns:
        ``(active, finite)``: int64 counts of shape ``(units,)`` on the activations' device.
    """
    other = [d for d in range(activations.dim()) if d != dim]
    finite = activations.isfinite()
    active = (activations > 0).logical_and_(finite)
    if not other:
        return active.long(), finite.long()
    return active.sum(dim=other), finite.sum(dim=other)


def saturated_count(activations: Tensor, kind: str, tail: float) -> Tensor:
    """Number of activations in the flat tails of a ``"sigmoid"`` or ``"tanh"`` (0-d, device).

    NaN is in neither tail.
    """
    if kind == "sigmoid":
        return ((activations < tail) | (activations > 1.0 - tail)).sum()
    return (activations.abs() > 1.0 - tail).sum()
