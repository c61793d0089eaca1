"""Probe detectors on hand-made statistics: persistence, thresholds, checkpoints, config."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.probes import (
    ActivationProbes,
    ProbeConfig,
    ProbeDetectors,
    ProbeStats,
)


def _relu(share: float, rows: int = 64) -> ProbeStats:
    return ProbeStats(
        kinds={"fc.act": "relu"}, dead_relu={"fc.act": share}, relu_rows={"fc.act": rows}
    )


def _run(detectors: ProbeDetectors, stats: list[ProbeStats]) -> list[list[str]]:
    return [[a.kind for a in detectors.update(i, 1, s)] for i, s in enumerate(stats)]


def test_condition_must_persist_for_patience_probe_steps():
    detectors = ProbeDetectors(ProbeConfig(patience=3))
    fired = _run(detectors, [_relu(0.8), _relu(0.8), _relu(0.2), _relu(0.8), _relu(0.8)])
    assert fired == [[], [], [], [], []]
    assert _run(detectors, [_relu(0.8)]) == [["dead_relu"]]
    alert = detectors.update(7, 1, _relu(0.8))[0]
    assert (alert.step, alert.epoch, alert.layers, alert.value) == (7, 1, ("fc.act",), 0.8)
    assert alert.threshold == 0.5 and alert.severity == "warning"


@pytest.mark.parametrize(
    ("dead", "rows", "nan_rows", "fires"),
    [(8, 16, 0, False), (9, 16, 0, True), (9, 15, 0, False), (9, 18, 2, True), (9, 18, 3, False)],
)
def test_dead_relu_boundaries_on_real_activations(dead, rows, nan_rows, fires):
    """More than half of the units dead (8 of 16 is not), judged on at least 16 finite rows."""
    layer = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
    with torch.no_grad():
        layer[0].weight.zero_()
        layer[0].bias.copy_(torch.tensor([-1.0] * dead + [1.0] * (16 - dead)))
    x = torch.randn(rows, 4)
    x[:nan_rows] = float("nan")
    probes = ActivationProbes(layer)
    with probes.attached():
        layer(x)
    stats = probes.collect()
    assert stats.dead_relu == {"1": dead / 16} and stats.relu_rows == {"1": rows - nan_rows}
    alerts = ProbeDetectors(ProbeConfig(patience=1)).update(0, 0, stats)
    assert [a.kind for a in alerts] == (["dead_relu"] if fires else [])


def test_state_dict_round_trip_keeps_streaks():
    detectors = ProbeDetectors()
    _run(detectors, [_relu(0.9), _relu(0.9)])
    state = json.loads(json.dumps(detectors.state_dict()))
    restored = ProbeDetectors()
    restored.load_state_dict(state)
    assert [a.kind for a in restored.update(2, 0, _relu(0.9))] == ["dead_relu"]
    assert ProbeDetectors().update(2, 0, _relu(0.9)) == []


def test_disable_and_unknown_kinds():
    detectors = ProbeDetectors(ProbeConfig(patience=1), disable=["dead_relu"])
    assert detectors.update(0, 0, _relu(1.0)) == []
    with pytest.raises(ValueError, match="vanishing"):
        ProbeDetectors(disable=["vanishing"])


def test_saturated_output_layer_is_not_judged():
    stats = ProbeStats(
        kinds={"h": "tanh", "out": "sigmoid"},
        saturation={"h": 0.7, "out": 1.0},
        output_layers=frozenset({"out"}),
    )
    [alert] = ProbeDetectors(ProbeConfig(patience=1)).update(0, 0, stats)
    assert alert.layers == ("h",) and alert.details == {"saturated_share": {"h": 0.7}}
    assert alert.message == "h (tanh): 70% of activations saturated for 1+ probe steps"


def _attention(heads: list[float]) -> ProbeStats:
    return ProbeStats(
        kinds={"attn": "attention"}, attention_entropy={"attn": np.array(heads, dtype=float)}
    )


def test_a_few_sharp_heads_are_healthy_most_are_not():
    detectors = ProbeDetectors(ProbeConfig(patience=1))
    assert detectors.update(0, 0, _attention([0.9, 0.02, 0.8, 0.7, 0.9, 0.85, 0.6, 0.9])) == []
    [alert] = detectors.update(1, 0, _attention([0.9, 0.02, 0.8, 0.01, 0.05, 0.85, 0.03, np.nan]))
    assert "attn heads 1,3,4,6 of 8 (min entropy 0.010)" in alert.message
    assert alert.details == {"heads": {"attn": [1, 3, 4, 6]}} and alert.severity == "warning"
    [alert] = detectors.update(2, 0, _attention([0.01, 0.02, np.nan]))
    assert alert.severity == "critical"  # every judged head collapsed
    assert detectors.update(3, 0, _attention([np.nan, np.nan])) == []


def _ranks(ranks: dict[str, float], tokens: int = 32) -> ProbeStats:
    return ProbeStats(
        kinds=dict.fromkeys(ranks, "block"),
        effective_rank=ranks,
        block_tokens=dict.fromkeys(ranks, tokens),
    )


def test_rank_decaying_steadily_with_depth():
    detectors = ProbeDetectors(ProbeConfig(patience=1))
    decaying = {f"enc.layers.{i}": 20.0 * 0.7**i for i in range(6)}  # 20 -> 3.4
    [alert] = detectors.update(0, 0, _ranks(decaying))
    assert alert.details["variant"] == "depth" and alert.layers[-1] == "enc.layers.5"
    assert "x0.70 per block" in alert.message
    mild = {f"enc.layers.{i}": 20.0 * 0.9**i for i in range(6)}
    assert detectors.update(1, 0, _ranks(mild)) == []
    # two stacks are judged apart: a decoder starting high again is not a decay of the encoder
    stacks = {**{f"enc.{i}": 12.0 - i for i in range(3)}, **{f"dec.{i}": 4.0 for i in range(3)}}
    assert detectors.update(2, 0, _ranks(stacks)) == []


def test_rank_collapse_variants_have_their_own_cooldown_keys():
    detectors = ProbeDetectors(ProbeConfig(patience=1))
    collapsed = {f"enc.layers.{i}": r for i, r in enumerate([30.0, 8.0, 2.0, 1.05])}
    alerts = detectors.update(0, 0, _ranks(collapsed))
    assert [a.details["variant"] for a in alerts] == ["collapsed", "depth"]
    assert alerts[0].layers == ("enc.layers.3",) and alerts[0].severity == "critical"
    manager = AlertManager(cooldown_steps=10)
    assert len(manager.submit(alerts)) == 2 and manager.submit(alerts) == []
    assert detectors.update(1, 0, _ranks(collapsed, tokens=3)) == []  # too short to judge


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("dead_relu_threshold", 1.0, "in \\(0, 1\\)"),
        ("saturation_threshold", -0.1, "in \\(0, 1\\)"),
        ("sigmoid_tail", 0.5, "in \\(0, 0.5\\)"),
        ("tanh_tail", 0.0, "in \\(0, 1\\)"),
        ("attention_entropy_threshold", 0.0, "in \\(0, 1\\)"),
        ("attention_head_share", 1.5, "in \\(0, 1\\]"),
        ("attention_min_keys", 1, "an integer >= 2"),
        ("rank_collapse_threshold", 1.0, "a number > 1"),
        ("rank_decay_ratio", 2.0, "in \\(0, 1\\)"),
        ("rank_min_tokens", 1, "an integer >= 2"),
        ("max_samples", 0, "a positive integer"),
        ("patience", 1.5, "a positive integer"),
        ("histogram_bins", 0, "a positive integer"),
        ("dead_relu_min_rows", True, "a finite number"),
        ("patience", "3", "a finite number"),
        ("rank_collapse_threshold", float("inf"), "a finite number"),
        ("sigmoid_tail", float("nan"), "a finite number"),
    ],
)
def test_invalid_config_names_the_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ValueError, match=f"{field}={value!r} is not allowed: expected .*{allowed}"):
        ProbeConfig(**{field: value})


@pytest.mark.parametrize(("layers", "more"), [(5, ""), (6, "; +1 more"), (7, "; +2 more")])
def test_a_message_names_five_layers_then_counts_the_rest(layers, more):
    names = [f"l{i}" for i in range(layers)]
    stats = ProbeStats(
        kinds=dict.fromkeys(names, "relu"),
        dead_relu=dict.fromkeys(names, 0.9),
        relu_rows=dict.fromkeys(names, 64),
    )
    [alert] = ProbeDetectors(ProbeConfig(patience=1)).update(0, 0, stats)
    five = "; ".join(f"l{i}: 90% of units dead (zero on all 64 rows)" for i in range(5))
    assert alert.message == f"{five}{more} for 1+ probe steps"
    assert alert.layers == tuple(names) and alert.details == {"dead_share": stats.dead_relu}
