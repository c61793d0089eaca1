"""Two real gloo ranks, each probing half of a batch: the summed statistics are those of the
whole batch, so every rank's detectors see the same numbers and decide alike."""

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, ProbeStats
from tests.helpers.gloo import run_on_gloo_ranks


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


@pytest.mark.timeout(120)
def test_all_ranks_statistics_equal_the_whole_batch():
    results = run_on_gloo_ranks(_rank_stats)
    (local0, reduced0, full), (local1, reduced1, _) = results
    assert local0.dead_relu["3"] != local1.dead_relu["3"]  # the halves disagree ...
    for reduced in (reduced0, reduced1):  # ... the reduced statistics do not
        assert reduced.dead_relu == pytest.approx(full.dead_relu)
        assert reduced.relu_rows == full.relu_rows
        assert reduced.saturation == pytest.approx(full.saturation)
        assert reduced.effective_rank == pytest.approx(full.effective_rank)
        assert reduced.block_tokens == full.block_tokens == {"1": 6}  # lengths, not summed
        for name, heads in full.attention_entropy.items():
            np.testing.assert_allclose(reduced.attention_entropy[name], heads, rtol=1e-6)
