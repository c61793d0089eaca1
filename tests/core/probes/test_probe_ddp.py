"""Two real gloo ranks, each probing part of a batch: the summed statistics are those of the
whole batch, so every rank's detectors see the same numbers and decide alike."""

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, ProbeStats
from tests.helpers.gloo import run_on_gloo_ranks

pytestmark = pytest.mark.timeout(120)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 8),
        nn.Sigmoid(),
    )
    nn.init.constant_(model[2].bias, -1.0)  # some units dead on one half, alive on the other
    nn.init.normal_(model[4].weight, std=2.0)
    return model


def _stats(model: nn.Module, x: torch.Tensor, all_ranks: bool):
    probes = ActivationProbes(model, ProbeConfig(max_samples=64))
    with probes.attached():
        model(x)
    return probes.collect(all_ranks=all_ranks)


def _rank_stats(rank: int) -> tuple[ProbeStats, ProbeStats, ProbeStats]:
    """This rank's half of the batch probed locally and summed over ranks, and the whole batch."""
    torch.manual_seed(1)
    x = torch.randn(8, 6, 8)
    model = _model()
    local = _stats(model, x[rank * 4 : (rank + 1) * 4], all_ranks=False)
    reduced = _stats(model, x[rank * 4 : (rank + 1) * 4], all_ranks=True)
    full = _stats(model, x, all_ranks=False)
    return local, reduced, full


def _rank_results(rank: int) -> dict:
    # a local collection makes no collective: rank 0 collects alone first, rank 1 goes straight
    # on to the joint collections (a stray collective would pair with one of those)
    alone = _stats(_model(), torch.randn(2, 6, 8), all_ranks=False) if rank == 0 else None
    return {"alone": alone, "halves": _rank_stats(rank), **_routed_stats(rank)}


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    """What every test here checks, from one pair of gloo processes (spawning costs seconds)."""
    return run_on_gloo_ranks(_rank_results)


def test_one_rank_collects_locally_on_its_own(ranks):
    """Rank 0's own collection needed no other rank, and the joint ones that followed on both
    ranks still pair up (checked by the tests below)."""
    assert set(ranks[0]["alone"].kinds.values()) == {"attention", "block", "relu", "sigmoid"}


def test_all_ranks_statistics_equal_the_whole_batch(ranks):
    (local0, reduced0, full), (local1, reduced1, _) = (r["halves"] for r in ranks)
    assert local0.dead_relu["3"] != local1.dead_relu["3"]  # the halves disagree ...
    for reduced in (reduced0, reduced1):  # ... the reduced statistics do not
        assert reduced.dead_relu == pytest.approx(full.dead_relu)
        assert reduced.relu_rows == full.relu_rows
        assert reduced.saturation == pytest.approx(full.saturation)
        assert reduced.effective_rank == pytest.approx(full.effective_rank)
        assert reduced.block_tokens == full.block_tokens == {"1": 6}  # lengths, not summed
        for name, heads in full.attention_entropy.items():
            np.testing.assert_allclose(reduced.attention_entropy[name], heads, rtol=1e-6)


class Routed(nn.Module):
    """A trunk, then an expert that runs on the sequences routed to it (first feature > 0) in
    chunks of at most 4: no call, one or several, depending on the data."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.expert = nn.Sequential(
            nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
            nn.Linear(16, 32),
            nn.ReLU(),
            nn.Linear(32, 8),
            nn.Sigmoid(),
        )
        nn.init.constant_(self.expert[1].bias, -1.0)  # some units dead on part of the batch
        nn.init.normal_(self.expert[3].weight, std=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        routed = h[x[:, 0, 0] > 0]
        chunks = [self.expert(routed[i : i + 4]) for i in range(0, len(routed), 4)]
        return torch.cat(chunks) if chunks else h


ROUTES = {  # routed sequences on rank 0 and rank 1 (6 sequences each): expert calls 2/0, 1/2
    "one_rank_skips": ([1, 1, 1, 1, 1, 0], [0] * 6),
    "one_and_two_calls": ([1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]),
}


def _routed_batch(route: str) -> torch.Tensor:
    torch.manual_seed(2)
    x = torch.randn(12, 5, 8)
    routed = torch.tensor(ROUTES[route][0] + ROUTES[route][1], dtype=torch.bool)
    x[:, 0, 0] = torch.where(routed, x[:, 0, 0].abs() + 0.1, -x[:, 0, 0].abs() - 0.1)
    return x


def _routed_stats(rank: int) -> dict[str, tuple[ProbeStats, ProbeStats, ProbeStats]]:
    """Per route: this rank's sequences probed locally and summed over ranks, and all 12."""
    model = Routed()
    out = {}
    for route in ROUTES:
        x = _routed_batch(route)
        local = _stats(model, x[rank * 6 : (rank + 1) * 6], all_ranks=False)
        reduced = _stats(model, x[rank * 6 : (rank + 1) * 6], all_ranks=True)
        out[route] = (local, reduced, _stats(model, x, all_ranks=False))
    return out


def _assert_same(reduced: ProbeStats, full: ProbeStats) -> None:
    assert reduced.kinds == full.kinds
    assert reduced.dead_relu == full.dead_relu and reduced.relu_rows == full.relu_rows
    assert reduced.saturation == full.saturation
    assert reduced.output_layers == full.output_layers == {"expert.4"}
    assert reduced.block_tokens == full.block_tokens == {"expert.0": 5}
    assert reduced.effective_rank == pytest.approx(full.effective_rank, rel=1e-6)
    assert reduced.attention_entropy.keys() == full.attention_entropy.keys()
    for name, heads in full.attention_entropy.items():
        np.testing.assert_allclose(reduced.attention_entropy[name], heads, rtol=1e-6)


def test_sites_run_a_different_number_of_times_on_each_rank(ranks):
    """Statistics are aligned by site, not by call: a rank where the expert did not run, or ran
    once while the other ran it twice, still reduces to the statistics of the whole batch (the
    collective used to abort)."""
    rank0, rank1 = ranks
    for route in ROUTES:
        (local0, reduced0, full), (local1, reduced1, _) = rank0[route], rank1[route]
        assert local0.dead_relu != local1.dead_relu  # the ranks disagree ...
        for reduced in (reduced0, reduced1):  # ... the reduced statistics do not
            _assert_same(reduced, full)
    skipped = rank1["one_rank_skips"][0]
    assert set(skipped.kinds) == {"trunk.1"} and skipped.output_layers == {"trunk.1"}
    assert rank0["one_and_two_calls"][2].relu_rows["expert.2"] == 9 * 5  # 9 sequences, 3 calls
