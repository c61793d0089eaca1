import pytest
import torch
from torch import nn

from lightning_gradflow.core.layers import ForwardOrderRecorder, group_parameters


class Reordered(nn.Module):
    """Registration order (head, body, stem) is the reverse of forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 1)
        self.body = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.stem = nn.Linear(3, 4)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.body:
            x = torch.relu(layer(x))
        return self.head(x)


def _names(model, x, **kwargs):
    with ForwardOrderRecorder(model) as rec:
        model(x)
    return [layer.name for layer in group_parameters(model, rec.order, **kwargs)]


def test_forward_order_beats_registration_order():
    model = Reordered()
    assert group_parameters(model)[0].name == "head"
    assert _names(model, torch.randn(2, 3)) == ["stem", "body.0", "body.1", "body.2", "head"]


def test_hooks_are_removed_after_recording():
    model = Reordered()
    _names(model, torch.randn(2, 3))
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_block_granularity_groups_container_elements():
    model = nn.Sequential(
        nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 1))
    )
    layers = group_parameters(model, granularity="block")
    assert [layer.name for layer in layers] == ["0", "1"]
    assert len(layers[0].params) == 4


def test_attention_out_proj_stays_with_its_attention():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.ff = nn.Linear(8, 8)

        def forward(self, x):
            h = self.norm(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.ff(x)

    names = _names(Block(), torch.randn(2, 5, 8))
    assert names == ["norm", "attn", "attn.out_proj", "ff"]


def test_tied_weights_counted_once_and_frozen_filter():
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    layers = group_parameters(model)
    assert sum(len(layer.params) for layer in layers) == 1
    assert group_parameters(model, include=[]) == []


def test_model_without_parameters():
    assert group_parameters(nn.ReLU()) == []


def test_unknown_granularity():
    with pytest.raises(ValueError, match="granularity='module' is not allowed: expected one of"):
        group_parameters(nn.Linear(1, 1), granularity="module")
