"""Non-finite activations (a NaN sample, NaN weights after a NaN step) are left out of every
probe's statistics: never counted as dead units or healthy activations, never an error."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import (
    ActivationProbes,
    ProbeConfig,
    ProbeDetectors,
    ProbeStats,
)

NAN = float("nan")


def _probe(model: nn.Module, x: torch.Tensor) -> ProbeStats:
    probes = ActivationProbes(model, ProbeConfig(max_samples=64))
    with probes.attached():
        model(x)
    return probes.collect()


def _relu_layer() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    nn.init.constant_(model[0].bias, 0.0)
    with torch.no_grad():
        model[0].bias[:6] = -100.0  # units 0-5 dead, 6-7 alive
    return model


def test_nan_rows_are_left_out_and_dead_units_still_count():
    model = _relu_layer()
    x = torch.randn(40, 4)
    x[::4] = NAN  # 10 NaN samples
    stats = _probe(model, x)
    assert stats.dead_relu == {"1": 0.75} and stats.relu_rows == {"1": 30}
    assert stats == _probe(model, x[x.isfinite().all(1)])  # as if the NaN rows were not there


def test_nan_everywhere_is_not_dead():
    model = _relu_layer()
    with torch.no_grad():
        model[0].weight.fill_(NAN)  # the weights after a NaN step
    stats = _probe(model, torch.randn(64, 4))
    assert math.isnan(stats.dead_relu["1"]) and stats.relu_rows == {"1": 0}
    assert stats.scalars() == {}
    detectors = ProbeDetectors(ProbeConfig(patience=1))
    assert detectors.update(0, 0, stats) == []


def test_a_unit_is_judged_on_its_finite_values():
    model = _relu_layer()
    with torch.no_grad():
        model[0].weight[0] = NAN  # unit 0 (dead) becomes NaN everywhere; 1-5 stay dead
    stats = _probe(model, torch.randn(64, 4))
    assert stats.dead_relu == {"1": 5 / 7} and stats.relu_rows == {"1": 64}


def test_saturation_is_a_share_of_the_finite_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid())
    nn.init.normal_(model[0].weight, std=10.0)
    x = torch.randn(32, 4)
    x[:8] = NAN
    stats = _probe(model, x)
    expected = _probe(model, x[8:]).saturation["1"]
    assert stats.saturation == {"1": expected} and 0.5 < expected < 1.0
    assert math.isnan(_probe(model, torch.full((4, 4), NAN)).saturation["1"])


def test_attention_and_rank_skip_a_nan_sequence():
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    x = torch.randn(6, 5, 16)
    x[2, 3] = NAN  # spreads over sequence 2 only
    stats = _probe(model, x)  # the SVD of a NaN matrix raised
    clean = _probe(model, x[[0, 1, 3, 4, 5]])
    assert stats.block_tokens == clean.block_tokens == {"": 5}
    assert stats.effective_rank[""] == pytest.approx(clean.effective_rank[""], rel=1e-6)
    entropy, expected = stats.attention_entropy["self_attn"], clean.attention_entropy["self_attn"]
    assert np.isfinite(entropy).all()
    np.testing.assert_allclose(entropy, expected, rtol=1e-6)
    nothing = _probe(model, torch.full((2, 5, 16), NAN))
    assert math.isnan(nothing.effective_rank[""]) and nothing.block_tokens == {"": 0}
    assert np.isnan(nothing.attention_entropy["self_attn"]).all() and nothing.scalars() == {}
