"""Effective rank of the token representations after each transformer block.

Rank collapse (Dong et al., 2021) is the tokens of a sequence converging to one shared vector
with depth, ``X → 1 xᵀ``: attention averages tokens, and without residual connections nothing
restores their differences. The probe measures, per sample, the entropy effective rank (Roy &
Vetterli, 2007) of the ``(tokens, d_model)`` matrix ``X``::

    p_i = σ_i / Σ_j σ_j   (singular values of X)      erank = exp(-Σ_i p_i log p_i)

1 for a rank-one matrix, ``min(tokens, d_model)`` for a flat spectrum, and averaged over at
most ``max_samples`` sequences. ``X`` is **not centred**: collapse is the shared component
swamping the token-specific rest, which the uncentred rank sees going to 1, whereas centring
would remove the shared vector and leave a near-zero residual whose normalised spectrum is
noise. Padded tokens (``src_key_padding_mask``/``tgt_key_padding_mask``) are zeroed, which
removes them from the spectrum.

The forward hook only keeps a float32 copy of the capped sample (no host sync); the singular
values are computed at collection time, where the host synchronises anyway.

Example:
    >>> import torch
    >>> shared = torch.randn(1, 1, 16).expand(1, 10, 16)
    >>> round(effective_rank(shared).item(), 3)
    1.0
    >>> round(effective_rank(torch.eye(8).unsqueeze(0)).item(), 3)
    8.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

_PADDING_ARGUMENTS = ("src_key_padding_mask", "tgt_key_padding_mask", "key_padding_mask")


def _batch_first(module: nn.Module) -> bool:
    attention = getattr(module, "self_attn", None)
    if isinstance(attention, nn.MultiheadAttention):
        return attention.batch_first
    return bool(getattr(module, "batch_first", True))


def block_tokens(
    module: nn.Module, arguments: dict[str, Any], output: Tensor, max_samples: int
) -> Tensor | None:
    """A float32 copy of at most ``max_samples`` sequences of a block's output, pads zeroed.

    Args:
        module: the block (its ``batch_first`` or its ``self_attn.batch_first`` is honoured).
        arguments: the block call's arguments by name (for a key padding mask).
        output: the block's output tensor.
        max_samples: sequences to keep.

    Returns:
        ``(samples, tokens, d_model)``, or ``None`` for nested tensors.
    """
    if output.is_nested:
        return None
    tokens = output.unsqueeze(0) if output.dim() == 2 else output
    if output.dim() == 3 and not _batch_first(module):
        tokens = tokens.transpose(0, 1)
    tokens = tokens[:max_samples].detach().to(torch.float32, copy=True)
    padding = next((arguments[n] for n in _PADDING_ARGUMENTS if arguments.get(n) is not None), None)
    if padding is not None:
        padding = padding.unsqueeze(0) if padding.dim() == 1 else padding
        hidden = padding if padding.dtype == torch.bool else padding < 0
        tokens.masked_fill_(hidden[: tokens.shape[0]].unsqueeze(-1), 0.0)
    return tokens


def effective_rank(tokens: Tensor) -> Tensor:
    """Entropy effective rank of each ``(tokens, d_model)`` matrix; ``NaN`` for an all-zero one
    and for one with a non-finite value (which the SVD would reject).

    Args:
        tokens: ``(samples, tokens, d_model)``.

    Returns:
        ``(samples,)`` on the input's device.
    """
    finite = tokens.isfinite().all(dim=(-2, -1), keepdim=True)
    singular = torch.linalg.svdvals(torch.where(finite, tokens, 0.0))
    total = singular.sum(-1, keepdim=True)
    p = singular / total
    rank = torch.exp(-torch.special.xlogy(p, p).sum(-1))
    return torch.where(total.squeeze(-1) > 0, rank, torch.nan)
