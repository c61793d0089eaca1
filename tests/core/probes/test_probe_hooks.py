"""Probe mechanics: outputs untouched, hooks gone after detach, no host sync, naming, opt-in."""

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, register_probe
from lightning_gradflow.core.probes.registry import discover_probes
from tests.helpers.dispatch import SYNC_OPS, OpRecorder


class Mixed(nn.Module):
    """A transformer (dropout on, padding mask, sequence-first) followed by an MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1),
            num_layers=2,
            enable_nested_tensor=False,
        )
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
        self.out = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x), src_key_padding_mask=padding)  # (T, B, D)
        return self.out(self.head(h.mean(0))).squeeze(-1)


def _batch():
    torch.manual_seed(123)
    x = torch.randn(10, 4, 6)
    padding = torch.zeros(4, 10, dtype=torch.bool)
    padding[1, 7:] = True
    return x, padding


def _step(model, probes=None, histograms=False):
    x, padding = _batch()
    torch.manual_seed(7)  # dropout masks
    model.zero_grad()
    if probes is None:
        out = model(x, padding)
    else:
        with probes.attached(histograms=histograms):
            out = model(x, padding)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return out.detach(), grads, torch.get_rng_state()


def test_outputs_gradients_and_rng_are_bit_identical_with_probes():
    torch.manual_seed(0)
    model = Mixed().train()
    bare = _step(model)
    probes = ActivationProbes(model)
    probed = _step(model, probes, histograms=True)
    assert torch.equal(bare[0], probed[0])
    assert all(torch.equal(a, b) for a, b in zip(bare[1], probed[1], strict=True))
    assert torch.equal(bare[2], probed[2])  # the probes drew no random numbers
    stats = probes.collect()
    assert set(stats.kinds.values()) == {"relu", "tanh", "sigmoid", "attention", "block"}


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_exist_only_while_attached_even_after_an_error():
    model = Mixed()
    probes = ActivationProbes(model)
    assert _hook_count(model) == 0
    probes.attach()
    attached = _hook_count(model)
    probes.attach()  # no-op while attached
    assert probes.is_attached and _hook_count(model) == attached > len(probes.sites)
    probes.detach()
    probes.detach()
    assert not probes.is_attached and _hook_count(model) == 0
    assert not any(m._forward_hooks_with_kwargs for m in model.modules())
    with pytest.raises(RuntimeError), probes.attached():
        model(torch.randn(3, 2, 5), None)  # wrong feature size
    assert _hook_count(model) == 0


def test_no_host_sync_inside_the_hooks():
    model = Mixed().train()
    x, padding = _batch()
    with OpRecorder() as bare:
        model(x, padding)
    probes = ActivationProbes(model)
    with probes.attached(histograms=True), OpRecorder() as probed:
        model(x, padding)
    assert len(probed.ops) > len(bare.ops)  # the hooks did run
    sync = Counter(op for op in probed.ops if op in SYNC_OPS)
    assert sync == Counter(op for op in bare.ops if op in SYNC_OPS)


def test_repeated_calls_add_up_in_one_site():
    """A layer applied a data-dependent number of times (adaptive depth) is one site: its rows
    add up and a unit is alive if it fired on any call."""

    class Looped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shift, self.act = nn.Linear(4, 4, bias=False), nn.ReLU()
            with torch.no_grad():  # unit i+1 is positive where unit i was
                self.shift.weight.copy_(torch.eye(4).roll(1, dims=0))

        def forward(self, x: torch.Tensor, depth: int) -> torch.Tensor:
            for _ in range(depth):
                x = self.act(self.shift(x))
            return x

    model = Looped()
    probes = ActivationProbes(model)
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(32, 1)
    for depth, dead in [(1, 0.75), (3, 0.25), (2, 0.5)]:
        with probes.attached():
            model(x, depth)
        stats = probes.collect()
        assert stats.kinds == {"act": "relu"}
        assert stats.dead_relu == {"act": dead} and stats.relu_rows == {"act": 32 * depth}


CHANNELS_NEGATIVE_BIAS = torch.tensor([0.0, -100.0, -100.0, -100.0])


def _biased(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        module.bias.copy_(CHANNELS_NEGATIVE_BIAS)
    return module


def _identity_conv(conv: nn.Module) -> nn.Module:
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).reshape(conv.weight.shape))
        conv.bias.zero_()
    return conv


PRODUCERS = {  # layers before the ReLU, input shape, dead share, rows
    "conv1d": (lambda: [_biased(nn.Conv1d(4, 4, 3, padding=1))], (16, 4, 8), 0.75, 128),
    "conv2d": (lambda: [_identity_conv(nn.Conv2d(4, 4, 1))], (16, 4, 3, 3), 0.75, 144),
    "batchnorm1d": (lambda: [_biased(nn.BatchNorm1d(4))], (16, 4, 8), 0.75, 128),
    "groupnorm": (lambda: [_biased(nn.GroupNorm(2, 4))], (16, 4, 8), 0.75, 128),
    "instancenorm": (
        lambda: [_biased(nn.InstanceNorm2d(4, affine=True))],
        (16, 4, 3, 3),
        0.75,
        144,
    ),
    "conv_bn": (
        lambda: [nn.Sequential(nn.Conv1d(4, 4, 1), _biased(nn.BatchNorm1d(4)))],
        (16, 4, 8),
        0.75,
        128,
    ),
    "dropout": (
        lambda: [_biased(nn.Conv1d(4, 4, 3, padding=1)), nn.Dropout(0.0)],
        (16, 4, 8),
        0.75,
        128,
    ),
    "maxpool": (
        lambda: [_identity_conv(nn.Conv1d(4, 4, 1)), nn.MaxPool1d(2)],
        (16, 4, 8),
        0.75,
        64,
    ),
    "linear": (
        lambda: [_identity_conv(nn.Conv2d(4, 4, 1)), nn.Linear(3, 3)],
        (16, 4, 3, 3),
        0.0,
        192,
    ),
    "nothing": (lambda: [], (16, 4, 8), 0.0, 64),
}


@pytest.mark.parametrize("case", PRODUCERS)
def test_unit_axis_follows_the_layer_before_the_relu(case):
    """Channels after conv/norm/pooling layers, whatever the rank of the map; the last dim after
    anything else (a Linear over the width of a 4-D map, or no layer at all)."""
    layers, shape, dead, rows = PRODUCERS[case]
    torch.manual_seed(0)
    model = nn.Sequential(*layers(), nn.ReLU())
    x = torch.randn(shape).abs()
    x[:, 1:] *= -1  # channels 1-3 of the input are negative
    probes = ActivationProbes(model)
    with probes.attached():
        model(x)
    stats = probes.collect()
    name = str(len(model) - 1)
    assert stats.dead_relu == {name: dead} and stats.relu_rows == {name: rows}


def test_output_layer_is_recognised_through_a_view():
    model = Mixed()
    probes = ActivationProbes(model)
    _step(model, probes)
    assert probes.collect().output_layers == {"out.1"}


class Head(nn.Module):
    """Its own parameter, applied before its child sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 1))
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x @ self.weight)


OUTPUTS = {  # the network, its output layer
    "final_sigmoid": (
        lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid()),
        {"net.3"},
    ),
    "hidden_sigmoid": (
        lambda: nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 1)),
        set(),
    ),
    "two_in_a_row": (lambda: nn.Sequential(nn.Linear(4, 1), nn.Sigmoid(), nn.Tanh()), {"net.2"}),
    "own_parameter": (lambda: nn.Sequential(nn.Linear(4, 8), Head()), {"net.1.act"}),
}


@pytest.mark.parametrize("case", OUTPUTS)
def test_output_layer_is_the_last_site_with_no_parametrised_module_after_it(case):
    """Found from the forward order, whichever module was called: here a submodule, followed
    by a loss module that is part of the probed model."""
    build, expected = OUTPUTS[case]

    class Task(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.loss = build(), nn.BCEWithLogitsLoss()

    torch.manual_seed(0)
    task = Task()
    probes = ActivationProbes(task)
    for _ in range(2):
        with probes.attached():
            task.loss(task.net(torch.randn(16, 4)), torch.ones(16, 1))
        assert probes.collect().output_layers == expected


def test_histograms_add_up():
    model = Mixed()
    probes = ActivationProbes(model, ProbeConfig(histogram_bins=10))
    _step(model, probes, histograms=True)
    stats = probes.collect()
    hist = stats.histograms
    counts, edges = hist["probe/unit_activity/head.1"]
    assert counts.sum() == 16 and edges.shape == (11,)
    assert hist["probe/activation/head.3"][0].sum() == 4 * 8
    assert hist["probe/activation/out.1"][1][0] == 0.0  # sigmoid: [0, 1]
    assert hist["probe/activation/head.3"][1][0] == -1.0  # tanh: [-1, 1]
    assert hist["probe/attention_entropy/encoder.layers.0.self_attn"][0].sum() > 0
    _step(model, probes)
    assert probes.collect().histograms == {}


def test_collect_without_a_probe_step_and_scalar_names():
    model = Mixed()
    probes = ActivationProbes(model)
    assert probes.collect().scalars() == {}
    _step(model, probes)
    scalars = probes.collect().scalars()
    assert "probe/attention_entropy/encoder.layers.1.self_attn/head3" in scalars
    assert "probe/effective_rank/encoder.layers.0" in scalars
    assert {"probe/dead_relu/head.1", "probe/saturation/out.1"} <= set(scalars)
    assert all(np.isfinite(v) for v in scalars.values())


def test_opt_in_and_opt_out():
    class Attention(nn.Module):
        """Single-head attention whose softmax opts in as the probability tensor."""

        gradflow_probe = "block"

        def __init__(self) -> None:
            super().__init__()
            self.qk = nn.Linear(8, 16)
            self.softmax = register_probe(nn.Softmax(dim=-1), "attention")

        def forward(self, x):
            q, k = self.qk(x).chunk(2, dim=-1)
            return self.softmax(q @ k.transpose(1, 2)) @ x

    model = nn.Sequential(Attention(), nn.Tanh(), nn.Sigmoid())
    register_probe(model[2], None)
    assert discover_probes(model) == {"0": "block", "0.softmax": "attention", "1": "tanh"}
    probes = ActivationProbes(model)
    with probes.attached():
        model(torch.randn(4, 6, 8))
    stats = probes.collect()
    assert stats.attention_entropy["0.softmax"].shape == (1,)
    assert 1.0 <= stats.effective_rank["0"] <= 6.0
    with pytest.raises(ValueError, match="kind='gelu' is not allowed: expected one of"):
        register_probe(nn.GELU(), "gelu")


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_eval_mode():
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    probes = ActivationProbes(layer)
    with torch.no_grad(), probes.attached():  # hooks turn PyTorch's fast path off
        layer(torch.randn(2, 5, 16))
    stats = probes.collect()
    assert list(stats.attention_entropy) == ["self_attn"] and "" in stats.effective_rank
    encoder = nn.TransformerEncoder(layer, num_layers=2)
    x, padding = torch.randn(3, 7, 16), torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 4:] = True
    probes = ActivationProbes(encoder)
    with torch.no_grad():
        expected = encoder(x, src_key_padding_mask=padding)
        with probes.attached():  # nested tensors inside: skipped, not an error
            out = encoder(x, src_key_padding_mask=padding)
    assert torch.equal(out, expected) and probes.collect().kinds == {}
