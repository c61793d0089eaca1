"""Every model: shapes, backward, parameter counts, seeded determinism, argument validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from recipes.volatility.models import (
    ACTIVATIONS,
    INITS,
    LSTM,
    MLP,
    NORMS,
    ResidualMLP,
    Transformer,
    VanillaRNN,
)

F, W = 3, 22
CONFIGS: list[tuple[type[nn.Module], dict[str, Any]]] = [
    (MLP, {"input_dim": F, "window": W, "depth": 3, "width": 16}),
    (MLP, {"input_dim": F, "window": W, "depth": 2, "width": 8, "norm": "batch", "init": "he"}),
    (ResidualMLP, {"input_dim": F, "window": W, "depth": 3, "width": 16, "norm": "layer"}),
    (Transformer, {"input_dim": F, "window": W, "depth": 2, "d_model": 16, "heads": 2}),
    (
        Transformer,
        {
            "input_dim": F,
            "window": W,
            "d_model": 8,
            "heads": 2,
            "norm_position": "post",
            "positional": "learned",
            "pool": "mean",
        },
    ),
    (LSTM, {"input_dim": F, "hidden": 16, "layers": 2}),
    (VanillaRNN, {"input_dim": F, "hidden": 16, "recurrent_spectral_radius": 0.9}),
    (VanillaRNN, {"input_dim": F, "hidden": 16, "recurrent_init": "orthogonal"}),
    (LSTM, {"input_dim": F, "hidden": 16, "forget_bias": 1.0}),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGS)]


@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS, ids=IDS)
def test_forward_backward(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = cls(**kwargs)
    x = torch.randn(5, W, F)
    out = model(x)
    assert out.shape == (5,)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    n_params = sum(p.numel() for p in model.parameters())
    assert 50 < n_params < 50_000


@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS, ids=IDS)
def test_seeded_determinism(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    x = torch.randn(4, W, F)
    outputs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        model = cls(**kwargs).eval()
        outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], outputs[2])


def test_mlp_parameter_count_and_named_layers() -> None:
    model = MLP(F, W, depth=3, width=10, activation="sigmoid", norm="layer")
    expected = (F * W * 10 + 10) + 2 * (10 * 10 + 10) + 3 * 20 + (10 + 1)
    assert sum(p.numel() for p in model.parameters()) == expected
    names = [n for n, _ in model.layers.named_children()]
    assert names[:4] == ["flatten", "linear1", "norm1", "act1"] and names[-1] == "head"
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3


def test_resnet_parameter_count() -> None:
    model = ResidualMLP(F, W, depth=2, width=10)
    expected = (F * W * 10 + 10) + 2 * 2 * (10 * 10 + 10) + 11
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("norm", NORMS)
def test_every_dense_knob_builds(activation: str, init: str, norm: str) -> None:
    for cls in (MLP, ResidualMLP):
        model = cls(F, W, depth=2, width=8, activation=activation, init=init, norm=norm)
        assert model(torch.randn(2, W, F)).shape == (2,)


def test_normal_init_uses_std() -> None:
    torch.manual_seed(0)
    model = MLP(F, W, depth=1, width=256, init="normal", init_std=0.5)
    assert model.layers.linear1.weight.std().item() == pytest.approx(0.5, rel=0.05)
    assert model.layers.linear1.bias.abs().max() == 0


@pytest.mark.parametrize("radius", [0.5, 1.5])
def test_rnn_spectral_radius(radius: float) -> None:
    model = VanillaRNN(F, hidden=24, layers=2, recurrent_spectral_radius=radius)
    for k in range(2):
        weight = getattr(model.rnn, f"weight_hh_l{k}")
        assert torch.linalg.eigvals(weight).abs().max().item() == pytest.approx(radius, rel=1e-4)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (MLP, {"input_dim": F, "window": W, "activation": "swish"}, "activation='swish'"),
        (MLP, {"input_dim": F, "window": W, "init": "orthogonal"}, "init='orthogonal'"),
        (ResidualMLP, {"input_dim": F, "window": W, "norm": "group"}, "norm='group'"),
        (ResidualMLP, {"input_dim": F, "window": W, "depth": 0}, "depth=0"),
        (MLP, {"input_dim": F, "window": W, "init_std": 0.0}, "init_std=0.0"),
        (Transformer, {"input_dim": F, "window": W, "d_model": 10, "heads": 4}, "d_model=10"),
        (Transformer, {"input_dim": F, "window": W, "norm_position": "mid"}, "norm_position"),
        (Transformer, {"input_dim": F, "window": W, "positional": "rope"}, "positional='rope'"),
        (Transformer, {"input_dim": F, "window": W, "pool": "max"}, "pool='max'"),
        (Transformer, {"input_dim": F, "window": W, "dropout": 1.0}, "dropout=1.0"),
        (LSTM, {"input_dim": F, "hidden": 0}, "hidden=0"),
        (VanillaRNN, {"input_dim": F, "nonlinearity": "sigmoid"}, "nonlinearity='sigmoid'"),
        (
            VanillaRNN,
            {"input_dim": F, "recurrent_spectral_radius": -1.0},
            "recurrent_spectral_radius",
        ),
        (VanillaRNN, {"input_dim": F, "recurrent_init": "identity"}, "recurrent_init='identity'"),
        (LSTM, {"input_dim": F, "forget_bias": float("nan")}, "forget_bias=nan"),
        (LSTM, {"input_dim": F, "forget_bias": "1"}, "forget_bias='1'"),
    ],
)
def test_invalid_arguments(cls: type[nn.Module], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_transformer_rejects_longer_input() -> None:
    model = Transformer(input_dim=F, window=W, d_model=8, heads=2)
    with pytest.raises(ValueError, match="at most 22"):
        model(torch.zeros(1, W + 1, F))
