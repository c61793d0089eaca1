"""Every documented probe threshold at, just below and just above its boundary (README
"Alerts": dead_relu / saturation > 50 %, attention entropy < 0.1 in at least half the heads, rank
< 1.5 or last/first < 0.25, 3 probe steps), with the default ``ProbeConfig``; patience checked by
the step of the first alert; every condition's streak round-tripped through a checkpoint."""

import json

import numpy as np
import pytest

from lightning_gradflow.core.probes import ProbeConfig, ProbeDetectors, ProbeStats


def relu(share, rows=64):
    return ProbeStats(kinds={"act": "relu"}, dead_relu={"act": share}, relu_rows={"act": rows})


def saturation(share):
    return ProbeStats(kinds={"act": "tanh"}, saturation={"act": share})


def attention(heads):
    return ProbeStats(
        kinds={"attn": "attention"}, attention_entropy={"attn": np.array(heads, dtype=float)}
    )


def blocks(ranks, tokens=32):
    names = [f"enc.layers.{i}" for i in range(len(ranks))]
    return ProbeStats(
        kinds=dict.fromkeys(names, "block"),
        effective_rank=dict(zip(names, ranks, strict=True)),
        block_tokens=dict.fromkeys(names, tokens),
    )


def first_alert(stats_per_step, detectors=None):
    """The step of the first alert and that alert, the stats fed once per probe step."""
    detectors = detectors or ProbeDetectors(ProbeConfig())
    for step, stats in enumerate(stats_per_step):
        alerts = detectors.update(step, 0, stats)
        if alerts:
            return step, alerts
    return None, []


def fires(stats):
    """Whether a condition held on three probe steps in a row is reported at the third."""
    step, _ = first_alert([stats] * 3)
    assert step in (None, 2)
    return step == 2


@pytest.mark.parametrize(("share", "expected"), [(0.49, False), (0.5, False), (0.51, True)])
def test_dead_relu_above_half_of_the_units(share, expected):
    assert fires(relu(share)) == expected


@pytest.mark.parametrize(("rows", "expected"), [(15, False), (16, True), (17, True)])
def test_dead_relu_judged_on_at_least_sixteen_rows(rows, expected):
    assert fires(relu(0.9, rows)) == expected


@pytest.mark.parametrize(("share", "expected"), [(0.49, False), (0.5, False), (0.51, True)])
def test_saturation_above_half_of_the_activations(share, expected):
    assert fires(saturation(share)) == expected


@pytest.mark.parametrize(
    ("share", "severity"), [(0.98, "warning"), (0.99, "critical"), (1.0, "critical")]
)
def test_dead_and_saturated_are_critical_from_ninety_nine_percent(share, severity):
    for stats in (relu(share), saturation(share)):
        _, [alert] = first_alert([stats] * 3)
        assert alert.severity == severity and alert.value == share and alert.threshold == 0.5


@pytest.mark.parametrize(("entropy", "expected"), [(0.099, True), (0.1, False), (0.101, False)])
def test_attention_entropy_below_a_tenth(entropy, expected):
    assert fires(attention([entropy] * 2 + [0.9] * 2)) == expected


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        ([0.01, 0.9, 0.9, 0.9], False),  # 1 of 4
        ([0.01, 0.01, 0.9, 0.9], True),  # exactly half
        ([0.01, 0.01, 0.01, 0.9], True),  # 3 of 4
        ([0.01, 0.01, 0.9, 0.9, 0.9], False),  # 2 of 5: just below half
        ([0.01, 0.01, 0.01, 0.9, 0.9], True),  # 3 of 5
        ([0.01, 0.9, np.nan, np.nan], True),  # half of the judged heads
    ],
)
def test_attention_collapse_in_at_least_half_the_heads(heads, expected):
    assert fires(attention(heads)) == expected


@pytest.mark.parametrize(("rank", "expected"), [(1.49, True), (1.5, False), (1.51, False)])
def test_rank_collapse_below_one_and_a_half(rank, expected):
    assert fires(blocks([rank])) == expected


@pytest.mark.parametrize(("last", "expected"), [(3.99, True), (4.0, False), (4.01, False)])
def test_rank_decay_last_over_first_below_a_quarter(last, expected):
    """16 -> 4 is exactly 1/4; the fitted line (ratio ~0.16) is below 1/4 throughout."""
    step, alerts = first_alert([blocks([16.0, 14.0, 2.0, last])] * 3)
    assert step == (2 if expected else None)
    assert [a.details["variant"] for a in alerts] == (["depth"] if expected else [])


@pytest.mark.parametrize(
    "stats",
    [relu(0.9), saturation(0.9), attention([0.01] * 4), blocks([1.2]), blocks([16.0, 8, 4, 2])],
    ids=["dead_relu", "saturation", "attention", "rank_collapsed", "rank_depth"],
)
@pytest.mark.parametrize(("held", "first"), [(2, None), (3, 2), (4, 2)])
def test_patience_is_three_probe_steps(stats, held, first):
    healthy = ProbeStats()
    step, _ = first_alert([stats] * held + [healthy] * 3)
    assert step == first


@pytest.mark.parametrize(
    "stats",
    [relu(0.9), saturation(0.9), attention([0.01] * 4), blocks([1.2]), blocks([16.0, 8, 4, 2])],
    ids=["dead_relu", "saturation", "attention", "rank_collapsed", "rank_depth"],
)
def test_every_streak_survives_a_resume(stats):
    """Saved after two probe steps of a condition, restored: the third reports it, as without
    the checkpoint; a fresh detector would wait three more probe steps."""
    kept = ProbeDetectors(ProbeConfig())
    for step in range(2):
        assert kept.update(step, 0, stats) == []
    restored = ProbeDetectors(ProbeConfig())
    restored.load_state_dict(json.loads(json.dumps(kept.state_dict())))
    expected = kept.update(2, 0, stats)
    assert expected and restored.update(2, 0, stats) == expected
    assert ProbeDetectors(ProbeConfig()).update(2, 0, stats) == []


@pytest.mark.parametrize(
    "stats",
    [relu(0.9), saturation(0.9), attention([0.01] * 4), blocks([1.2]), blocks([16.0, 8, 4, 2])],
    ids=["dead_relu", "saturation", "attention", "rank_collapsed", "rank_depth"],
)
def test_every_probe_alert_carries_the_step_and_epoch_it_was_seen_at(stats):
    detectors = ProbeDetectors(ProbeConfig(patience=1))
    alerts = detectors.update(7, 3, stats)
    assert alerts and {(a.step, a.epoch) for a in alerts} == {(7, 3)}


@pytest.mark.parametrize(("tokens", "judged"), [(3, False), (4, True), (5, True)])
def test_blocks_of_fewer_than_four_tokens_are_not_judged(tokens, judged):
    assert fires(blocks([1.2], tokens=tokens)) == judged
    assert fires(blocks([16.0, 8.0, 4.0, 2.0], tokens=tokens)) == judged


@pytest.mark.parametrize(
    ("rank", "severity"), [(1.09, "critical"), (1.1, "warning"), (1.11, "warning")]
)
def test_rank_collapse_is_critical_within_a_fifth_of_the_way_from_one(rank, severity):
    """Threshold 1.5: critical below 1 + 0.5 / 5 = 1.1."""
    _, [alert] = first_alert([blocks([rank])] * 3)
    assert alert.severity == severity and alert.value == rank
    assert alert.details == {"variant": "collapsed", "effective_rank": rank}
    assert alert.message == (
        f"tokens collapsed to one vector (effective rank < 1.5 of 32 tokens) after "
        f"enc.layers.0 {rank:.2f} for 3+ probe steps"
    )


@pytest.mark.parametrize(("ranks", "decays"), [([16.0, 6.0, 2.0], True), ([16.0, 2.0], False)])
def test_a_stack_is_judged_from_three_blocks(ranks, decays):
    _, alerts = first_alert([blocks(ranks)] * 3)
    assert [a.details["variant"] for a in alerts] == (["depth"] if decays else [])


def test_a_short_stack_does_not_end_the_judging_of_the_others():
    stats = blocks([16.0, 8.0, 4.0, 2.0])
    short = {"head.0": 16.0, "head.1": 2.0}
    stats = ProbeStats(
        kinds={**stats.kinds, **dict.fromkeys(short, "block")},
        effective_rank={**short, **stats.effective_rank},
        block_tokens={**stats.block_tokens, **dict.fromkeys(short, 32)},
    )
    _, [alert] = first_alert([stats] * 3)
    assert alert.layers == tuple(f"enc.layers.{i}" for i in range(4))


def test_stacks_are_the_blocks_that_share_their_parent():
    """An encoder and a decoder, each flat, are two stacks, not one falling from 16 to 3 (the
    decoder's blocks sit under another parent of the same model)."""
    ranks = {f"model.encoder.layers.{i}": 16.0 for i in range(3)}
    ranks |= {f"model.decoder.layers.{i}": 3.0 for i in range(3)}
    stats = ProbeStats(
        kinds=dict.fromkeys(ranks, "block"),
        effective_rank=ranks,
        block_tokens=dict.fromkeys(ranks, 32),
    )
    assert first_alert([stats] * 3) == (None, [])


def test_a_sharp_drop_then_a_plateau_is_not_a_steady_decay():
    """Last/first is 0.24 < 1/4, but the fitted line's ratio is 0.257: not a decline with depth."""
    assert first_alert([blocks([16.0, 6.0, 4.5, 3.9])] * 3) == (None, [])


def test_the_rank_decay_alert_reports_the_first_and_last_blocks():
    _, [alert] = first_alert([blocks([16.0, 8.0, 4.0, 2.0])] * 3)
    assert alert.message == (
        "effective rank falls from 16.00 after enc.layers.0 to 2.00 after enc.layers.3 "
        "(ratio 0.12 < 0.25, x0.50 per block) for 3+ probe steps"
    )
    assert alert.details == {"variant": "depth", "per_block_factor": pytest.approx(0.5)}
    assert alert.value == 0.125 and alert.threshold == 0.25 and alert.severity == "warning"
