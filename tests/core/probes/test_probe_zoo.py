"""A zoo of short real training runs: each pathology fires its own alert and nothing else;
healthy runs, including ones that look unusual, stay silent."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.probes import ActivationProbes, ProbeDetectors, ProbeStats

Batch = tuple[torch.Tensor, torch.Tensor]


def _train(
    model: nn.Module,
    batch: Callable[[], Batch],
    loss_fn: Callable = nn.functional.mse_loss,
    steps: int = 12,
    lr: float = 1e-3,
) -> tuple[list[Alert], ProbeStats]:
    """Adam for ``steps`` steps, probing every other step; all alerts and the last stats."""
    probes, detectors = ActivationProbes(model), ProbeDetectors()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    alerts, stats = [], ProbeStats()
    for step in range(steps):
        x, y = batch()
        probe = step % 2 == 0
        if probe:
            probes.attach()
        out = model(x)
        probes.detach()
        loss = loss_fn(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if probe:
            stats = probes.collect()
            alerts += detectors.update(step, 0, stats)
    return alerts, stats


def _kinds(alerts: list[Alert]) -> set[str]:
    return {a.kind for a in alerts}


# --- MLPs -----------------------------------------------------------------------------------


def _mlp(act: type[nn.Module], init: Callable[[nn.Linear], None], width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, width), act(), nn.Linear(width, width), act())
    model.append(nn.Linear(width, 1))
    for layer in (model[0], model[2]):
        init(layer)
    return model


def _regression(rows: int = 64) -> Callable[[], Batch]:
    def batch() -> Batch:
        x = torch.randn(rows, 16)
        return x, torch.sin(x[:, :1]) + 0.5 * x[:, 1:2]

    return batch


def _he(layer: nn.Linear) -> None:
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)


def _xavier(layer: nn.Linear) -> None:
    nn.init.xavier_normal_(layer.weight)
    nn.init.zeros_(layer.bias)


def _negative_bias(layer: nn.Linear) -> None:
    nn.init.constant_(layer.bias, -3.0)


def _large_weights(layer: nn.Linear) -> None:
    nn.init.normal_(layer.weight, std=5.0)


def _sparse_first_layer() -> nn.Module:
    """He-init MLP whose first layer has unit-variance pre-activations shifted by -2: each of
    its units fires on ~2 % of rows, sparse but alive."""
    model = _mlp(nn.ReLU, _he)
    nn.init.normal_(model[0].weight, std=16**-0.5)
    nn.init.constant_(model[0].bias, -2.0)
    return model


def test_negative_bias_kills_relu_units():
    alerts, _ = _train(_mlp(nn.ReLU, _negative_bias), _regression())
    assert _kinds(alerts) == {"dead_relu"}
    alert = alerts[-1]
    assert alert.layers == ("1", "3") and alert.severity == "critical"
    assert "1: 100% of units dead" in alert.message and "He" in alert.hint


def test_he_init_relu_is_silent():
    alerts, stats = _train(_mlp(nn.ReLU, _he), _regression())
    assert alerts == [] and max(stats.dead_relu.values()) < 0.1


def test_legitimately_sparse_units_are_not_dead():
    alerts, stats = _train(_sparse_first_layer(), _regression(rows=128))
    assert alerts == [] and stats.dead_relu["1"] < 0.5


def test_small_batches_are_not_judged():
    # on 8 rows a unit that fires on 2 % of rows is silent on all of them most of the time
    alerts, stats = _train(_sparse_first_layer(), _regression(rows=8))
    assert alerts == [] and stats.dead_relu["1"] > 0.5 and stats.relu_rows["1"] == 8


def test_large_weights_saturate_sigmoids():
    alerts, _ = _train(_mlp(nn.Sigmoid, _large_weights), _regression())
    assert _kinds(alerts) == {"saturation"}
    assert alerts[-1].layers == ("1", "3") and "(sigmoid)" in alerts[-1].message


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_xavier_init_is_silent(act):
    alerts, stats = _train(_mlp(act, _xavier), _regression())
    assert alerts == [] and max(stats.saturation.values()) < 0.05


def test_confident_sigmoid_output_layer_is_silent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 1), nn.Sigmoid())

    def separable() -> Batch:
        x = torch.randn(64, 2)
        x[:, 0] += 3 * torch.sign(x[:, 0])
        return x, (x[:, :1] > 0).float()

    loss = nn.functional.binary_cross_entropy
    alerts, stats = _train(model, separable, loss, steps=30, lr=0.05)
    assert alerts == []
    assert stats.output_layers == {"3"} and stats.saturation["3"] > 0.9


# --- transformers ---------------------------------------------------------------------------

D_MODEL = 32


class Sequence(nn.Module):
    """Embeds (B, T, 8) inputs, runs ``blocks``, regresses one number per token."""

    def __init__(self, blocks: list[nn.Module], causal: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(8, D_MODEL)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(D_MODEL, 1)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1]) if self.causal else None
        for block in self.blocks:
            h = block(h, mask, is_causal=self.causal) if self.causal else block(h)
        return self.head(h)


class AttentionOnly(nn.Module):
    """Self-attention with no residual connection and no MLP: what rank collapse needs."""

    gradflow_probe = "block"

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D_MODEL, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def _encoder_layer(norm_first: bool = False) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        D_MODEL, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first
    )


def _tokens(length: int = 16) -> Callable[[], Batch]:
    def batch() -> Batch:
        x = torch.randn(16, length, 8)
        return x, x[:, :, :1].cumsum(1) / length

    return batch


def _sharpen(model: Sequence, factor: float) -> Sequence:
    """Scale the query and key projections: attention logits grow by ``factor**2``."""
    with torch.no_grad():
        for block in model.blocks:
            block.self_attn.in_proj_weight[: 2 * D_MODEL] *= factor
    return model


def _transformer(depth: int = 2, causal: bool = False, **kwargs) -> Sequence:
    torch.manual_seed(0)
    return Sequence([_encoder_layer(**kwargs) for _ in range(depth)], causal=causal)


def test_low_temperature_collapses_attention():
    alerts, _ = _train(_sharpen(_transformer(), 14.0), _tokens())
    assert _kinds(alerts) == {"attention_collapse"}
    alert = alerts[-1]
    assert alert.layers == ("blocks.0.self_attn", "blocks.1.self_attn")
    assert "blocks.1.self_attn heads 0,1,2,3 of 4" in alert.message
    assert "scaling" in alert.hint


def test_normal_attention_is_silent():
    alerts, stats = _train(_transformer(), _tokens())
    assert alerts == [] and min(h.min() for h in stats.attention_entropy.values()) > 0.5


def test_causal_mask_is_silent():
    alerts, stats = _train(_transformer(causal=True), _tokens())
    assert alerts == [] and min(h.min() for h in stats.attention_entropy.values()) > 0.5


def test_two_token_sequences_are_not_judged():
    alerts, stats = _train(_sharpen(_transformer(), 14.0), _tokens(length=2))
    assert alerts == []
    assert all(torch.isnan(torch.from_numpy(h)).all() for h in stats.attention_entropy.values())


def test_attention_without_residuals_collapses_rank():
    torch.manual_seed(0)
    model = Sequence([AttentionOnly() for _ in range(8)])
    alerts, stats = _train(model, _tokens())
    assert _kinds(alerts) == {"rank_collapse"}
    alert = alerts[-1]
    assert alert.layers[0] == "blocks.1" and alert.details["variant"] == "collapsed"
    assert stats.effective_rank["blocks.7"] < 1.1


@pytest.mark.parametrize("length", [16, 6])
def test_pre_norm_residual_blocks_are_silent(length):
    alerts, stats = _train(_transformer(depth=8, norm_first=True), _tokens(length))
    assert alerts == []
    assert min(stats.effective_rank.values()) > 3.0  # bounded by 6 tokens, still far from 1
