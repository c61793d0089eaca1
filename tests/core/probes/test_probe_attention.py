"""Recomputed attention against PyTorch's own weights where the defaults hide mistakes (biases
initialised to zero, batched inputs only), and the visible-key count at the masking boundary."""

import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes.attention import MASKED, bind_arguments, recompute_attention

E, H, T = 8, 2, 5


def _mha(**kwargs: object) -> nn.MultiheadAttention:
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(E, H, batch_first=True, **kwargs).eval()
    with torch.no_grad():  # PyTorch initialises these to zero
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha


def _check(
    mha: nn.MultiheadAttention, *args: torch.Tensor, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's per-head weights equal the recomputed probabilities; returns both weights
    (``(samples, heads, queries, keys)``) and the key counts."""
    call = {"need_weights": True, "average_attn_weights": False, **kwargs}
    _, expected = mha(*args, **call)
    probs, keys = recompute_attention(mha, bind_arguments(mha, args, call), max_samples=8)
    torch.testing.assert_close(probs.reshape(expected.shape), expected, atol=1e-6, rtol=1e-5)
    return probs, keys


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"add_bias_kv": True}, {"add_zero_attn": True}],
    ids=["plain", "bias_kv", "zero_attn"],
)
def test_projection_biases_are_applied(kwargs):
    """The query's bias moves every score; the key's bias moves the real keys' scores against
    an appended ``bias_k`` or zero key."""
    torch.manual_seed(0)
    x = torch.randn(2, T, E)
    _check(_mha(**kwargs), x, x, x)


def test_an_unbatched_call_with_a_padding_mask():
    torch.manual_seed(0)
    x = torch.randn(T, E)
    padding = torch.tensor([False, False, False, True, True])
    _, keys = _check(_mha(), x, x, x, key_padding_mask=padding)
    assert keys.expand(1, H, T).flatten().tolist() == [3] * H * T


@pytest.mark.parametrize(
    ("value", "hidden"),
    [(MASKED * 1.001, True), (MASKED, True), (MASKED * 0.999, False)],
)
def test_an_additive_mask_hides_a_key_from_minus_ten_thousand(value, hidden):
    """``exp(-1e4)`` is zero: at or below it the key is not counted among the visible ones."""
    mha = _mha()
    x = torch.randn(1, T, E)
    mask = torch.zeros(T, T)
    mask[:, 0] = value
    _, keys = recompute_attention(
        mha, bind_arguments(mha, (x, x, x), {"attn_mask": mask}), max_samples=8
    )
    assert keys.flatten().tolist() == [T - hidden] * T


def test_is_causal_alone_is_a_causal_mask():
    mha = _mha()
    x = torch.randn(1, T, E)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    expected, keys = _check(mha, x, x, x, attn_mask=mask)
    probs, causal = recompute_attention(mha, {"query": x, "key": x, "is_causal": True}, 8)
    assert torch.equal(causal, keys) and causal.flatten().tolist() == [1, 2, 3, 4, 5]
    assert torch.equal(probs, expected)
