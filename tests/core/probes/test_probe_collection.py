"""What :meth:`ActivationProbes.collect` returns, checked against numbers worked out by hand:
sites that did not run, shared activations of several widths, exact counts, histograms."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, ProbeStats, register_probe
from tests.helpers.dispatch import OpRecorder


class Branches(nn.Module):
    """Two sites registered before the one that runs, and never called."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = nn.ReLU()
        self.gate = nn.Sigmoid()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(4))
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(x))


def _signed(rows: int, positive: list[bool]) -> torch.Tensor:
    """``rows`` rows whose column ``i`` is 1 where ``positive[i]``, else -1."""
    return torch.tensor([1.0 if p else -1.0 for p in positive]).repeat(rows, 1)


def test_sites_that_did_not_run_are_left_out():
    model = Branches()
    probes = ActivationProbes(model)
    assert list(probes.sites) == ["skipped", "gate", "act"]
    with probes.attached():
        model(_signed(20, [True, True, False, False]))
    stats = probes.collect()
    assert stats.kinds == {"act": "relu"}
    assert stats.dead_relu == {"act": 0.5} and stats.relu_rows == {"act": 20}
    assert stats.saturation == {} and stats.output_layers == {"act"}


def test_a_shared_relu_adds_up_calls_of_different_widths():
    """Unit i of a 4-wide call is unit i of an 8-wide one: units 0, 1 fire on the first call
    (16 rows), unit 7 on the second (16 rows); 2-6 never fire: 5 of 8 dead, units 4-7 seen
    on 16 rows only."""
    act = nn.ReLU()
    probes = ActivationProbes(act)
    with probes.attached():
        act(_signed(16, [True, True, False, False]))
        act(_signed(16, [False] * 7 + [True]))
    stats = probes.collect()
    assert stats.dead_relu == {"": 5 / 8} and stats.relu_rows == {"": 16}


def test_counts_stay_exact_past_float32():
    """2^24 + 1 rows: not representable in float32, exact in the float64 sums."""
    act = register_probe(nn.Identity(), "relu")  # the input's view passes through: no copy
    probes = ActivationProbes(act)
    with probes.attached():
        act(torch.ones(1, 1).expand(2**24 + 1, 1))
    assert probes.collect().relu_rows == {"": 2**24 + 1}


def test_collecting_without_a_probe_step_runs_no_tensor_op():
    model = Branches()
    probes = ActivationProbes(model)
    with OpRecorder() as recorder:
        stats = probes.collect()
    assert recorder.ops == [] and stats.kinds == {} and stats.output_layers == frozenset()


def test_a_unit_seen_on_a_single_finite_row_is_judged():
    """Unit 0 finite on one row (zero there: dead), unit 1 finite on both rows (alive)."""
    act = nn.ReLU()
    probes = ActivationProbes(act)
    with probes.attached():
        act(torch.tensor([[-1.0, 1.0], [math.nan, 1.0]]))
    stats = probes.collect()
    assert stats.dead_relu == {"": 0.5} and stats.relu_rows == {"": 1}


def _opted_in(kind: str) -> nn.Module:
    """A module whose output is its input, probed as ``kind``: the values are the test's."""
    return register_probe(nn.Identity(), kind)  # type: ignore[arg-type]


def test_histograms_of_every_kind_bin_by_hand():
    """Four bins over [0, 1] (unit activity, sigmoid, attention entropy) or [-1, 1] (tanh)."""
    model = nn.ModuleDict(
        {
            "relu": nn.ReLU(),
            "sigmoid": _opted_in("sigmoid"),
            "tanh": _opted_in("tanh"),
            "attention": _opted_in("attention"),
        }
    )
    probes = ActivationProbes(model, ProbeConfig(histogram_bins=4))
    uniform, one_hot = [0.25] * 4, [1.0, 0.0, 0.0, 0.0]
    with probes.attached(histograms=True):
        # unit activity 0, 0, 0.5, 1 (four rows)
        model["relu"](torch.tensor([[-1.0, -1, 1, 1], [-1, -1, -1, 1]]).repeat(2, 1))
        model["sigmoid"](torch.tensor([0.1, 0.3, 0.3, 0.9, math.nan]))
        model["tanh"](torch.tensor([-0.9, -0.1, 0.6]))
        # entropies 1, 0, 0 and a NaN row (not counted), one sequence of four keys
        model["attention"](torch.tensor([uniform, one_hot, one_hot, [math.nan] * 4]))
    hist = probes.collect().histograms
    quarters, halves = np.linspace(0.0, 1.0, 5), np.linspace(-1.0, 1.0, 5)
    expected = {
        "probe/unit_activity/relu": ([2, 0, 1, 1], quarters),
        "probe/activation/sigmoid": ([1, 2, 0, 1], quarters),
        "probe/activation/tanh": ([1, 1, 0, 1], halves),
        "probe/attention_entropy/attention": ([2, 0, 0, 1], quarters),
    }
    assert hist.keys() == expected.keys()
    for tag, (counts, edges) in expected.items():
        np.testing.assert_array_equal(hist[tag][0], counts, err_msg=tag)
        np.testing.assert_array_equal(hist[tag][1], edges, err_msg=tag)


def test_a_head_with_one_usable_row_has_its_entropy_and_none_warns():
    """One query row over four keys is enough; a head with no usable row is NaN, quietly."""
    softmax = register_probe(nn.Softmax(dim=-1), "attention")
    probes = ActivationProbes(softmax)
    with probes.attached():
        softmax(torch.zeros(1, 4))  # uniform: entropy 1
    np.testing.assert_allclose(probes.collect().attention_entropy[""], [1.0], rtol=1e-6)
    with probes.attached():
        softmax(torch.full((1, 4), math.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = probes.collect()
    assert np.isnan(stats.attention_entropy[""]).all() and stats.scalars() == {}


@pytest.mark.parametrize("bins", [3, 20])
def test_no_histogram_without_asking(bins):
    model = Branches()
    probes = ActivationProbes(model, ProbeConfig(histogram_bins=bins))
    with probes.attached():
        model(_signed(20, [True] * 4))
    assert probes.collect().histograms == {}


def test_attach_without_arguments_computes_no_histogram():
    act = nn.ReLU()
    probes = ActivationProbes(act)
    probes.attach()
    act(torch.ones(4, 2))
    probes.detach()
    stats = probes.collect()
    assert stats.histograms == {} and stats.dead_relu == {"": 0.0}


@pytest.mark.parametrize(
    "model",
    [nn.Linear(2, 2), nn.ReLU(), nn.BatchNorm1d(2, affine=False)],
    ids=["parameters", "nothing", "buffers_only"],
)
def test_collecting_all_ranks_without_a_probe_step(model):
    """Without a process group ``all_ranks`` sums over one rank: nothing ran, nothing to report,
    whatever the model holds (the empty slots are laid out on its device, else the CPU)."""
    probes = ActivationProbes(model)
    assert probes.collect(all_ranks=True) == ProbeStats()


class Returns(nn.Module):
    """Probed as ``kind``; returns what it is given."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.gradflow_probe = kind

    def forward(self, value: object) -> object:
        return value


SATURATED_HALF = torch.tensor([0.001, 0.5, 0.999, 0.5])


@pytest.mark.parametrize(
    "output",
    [
        (SATURATED_HALF, torch.zeros(4)),
        [None, SATURATED_HALF],
        {"probs": SATURATED_HALF, "other": torch.zeros(4)},
        ((SATURATED_HALF,), torch.zeros(4)),
    ],
    ids=["tuple", "list_after_a_none", "dict", "nested"],
)
def test_the_first_tensor_of_a_structured_output_is_measured(output):
    module = Returns("sigmoid")
    probes = ActivationProbes(module)
    with probes.attached():
        module(output)
    assert probes.collect().saturation == {"": 0.5}


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh", "attention"])
@pytest.mark.parametrize(
    "output", [None, "text", (None, 1.0), torch.tensor(0.5)], ids=["none", "str", "no_tensor", "0d"]
)
def test_outputs_without_a_measurable_tensor_are_skipped(kind, output):
    module = Returns(kind)
    probes = ActivationProbes(module)
    with probes.attached():
        module(output)
    assert probes.collect() == ProbeStats()


def test_opted_in_attention_keeps_max_samples_sequences():
    """Sequence 0 is uniform (entropy 1), sequence 1 one-hot (0): the cap of one keeps 1.0."""
    probs = torch.stack([torch.full((4, 4), 0.25), torch.eye(4)])
    for max_samples, entropy in [(1, 1.0), (2, 0.5)]:
        module = Returns("attention")
        probes = ActivationProbes(module, ProbeConfig(max_samples=max_samples))
        with probes.attached():
            module(probs)
        np.testing.assert_allclose(probes.collect().attention_entropy[""], [entropy], rtol=1e-6)


def test_a_module_whose_parameters_did_not_run_does_not_hide_the_output_layer():
    """An auxiliary head switched off (its Linear unused) runs after the final sigmoid: only
    modules with parameters of their own count as later layers."""

    class AuxHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.enabled = nn.Linear(1, 1), False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x) if self.enabled else x

    model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid(), AuxHead())
    probes = ActivationProbes(model)
    for enabled, output_layers in [(False, {"1"}), (True, set())]:
        model[2].enabled = enabled
        with probes.attached():
            model(torch.randn(8, 4))
        assert probes.collect().output_layers == output_layers
