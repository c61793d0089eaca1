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


class Encoder(nn.Module):
    """Blocks in a ModuleList two attributes deep, beside a root parameter and a plain head."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.body = nn.Module()
        self.body.layers = nn.ModuleList(
            [nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)}) for _ in range(2)]
        )
        self.head = nn.Linear(2, 1)


def test_blocks_are_named_by_their_full_path_below_plain_modules():
    layers = group_parameters(Encoder(), granularity="block")
    assert [layer.name for layer in layers] == ["<root>", "body.layers.0", "body.layers.1", "head"]
    assert layers[1].param_names == (
        "body.layers.0.a.weight",
        "body.layers.0.a.bias",
        "body.layers.0.b.weight",
        "body.layers.0.b.bias",
    )
    assert [layer.numel for layer in layers] == [1, 12, 12, 3]


def test_a_module_entered_twice_is_recorded_once_and_remove_is_safe_twice():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    with ForwardOrderRecorder(model) as rec:
        assert not rec.recorded
        model(torch.zeros(1, 2))
        model(torch.zeros(1, 2))
        assert rec.recorded
        rec.remove()
    assert rec.order == ["", "0", "1"]
    rec.remove()
    model(torch.zeros(1, 2))
    assert rec.order == ["", "0", "1"]


class RootScaled(nn.Module):
    """The root's own parameter is used first; a registered-first module runs last."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 1)
        self.scale = nn.Parameter(torch.ones(2))
        self.stem = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.stem(x * self.scale))


def test_the_roots_own_parameters_take_the_roots_place_first():
    assert _names(RootScaled(), torch.ones(1, 2)) == ["<root>", "stem", "head"]


def test_only_the_included_parameters_wherever_they_are():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1))
    layers = group_parameters(model, include=[model[2].bias, model[1].weight])
    assert [(layer.name, layer.param_names) for layer in layers] == [
        ("1", ("1.weight",)),
        ("2", ("2.bias",)),
    ]
    assert layers[1].params[0] is model[2].bias


def test_layer_granularity_keeps_nested_modules_apart():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 1))
    assert [layer.name for layer in group_parameters(model)] == ["0.0", "0.1", "1"]


class Interleaved(nn.Module):
    """Block 0's first module runs before block 1, its second after: block 0 comes first."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)}), nn.Linear(2, 2)]
        )

    def forward(self, x):
        return self.blocks[0]["b"](self.blocks[1](self.blocks[0]["a"](x)))


def test_a_block_takes_the_place_of_its_first_module_to_run():
    names = _names(Interleaved(), torch.ones(1, 2), granularity="block")
    assert names == ["blocks.0", "blocks.1"]
