"""Attention entropy per head, recomputed from an ``nn.MultiheadAttention``'s inputs.

Transformer layers call their attention with ``need_weights=False`` (and the weights it can
return have dropout applied), so the probe recomputes the probabilities in a forward hook from
the module's inputs and its ``in_proj`` weights: ``softmax(q kᵀ / sqrt(head_dim) + masks)``,
under ``torch.no_grad`` and without touching the random number generator, so the model's
outputs and gradients are exactly those of an unprobed step. ``batch_first`` both ways,
unbatched inputs, ``attn_mask`` (bool or additive, 2-D or per head), ``key_padding_mask``,
``is_causal``, ``bias_k`` and ``add_zero_attn`` are handled; at most ``max_samples`` sequences
are used.

For each query row the entropy is normalised by the log of the number of keys the row can see
(masked keys, i.e. ``True`` or additive ≤ -1e4, do not count), so 1 is uniform attention and
0 all weight on one key. Rows that see fewer than ``min_keys`` keys are left out: the first
rows under a causal mask, and sequences of 1-3 tokens, where a sharp distribution is normal. So
are rows with non-finite probabilities (NaN inputs after a NaN step).

Example:
    >>> import torch
    >>> probs = torch.tensor([[[[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]]])
    >>> sums, rows = entropy_sums(probs, torch.tensor(4), min_keys=4)
    >>> sums.tolist(), rows.tolist()
    ([1.0], [2])
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED = -1e4
"""An additive mask value at or below this hides the key (``exp(-1e4)`` is zero)."""


def bind_arguments(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a ``module`` call by parameter name (defaults left out)."""
    return inspect.signature(module.forward).bind(*args, **kwargs).arguments


def _additive(mask: Tensor | None) -> Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill(mask, -math.inf)
    return mask.float()


def recompute_attention(
    module: nn.MultiheadAttention, arguments: dict[str, Any], max_samples: int
) -> tuple[Tensor, Tensor] | None:
    """Attention probabilities of an ``nn.MultiheadAttention`` call, from its arguments.

    Args:
        module: the attention module.
        arguments: its call's arguments by name (see :func:`bind_arguments`).
        max_samples: at most this many sequences are used.

    Returns:
        ``(probs, keys)``: float32 probabilities ``(samples, heads, queries, keys)`` and the
        number of visible keys per query row (broadcastable to ``(samples, heads, queries)``),
        or ``None`` for nested-tensor inputs (eval-mode fast path).
    """
    query, key = arguments["query"], arguments["key"]
    if query.is_nested or key.is_nested:
        return None
    padding = arguments.get("key_padding_mask")
    attn_mask = arguments.get("attn_mask")
    if query.dim() == 2:  # unbatched
        query, key = query.unsqueeze(0), key.unsqueeze(0)
        padding = None if padding is None else padding.unsqueeze(0)
    elif not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    samples = min(max_samples, query.shape[0])
    query, key = query[:samples], key[:samples]
    embed, heads = module.embed_dim, module.num_heads
    head_dim = embed // heads
    if module._qkv_same_embed_dim:
        w_q, w_k = module.in_proj_weight[:embed], module.in_proj_weight[embed : 2 * embed]
    else:
        w_q, w_k = module.q_proj_weight, module.k_proj_weight
    bias = module.in_proj_bias
    b_q, b_k = (None, None) if bias is None else (bias[:embed], bias[embed : 2 * embed])
    q = F.linear(query, w_q, b_q)
    k = F.linear(key, w_k, b_k)
    num_queries, num_keys = q.shape[1], k.shape[1]
    if module.bias_k is not None:
        k = torch.cat([k, module.bias_k.expand(samples, 1, embed).to(k.dtype)], dim=1)
    if module.add_zero_attn:
        k = torch.cat([k, k.new_zeros(samples, 1, embed)], dim=1)
    extra = k.shape[1] - num_keys
    q = q.reshape(samples, num_queries, heads, head_dim).transpose(1, 2).float()
    k = k.reshape(samples, num_keys + extra, heads, head_dim).transpose(1, 2).float()
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)
    if arguments.get("is_causal", False):  # the hint wins, as in PyTorch's SDPA path
        attn_mask = torch.ones(num_queries, num_keys, dtype=torch.bool, device=q.device).triu(1)
    mask = _additive(attn_mask)
    if mask is not None and mask.dim() == 2:
        mask = mask.reshape(1, 1, num_queries, num_keys)
    elif mask is not None:  # (batch * heads, queries, keys), batch-major
        mask = mask.reshape(-1, heads, num_queries, num_keys)[:samples]
    padding = _additive(padding)
    if padding is not None:
        padding = padding[:samples].reshape(samples, 1, 1, num_keys)
        mask = padding if mask is None else mask + padding
    if mask is None:
        return scores.softmax(-1), torch.full((), num_keys + extra, device=q.device)
    mask = F.pad(mask, (0, extra))
    return (scores + mask).softmax(-1), (mask > MASKED).sum(-1)


def entropy_sums(probs: Tensor, keys: Tensor, min_keys: int) -> tuple[Tensor, Tensor]:
    """Per-head sum of normalised entropies over usable query rows, and their number.

    Args:
        probs: ``(samples, heads, queries, keys)`` attention probabilities.
        keys: visible keys per row, broadcastable to ``(samples, heads, queries)``.
        min_keys: rows that see fewer keys are left out.

    Returns:
        ``(sums, rows)``, both of shape ``(heads,)`` and on the device.
    """
    normalised, usable = normalised_entropy(probs, keys, min_keys)
    return normalised.sum(dim=(0, 2)), usable.sum(dim=(0, 2))


def normalised_entropy(probs: Tensor, keys: Tensor, min_keys: int) -> tuple[Tensor, Tensor]:
    """Entropy / log(visible keys) per row, zero where unusable, and the usable-row mask.

    A row is usable if it sees at least ``min_keys`` keys and its probabilities are finite.
    """
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    keys = keys.expand_as(entropy)
    normalised = entropy / keys.clamp(min=2).to(entropy.dtype).log()
    usable = (keys >= min_keys) & normalised.isfinite()
    return torch.where(usable, normalised, 0.0), usable


def probabilities_from_output(output: Tensor, max_samples: int) -> Tensor:
    """An opted-in module's output read as ``(samples, heads, queries, keys)`` probabilities."""
    if output.dim() == 2:
        output = output.unsqueeze(0)
    probs = output.unsqueeze(1) if output.dim() == 3 else output
    return probs[:max_samples].float()
