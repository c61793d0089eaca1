"""The seeds' picture: a deep sigmoid MLP's first layer starves; residual blocks keep it fed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.models import MLP, ResidualMLP


def first_last_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Gradient norm of the last Linear weight over that of the first, after one MSE backward."""
    nn.functional.mse_loss(model(x), y).backward()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return (linears[-1].weight.grad.norm() / linears[0].weight.grad.norm()).item()


@pytest.fixture(scope="module")
def batches(sp500: VolatilityDataModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    loader = sp500.dataloader("train", shuffle=True)
    batches = iter(loader)
    return [next(batches) for _ in range(3)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigmoid_mlp_vanishes_resnet_does_not(batches: list, seed: int) -> None:
    x, y = batches[seed]
    torch.manual_seed(seed)
    plain = first_last_ratio(MLP(3, 22, depth=20, width=64, activation="sigmoid"), x, y)
    torch.manual_seed(seed)
    plain_relu = first_last_ratio(MLP(3, 22, depth=20, width=64, activation="relu"), x, y)
    torch.manual_seed(seed)
    residual = first_last_ratio(ResidualMLP(3, 22, depth=20, width=64, activation="relu"), x, y)
    assert plain >= 1e3
    assert plain_relu >= 1e3  # the same activation as the residual net: the skips make the change
    assert 0.1 <= residual <= 10
