"""The probes' numbers against references: PyTorch's own attention weights, numpy's SVD."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, register_probe
from lightning_gradflow.core.probes.activations import saturated_count, unit_counts, unit_dim
from lightning_gradflow.core.probes.attention import (
    bind_arguments,
    entropy_sums,
    recompute_attention,
)
from lightning_gradflow.core.probes.rank import effective_rank

B, T, S, E, H = 3, 5, 6, 8, 2


def _inputs(batch_first: bool, kdim: int = E):
    torch.manual_seed(0)
    q, k = torch.randn(B, T, E), torch.randn(B, S, kdim)
    if not batch_first:
        q, k = q.transpose(0, 1), k.transpose(0, 1)
    return q, k


def _causal(bool_mask: bool):
    mask = torch.ones(T, S, dtype=torch.bool).triu(1)
    return mask if bool_mask else torch.zeros(T, S).masked_fill(mask, -math.inf)


def _padding():
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[0, -2:] = True
    return pad


CASES = {
    "plain": ({}, {}),
    "seq_first": ({"batch_first": False}, {}),
    "bool_mask": ({}, {"attn_mask": _causal(True)}),
    "float_mask": ({}, {"attn_mask": _causal(False)}),
    "per_head_mask": ({}, {"attn_mask": torch.randn(B * H, T, S)}),
    "padding": ({}, {"key_padding_mask": _padding()}),
    "mask_and_padding": ({}, {"attn_mask": _causal(True), "key_padding_mask": _padding()}),
    "bias_kv_zero_attn": ({"add_bias_kv": True, "add_zero_attn": True}, {}),
    "kdim": ({"kdim": 4, "vdim": 4}, {}),
    "no_bias": ({"bias": False}, {"key_padding_mask": _padding()}),
}


@pytest.mark.parametrize("case", CASES)
def test_recomputed_probabilities_match_multihead_attention(case):
    module_kwargs, call_kwargs = CASES[case]
    batch_first = module_kwargs.pop("batch_first", True)
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first, **module_kwargs).eval()
    q, k = _inputs(batch_first, module_kwargs.get("kdim", E))
    call = {"need_weights": True, "average_attn_weights": False, **call_kwargs}
    _, expected = mha(q, k, k, **call)
    arguments = bind_arguments(mha, (q, k, k), call)
    probs, keys = recompute_attention(mha, arguments, max_samples=B)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
    visible = (expected.new_ones(expected.shape) * (expected > 0)).sum(-1)
    if case != "per_head_mask":  # random additive scores hide no key
        assert torch.equal(keys.expand_as(visible).float(), visible)


def test_unbatched_and_is_causal_inputs():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H).eval()
    x = torch.randn(T, E)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    _, expected = mha(x, x, x, attn_mask=mask, average_attn_weights=False)
    probs, keys = recompute_attention(
        mha, {"query": x, "key": x, "is_causal": True, "attn_mask": None}, max_samples=8
    )
    torch.testing.assert_close(probs[0], expected, atol=1e-6, rtol=1e-5)
    assert keys.flatten().tolist() == [1, 2, 3, 4, 5]


def test_sample_cap():
    mha = nn.MultiheadAttention(E, H, batch_first=True)
    q, k = _inputs(True)
    probs, _ = recompute_attention(mha, {"query": q, "key": k}, max_samples=2)
    assert probs.shape == (2, H, T, S)


def test_normalised_entropy_uses_visible_keys_and_skips_short_rows():
    uniform3 = [1 / 3, 1 / 3, 1 / 3, 0.0]
    probs = torch.tensor([[[[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], uniform3, [0.25] * 4]]])
    keys = torch.tensor([1, 2, 3, 4])
    sums, rows = entropy_sums(probs, keys, min_keys=3)
    assert rows.tolist() == [2]  # the rows seeing 1 and 2 keys are left out
    assert sums.item() == pytest.approx(2.0)  # uniform over 3 visible keys and over 4: both 1
    sums, rows = entropy_sums(probs, keys, min_keys=2)
    assert rows.tolist() == [3] and sums.item() == pytest.approx(3.0)


def test_effective_rank_matches_numpy():
    torch.manual_seed(0)
    x = torch.randn(4, 12, 6) * torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.01])
    ranks = effective_rank(x)
    for sample, rank in zip(x.numpy().astype(np.float64), ranks.tolist(), strict=True):
        s = np.linalg.svd(sample, compute_uv=False)
        p = s / s.sum()
        assert rank == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-5)
    assert math.isnan(effective_rank(torch.zeros(1, 4, 4)).item())


def test_dead_units_per_feature_and_per_channel():
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])
    active, rows = unit_counts(x, unit_dim(x, nn.Linear(2, 3)))  # units: last dim, rows B*T
    assert active.tolist() == [2, 0, 1] and rows.tolist() == [4, 4, 4]
    for producer, shape in [(nn.Conv1d(1, 3, 1), (2, 3, 16)), (nn.BatchNorm2d(3), (2, 3, 4, 4))]:
        feature_map = torch.zeros(shape)
        feature_map[(1, 2) + (0,) * (len(shape) - 2)] = 1.0
        active, rows = unit_counts(feature_map, unit_dim(feature_map, producer))
        assert active.tolist() == [0, 0, 1]
        assert rows.tolist() == [32] * 3  # (N, C, L) and (N, C, H, W) alike: channels


def test_non_finite_values_are_neither_dead_nor_alive():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[0.0, nan, 1.0, inf], [nan, nan, 0.0, 0.0], [0.0, nan, 0.0, 0.0]])
    active, rows = unit_counts(x, dim=1)
    assert active.tolist() == [0, 0, 1, 0]  # NaN is not positive, inf is not counted alive
    assert rows.tolist() == [2, 0, 3, 2]  # ... and neither counts as a row


def test_saturation_tails():
    y = torch.tensor([0.005, 0.02, 0.5, 0.985, 0.995])
    assert saturated_count(y, "sigmoid", 0.01).item() == 2
    assert saturated_count(torch.tensor([-0.999, -0.5, 0.98, 0.995]), "tanh", 0.01).item() == 2


@pytest.mark.parametrize(
    ("kind", "value", "saturated"),
    [
        ("sigmoid", 0.0099, True),
        ("sigmoid", 0.01, False),  # [tail, 1 - tail] is not saturated, ends included
        ("sigmoid", 0.0101, False),
        ("sigmoid", 0.9899, False),
        ("sigmoid", 0.99, False),
        ("sigmoid", 0.9901, True),
        ("tanh", 0.9899, False),
        ("tanh", 0.99, False),  # |y| > 1 - tail
        ("tanh", 0.9901, True),
        ("tanh", -0.99, False),
        ("tanh", -0.9901, True),
    ],
)
def test_saturation_tail_boundaries(kind, value, saturated):
    """The README's tails, float32 activations as a layer gives them."""
    assert saturated_count(torch.tensor([value]), kind, 0.01).item() == saturated


def test_sigmoid_and_tanh_have_their_own_tails():
    """0.05 (and tanh's 0.95) are in the tails with tail 0.1, not with 0.01."""
    model = nn.Sequential(nn.Sigmoid(), nn.Tanh())
    probes = ActivationProbes(model, ProbeConfig(sigmoid_tail=0.1, tanh_tail=0.01))
    with probes.attached():
        model[0](torch.full((4, 8), math.log(0.05 / 0.95)))  # sigmoid -> 0.05
        model[1](torch.full((4, 8), math.atanh(0.95)))  # tanh -> 0.95
    assert probes.collect().saturation == {"0": 1.0, "1": 0.0}
    probes = ActivationProbes(model, ProbeConfig(sigmoid_tail=0.01, tanh_tail=0.1))
    with probes.attached():
        model[0](torch.full((4, 8), math.log(0.05 / 0.95)))
        model[1](torch.full((4, 8), math.atanh(0.95)))
    assert probes.collect().saturation == {"0": 0.0, "1": 1.0}


def test_a_module_declaring_an_unknown_kind_is_named():
    class Gate(nn.Module):
        gradflow_probe = "gelu"

    with pytest.raises(
        ValueError, match=r"Gate\.gradflow_probe='gelu' is not allowed: expected one"
    ):
        ActivationProbes(nn.Sequential(Gate()))


@pytest.mark.parametrize(
    ("shape", "heads"),
    [((10, 6), 1), ((2, 10, 6), 1), ((2, 3, 10, 6), 3)],
    ids=["queries_keys", "batch_queries_keys", "batch_heads_queries_keys"],
)
def test_opted_in_probabilities_of_every_layout(shape, heads):
    """An opted-in softmax's output is read as (batch, heads, queries, keys); a 2-D output is
    one sequence (every query row counts, not ``max_samples`` of them), a 3-D one has one
    head. Here 8 of 10 query rows are uniform (entropy 1) and 2 are one-hot (0): mean 0.8."""
    logits = torch.zeros(10, 6)
    logits[8:, 0] = 200.0
    softmax = register_probe(nn.Softmax(dim=-1), "attention")
    probes = ActivationProbes(softmax, ProbeConfig(max_samples=8))
    with probes.attached():
        softmax(logits.expand(shape))
    entropy = probes.collect().attention_entropy[""]
    np.testing.assert_allclose(entropy, [0.8] * heads, rtol=1e-6)
