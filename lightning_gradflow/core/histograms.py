"""On-device histograms of gradient magnitudes over fixed decade bins.

The main histogram is of ``log10|g|`` over fixed bins (default 1e-12 … 1e4, four per decade),
so a layer whose gradients vanish shows its mass moving left by orders of magnitude and two
steps are always comparable. Exact zeros and non-finite values get their own buckets at the
two ends, so the bucket counts of a layer always add up to its element count:

==============  ===============================================
bucket          holds
==============  ===============================================
``[lo-1, lo)``  exact zeros (``log10 0 = -inf``)
``[lo, hi)``    finite non-zero magnitudes; values below 10^lo fall into the first decade bin
                and values above 10^hi into the last
``[hi, hi+1)``  NaN and ±Inf
==============  ===============================================

Example:
    >>> import torch
    >>> bins = LogBins(low_exp=-2, high_exp=2, per_decade=1)
    >>> log_magnitude_histogram([torch.tensor([0.0, 0.05, 3.0, float("nan")])], bins).tolist()
    [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_gradflow.core.chunking import runs_within
from lightning_gradflow.core.norms import dense_values
from lightning_gradflow.core.validation import check_count, fail

_NONFINITE_LOG = 400.0  # where NaN and Inf go on the log10 axis: above any finite log10
_ZERO_LOG = 401.0  # where exact zeros (log10 0 = -inf) go: a bin of their own above that
_WIDE = (torch.float64, torch.complex128)  # their magnitudes are binned in float64


@dataclass(frozen=True)
class LogBins:
    """Fixed log10 bins for gradient magnitudes.

    Args:
        low_exp: lowest decade edge, as a power of ten (an integer).
        high_exp: highest decade edge, as a power of ten (an integer above ``low_exp``).
        per_decade: bins per decade (a positive integer).

    Raises:
        ValueError: for any other value.
    """

    low_exp: int = -12
    high_exp: int = 4
    per_decade: int = 4

    def __post_init__(self) -> None:
        for name in ("low_exp", "high_exp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                fail(name, value, "an integer")
        if self.high_exp <= self.low_exp:
            fail("high_exp", self.high_exp, f"an integer above low_exp={self.low_exp}")
        check_count("per_decade", self.per_decade)

    @property
    def num_value_bins(self) -> int:
        return (self.high_exp - self.low_exp) * self.per_decade

    @property
    def num_buckets(self) -> int:
        """Value bins plus the zero and non-finite buckets."""
        return self.num_value_bins + 2

    def edges(self) -> list[float]:
        """``num_buckets + 1`` bucket edges on the log10 axis (zero and non-finite at the ends)."""
        step = 1.0 / self.per_decade
        inner = [self.low_exp + i * step for i in range(self.num_value_bins + 1)]
        return [self.low_exp - 1.0, *inner, self.high_exp + 1.0]


CHUNK_ELEMENTS = 2**22
""":func:`log_magnitude_histograms` bins at most this many values at a time (whole layers; a
larger layer is a chunk of its own): the copy, its log10 and the bin indices of one chunk."""


def log_magnitude_histogram(tensors: Sequence[Tensor], bins: LogBins) -> Tensor:
    """Counts of ``log10|x|`` over ``bins`` for all elements of ``tensors``, computed on device.

    Magnitudes are taken in float32, or in float64 where a tensor is float64/complex128 (so
    its tiny and huge values are not flushed to 0 or ``inf``); a complex value's magnitude is
    ``|z|``. Counts are float64, exact to 2^53 elements.

    Args:
        tensors: the gradients of one layer (dense or sparse, one device); the elements a sparse
            tensor does not store count as zeros.
        bins: the bin layout.

    Returns:
        float64 counts of shape ``(bins.num_buckets,)``: zeros, value bins, non-finite.
    """
    device = tensors[0].device if tensors else torch.device("cpu")
    return log_magnitude_histograms([tensors], bins, device)[0]


def log_magnitude_histograms(
    layers: Sequence[Sequence[Tensor]], bins: LogBins, device: torch.device
) -> Tensor:
    """:func:`log_magnitude_histogram` of every layer at once: ``(len(layers), num_buckets)``.

    The layers' values go through one copy, one log10 and one ``scatter_add_`` per chunk of
    :data:`CHUNK_ELEMENTS` (layers of float32 and of float64 magnitudes apart), not a dozen
    operations per layer; nothing is synchronised with the host.

    Example:
        >>> bins = LogBins(low_exp=-2, high_exp=2, per_decade=1)
        >>> layers = [[torch.tensor([0.0, 0.05])], [torch.tensor([3.0, float("inf")])]]
        >>> log_magnitude_histograms(layers, bins, torch.device("cpu")).tolist()
        [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]]
    """
    counts = torch.zeros(len(layers), bins.num_buckets, dtype=torch.float64, device=device)
    with torch.no_grad():
        flats = [[dense_values(t).reshape(-1) for t in layer] for layer in layers]
        stored = [sum(f.numel() for f in layer) for layer in flats]
        wide_rows = {i for i, layer in enumerate(flats) if any(f.dtype in _WIDE for f in layer)}
        for wide in (False, True):
            rows = [i for i, layer in enumerate(flats) if layer and (i in wide_rows) == wide]
            for chunk in runs_within(rows, [stored[i] for i in rows], CHUNK_ELEMENTS):
                _count_chunk(counts, chunk, flats, stored, layers, bins, wide)
    return counts


def _count_chunk(
    counts: Tensor,
    rows: list[int],
    flats: list[list[Tensor]],
    stored: list[int],
    layers: Sequence[Sequence[Tensor]],
    bins: LogBins,
    wide: bool,
) -> None:
    """Fill ``counts[rows]`` from the values of those layers (``stored[row]`` values each)."""
    device = counts.device
    dtype = torch.float64 if wide else torch.float32
    parts = [f.abs() if f.is_complex() else f for row in rows for f in flats[row]]
    # torch.cat always copies: the gradients are untouched by the in-place steps below
    magnitude = torch.cat([f.to(device=device, dtype=dtype) for f in parts]).abs_()
    # log10 in place; NaN and +Inf go to a sentinel above every finite log10 (float64's is
    # 308) and exact zeros (-inf) to one above that, magnitudes below 10^lo to the first value
    # bin; then each value's bin index, offset by its layer's row, counted by scatter_add_ (no
    # host sync, unlike bincount on CUDA). The sentinels are integers, so their bins are exact.
    logs = magnitude.log10_().nan_to_num_(
        nan=_NONFINITE_LOG, posinf=_NONFINITE_LOG, neginf=_ZERO_LOG
    )
    index = logs.clamp_(min=bins.low_exp).sub_(bins.low_exp).mul_(bins.per_decade).long()
    nonfinite = int((_NONFINITE_LOG - bins.low_exp) * bins.per_decade)
    zero = int((_ZERO_LOG - bins.low_exp) * bins.per_decade)
    stride = zero + 1
    row_sizes = [stored[row] for row in rows]
    torch._foreach_add_(index.split(row_sizes), [k * stride for k in range(len(rows))])
    ones = torch.ones((), dtype=torch.float64, device=device).expand(index.numel())
    found = torch.zeros(len(rows) * stride, dtype=torch.float64, device=device)
    found = found.scatter_add_(0, index, ones).view(len(rows), stride)
    value_bins = bins.num_value_bins
    block = torch.empty(len(rows), bins.num_buckets, dtype=torch.float64, device=device)
    block[:, 0] = found[:, zero]
    block[:, 1:-1] = found[:, :value_bins]
    block[:, -2] += found[:, value_bins:nonfinite].sum(dim=1)  # 10^hi and above: the last bin
    block[:, -1] = found[:, nonfinite]
    implicit = [sum(t.numel() for t in layers[row]) - stored[row] for row in rows]
    if any(implicit):  # the elements sparse tensors do not store are zeros
        block[:, 0] += torch.tensor(implicit, dtype=torch.float64, device=device)
    counts[rows] = block


def linear_histogram(
    tensors: Sequence[Tensor], num_bins: int, maxabs: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Counts of raw values over ``num_bins`` equal bins spanning ``[-m, m]``, on device.

    ``m`` is the layer's largest finite magnitude (or ``maxabs`` when given: the maximum over
    all ranks, so that shards counted on different ranks share their bins and can be summed).
    It stays on the device, so no host sync is needed; the caller builds the edges as
    ``linspace(-1, 1) * m`` after its single copy. Non-finite values are left out (they are
    counted by :func:`log_magnitude_histogram`); the elements a sparse tensor does not store
    count as zeros, in the bin that holds 0. Complex values are binned by their magnitude
    ``|z|`` (the quantity their norm is taken of), so they fill only ``[0, m]``.

    Returns:
        ``(counts, m)``: float64 counts of shape ``(num_bins,)`` and a 0-d float64 tensor.
    """
    device = tensors[0].device if tensors else torch.device("cpu")
    flats = [_flat64(t) for t in tensors]
    if maxabs is None:
        maxabs = _largest_finite(flats, device)
    scale = torch.where(maxabs > 0, maxabs, torch.ones_like(maxabs))
    counts = torch.zeros(num_bins, dtype=torch.float64, device=device)
    for flat in flats:  # histc drops NaN and ±Inf: non-finite values are left out
        counts += torch.histc(flat / scale.to(flat.device), num_bins, -1.0, 1.0).to(device)
    implicit_zeros = sum(t.numel() - f.numel() for t, f in zip(tensors, flats, strict=True))
    if implicit_zeros:
        counts[num_bins // 2] += implicit_zeros  # where histc puts 0: bin int(num_bins / 2)
    return counts, maxabs


def max_magnitude(tensors: Sequence[Tensor]) -> Tensor:
    """Largest finite ``|value|`` over ``tensors`` as a 0-d float64 tensor (0 when none)."""
    device = tensors[0].device if tensors else torch.device("cpu")
    return _largest_finite([_flat64(t) for t in tensors], device)


def _flat64(tensor: Tensor) -> Tensor:
    """The stored values as a flat float64 tensor; complex values as their magnitudes."""
    flat = dense_values(tensor).detach().reshape(-1)
    return (flat.abs() if flat.is_complex() else flat).double()


def _largest_finite(flats: Sequence[Tensor], device: torch.device) -> Tensor:
    maxabs = torch.zeros((), dtype=torch.float64, device=device)
    for flat in flats:
        if flat.numel():
            finite = torch.nan_to_num(flat.abs(), nan=0.0, posinf=0.0)
            maxabs = torch.maximum(maxabs, finite.amax().to(device))
    return maxabs
