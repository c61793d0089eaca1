"""The rank probe on blocks of your own (``gradflow_probe = "block"``) whose outputs are chosen
by hand: a sequence of the identity's rows has effective rank = its tokens, one of equal rows 1."""

import math

import pytest
import torch
from torch import nn

from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, ProbeStats
from lightning_gradflow.core.probes.rank import effective_rank

EYE, ONES = torch.eye(4), torch.ones(4, 4)  # effective rank 4 and 1


class Block(nn.Module):
    """Returns its input; probed as a block, with a padding mask by its usual name."""

    gradflow_probe = "block"

    def forward(
        self, x: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return x


class SequenceFirst(Block):
    batch_first = False


def _probe(block: nn.Module, *args: object, max_samples: int = 8, **kwargs: object) -> ProbeStats:
    probes = ActivationProbes(block, ProbeConfig(max_samples=max_samples))
    with probes.attached():
        block(*args, **kwargs)
    return probes.collect()


def _rank_and_tokens(stats: ProbeStats) -> tuple[object, int]:
    return pytest.approx(stats.effective_rank[""], rel=1e-5), stats.block_tokens[""]


def test_batch_first_unless_the_block_says_otherwise():
    """Samples along dim 0 by default, along dim 1 for ``batch_first = False``: sample 0 is
    the identity (rank 4), sample 1 four equal rows (rank 1)."""
    batch = torch.stack([EYE, ONES])
    assert _rank_and_tokens(_probe(Block(), batch)) == (2.5, 4)
    assert _rank_and_tokens(_probe(Block(), batch, max_samples=1)) == (4.0, 4)
    sequence_first = batch.transpose(0, 1)
    assert _rank_and_tokens(_probe(SequenceFirst(), sequence_first, max_samples=1)) == (4.0, 4)


def test_a_two_dimensional_output_is_one_sequence():
    assert _rank_and_tokens(_probe(Block(), EYE[:3])) == (3.0, 3)


def test_a_one_dimensional_output_is_not_measured():
    assert _probe(Block(), torch.ones(4)).kinds == {}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_any_precision_is_measured_in_float32(dtype):
    assert _rank_and_tokens(_probe(Block(), EYE.to(dtype).unsqueeze(0))) == (4.0, 4)


HIDE_LAST_TWO = [False, False, True, True]


@pytest.mark.parametrize(
    "padding",
    [
        torch.tensor([HIDE_LAST_TWO, [False] * 4]),
        torch.tensor([[0.0, 0.0, -math.inf, -math.inf], [0.0] * 4]),  # additive
    ],
    ids=["bool", "additive"],
)
def test_padded_tokens_leave_the_spectrum(padding):
    """Sample 0's last two tokens are pads: the identity's first two rows remain, rank 2 (pads
    set to ones instead would leave rank > 2). Sample 1, capped away, has no pad."""
    batch = torch.stack([EYE, EYE])
    stats = _probe(Block(), batch, max_samples=1, src_key_padding_mask=padding)
    assert _rank_and_tokens(stats) == (2.0, 4)
    assert _rank_and_tokens(_probe(Block(), batch, src_key_padding_mask=padding)) == (3.0, 4)


def test_an_unbatched_sequence_takes_an_unbatched_padding_mask():
    stats = _probe(Block(), EYE, src_key_padding_mask=torch.tensor(HIDE_LAST_TWO))
    assert _rank_and_tokens(stats) == (2.0, 4)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 1.0, 10.0])
def test_effective_rank_does_not_depend_on_the_scale(scale):
    """Singular values summing to less than 1 (scale 1e-3: 4e-3) are as good as any."""
    ranks = effective_rank(torch.stack([EYE, ONES]) * scale)
    torch.testing.assert_close(ranks, torch.tensor([4.0, 1.0]))
