"""``stalled_layer``: fires on real runs where a layer's updates are lost, silent on healthy ones
(warm-up from 0, cosine decay to 0, zero-initialised and frozen layers, layer-wise LR decay)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors, StepContext
from lightning_gradflow.loop import GradFlow

NAMES = ["l0", "l1", "l2", "l3"]
CTX = StepContext(layer_names=NAMES, epoch=0)


def _record(step, ratios, norms=(1.0, 1.0, 1.0), weights=(10.0, 10.0, 10.0), measured=True):
    norms = np.asarray(norms, dtype=float)
    weights = np.asarray(weights, dtype=float)
    return StepRecord(
        step,
        0,
        norms,
        np.isfinite(norms),
        float(np.sqrt(np.nansum(norms**2))),
        1.0,
        weight_norms=weights if measured else None,
        weight_rms=weights / 10,
        update_ratios=np.asarray(ratios, dtype=float) if measured else None,
    )


def _feed(records, config=None):
    detectors = GradientDetectors(config or DetectorConfig())
    return [a for r in records for a in detectors.update(r, CTX) if a.kind == "stalled_layer"]


def test_a_layer_that_does_not_move_while_the_others_do_after_patience_logged_steps():
    records = [_record(s, [0.0, 1e-3, 2e-3], measured=s % 2 == 0) for s in range(12)]
    alerts = _feed(records)
    assert [a.step for a in alerts] == [8, 10]  # the 5th and 6th measured steps
    alert = alerts[0]
    assert alert.layers == ("l0",) and alert.severity == "warning"
    assert (alert.value, alert.threshold) == (0.0, 1e-7)
    assert alert.details["reference_layer"] == "l2" and alert.details["reference_ratio"] == 2e-3
    assert alert.message == (
        "stalled: 1 layer(s) get a gradient but their weights do not move: l0 (||Δθ||/||θ|| = 0 "
        "at l0, while l2 moves by 0.002 with a gradient at most 10x larger relative to its "
        "weights) for 5+ logged steps"
    )
    assert "learning rate of its parameter group" in alert.hint


def test_the_bound_is_relative_to_a_layer_that_moves():
    assert _feed([_record(s, [0.9e-10, 1e-3, 1e-3]) for s in range(10)]) != []
    assert _feed([_record(s, [1.1e-10, 1e-3, 1e-3]) for s in range(10)]) == []
    # nothing moves visibly (>= 1e-5): a learning rate near 0 for everyone
    assert _feed([_record(s, [0.0, 9e-6, 9e-6]) for s in range(10)]) == []
    config = DetectorConfig(stalled_ratio=1e-3, stalled_patience=2)
    records = [_record(s, [0.9e-6, 1e-3, 1e-3]) for s in range(3)]
    assert [a.step for a in _feed(records, config)] == [1, 2]


def test_a_gradient_far_smaller_than_the_movers_explains_a_tiny_update():
    norms = (1e-3, 1.0, 1.0)  # l0's gradient, relative to its weights, is 1000x smaller
    assert _feed([_record(s, [0.0, 1e-3, 1e-3], norms=norms) for s in range(10)]) == []
    norms = (0.2, 1.0, 1.0)  # within 10x: no optimizer explains a zero update
    assert _feed([_record(s, [0.0, 1e-3, 1e-3], norms=norms) for s in range(10)]) != []


def test_layers_without_a_usable_gradient_or_with_near_zero_weights_are_not_judged():
    for norms, weights in [
        ((np.nan, 1.0, 1.0), (10.0, 10.0, 10.0)),  # no gradient (frozen, another optimizer's)
        ((0.0, 1.0, 1.0), (10.0, 10.0, 10.0)),  # exactly zero gradient
        ((1.0, 1.0, 1.0), (1e-4, 10.0, 10.0)),  # weight RMS 1e-5 < weight_rms_floor
    ]:
        records = [_record(s, [0.0, 1e-3, 1e-3], norms=norms, weights=weights) for s in range(10)]
        assert _feed(records) == []


def test_streaks_survive_a_checkpoint():
    detectors = GradientDetectors()
    for step in range(4):
        assert detectors.update(_record(step, [0.0, 1e-3, 1e-3]), CTX) == []
    state = detectors.state_dict()
    restored = GradientDetectors()
    restored.load_state_dict(state)
    [alert] = restored.update(_record(4, [0.0, 1e-3, 1e-3]), CTX)
    assert alert.kind == "stalled_layer"


# --- real runs: a plain PyTorch loop, every step logged (so every update is measured) ----------


def _mlp(zero_head: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    if zero_head:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


def _groups(net: nn.Sequential, lrs: dict[int, float]) -> list[dict]:
    """One parameter group per Linear layer; ``lrs`` overrides the learning rate of some."""
    return [
        {"params": list(layer.parameters()), **({"lr": lrs[i]} if i in lrs else {})}
        for i, layer in enumerate(net)
        if isinstance(layer, nn.Linear)
    ]


def _train(net, optimizer, steps=80, schedule=None):
    torch.manual_seed(1)
    x = torch.randn(512, 8)
    y = 2 * x[:, :1] + x[:, 1:2].sin() + 0.1 * torch.randn(512, 1)
    scheduler = schedule(optimizer) if schedule else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with GradFlow(
            net,
            log_every_n_steps=1,
            histogram_every_n_steps=None,
            plot_every_n_steps=None,
            probe_every_n_steps=None,
        ) as monitor:
            for step in range(steps):
                i = (step * 32) % len(x)
                loss = nn.functional.mse_loss(net(x[i : i + 32]), y[i : i + 32])
                loss.backward()
                monitor.step(optimizer, loss)
                optimizer.zero_grad()
                if scheduler is not None:
                    scheduler.step()
    return monitor


@pytest.mark.parametrize(
    ("lost", "make"),
    [
        ("0", lambda n: torch.optim.Adam(_groups(n, {0: 1e-12}), lr=1e-3)),
        ("2", lambda n: torch.optim.SGD(_groups(n, {2: 0.0}), lr=0.01, momentum=0.9)),
        ("4", lambda n: torch.optim.AdamW(_groups(n, {4: 0.0}), lr=1e-3)),
    ],
    ids=["adam_first_layer_lr_1e-12", "sgd_momentum_middle_layer_lr_0", "adamw_head_lr_0"],
)
def test_fires_on_a_parameter_group_whose_learning_rate_is_lost(lost, make):
    net = _mlp()
    monitor = _train(net, make(net))
    kinds = {a.kind for a in monitor.alerts}
    assert kinds == {"stalled_layer"}, [a.format() for a in monitor.alerts]
    assert monitor.alerts[0].step == 4  # the 5th step: every step is logged
    assert all(a.layers == (lost,) for a in monitor.alerts)


def _warm_up_from_zero(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / 20))


def _cosine_to_zero(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=80)


@pytest.mark.parametrize(
    ("make", "schedule", "zero_head"),
    [
        (lambda n: torch.optim.Adam(n.parameters(), lr=1e-3), None, False),
        (lambda n: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9), None, False),
        (lambda n: torch.optim.Adam(n.parameters(), lr=3e-2), _warm_up_from_zero, False),
        (lambda n: torch.optim.Adam(n.parameters(), lr=1e-3), _cosine_to_zero, False),
        (lambda n: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9), _cosine_to_zero, False),
        (lambda n: torch.optim.Adam(n.parameters(), lr=1e-3), None, True),
        (lambda n: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9), None, True),
        # layer-wise learning-rate decay spanning 1e-3 (the largest in use), then cosine to 0
        (lambda n: torch.optim.Adam(_groups(n, {0: 1e-6, 2: 3e-5})), _cosine_to_zero, False),
    ],
    ids=["adam", "sgd", "warm_up_from_0", "adam_cosine_to_0", "sgd_cosine_to_0", "adam_zero_head",
         "sgd_zero_head", "layer_wise_decay_cosine_to_0"],
)  # fmt: skip
def test_silent_on_healthy_runs(make, schedule, zero_head):
    net = _mlp(zero_head)
    monitor = _train(net, make(net), schedule=schedule)
    assert monitor.alerts == [], [a.format() for a in monitor.alerts]


def test_layers_frozen_on_purpose_have_no_gradient_and_are_not_judged():
    net = _mlp()
    net[0].requires_grad_(False)
    net[2].requires_grad_(False)
    monitor = _train(net, torch.optim.Adam(net.parameters(), lr=1e-3))
    assert monitor.alerts == []


def _stalled_steps(records, config=None):
    return [a.step for a in _feed(records, config)]


@pytest.mark.parametrize(("mover", "fires"), [(0.99e-5, False), (1e-5, True), (1.01e-5, True)])
def test_a_layer_moves_visibly_from_1e_5(mover, fires):
    records = [_record(s, [0.0, mover, 0.0]) for s in range(5)]
    assert _stalled_steps(records) == ([4] if fires else [])


@pytest.mark.parametrize(("grad", "fires"), [(9.9, True), (10.0, True), (10.1, False)])
def test_a_mover_counts_with_a_gradient_up_to_ten_times_larger(grad, fires):
    """Relative to the weights: l0 has ||g||/||θ|| = 0.1, the mover l1 grad/10."""
    records = [_record(s, [0.0, 1e-3, 0.0], norms=(1.0, grad, 1.0), weights=(10.0, 10.0, 10.0))
               for s in range(5)]  # fmt: skip
    assert bool(_stalled_steps(records)) == fires


def test_the_gradient_span_is_relative_to_the_weights():
    """l0's gradient equals the mover's, but its weights are 100x larger: relative to them its
    gradient is 100x smaller, which explains a tiny update (not stalled)."""
    records = [_record(s, [0.0, 1e-3, 1e-3], weights=(1000.0, 10.0, 10.0)) for s in range(5)]
    assert _stalled_steps(records) == []


@pytest.mark.parametrize(("scale", "fires"), [(0.99, True), (1.0, False)])
def test_stalled_below_1e_7_times_the_movers_ratio(scale, fires):
    reference = 2e-3
    ratio = DetectorConfig().stalled_ratio * reference * scale
    records = [_record(s, [ratio, reference, reference]) for s in range(5)]
    assert bool(_stalled_steps(records)) == fires


@pytest.mark.parametrize(("rms", "judged"), [(0.99e-4, False), (1e-4, True)])
def test_weights_at_the_rms_floor_are_judged(rms, judged):
    records = [
        StepRecord(s, 0, np.ones(3), np.ones(3, bool), 1.7, 1.0, weight_norms=np.full(3, 10.0),
                   weight_rms=np.array([rms, 1.0, 1.0]), update_ratios=np.array([0.0, 1e-3, 1e-3]))
        for s in range(5)
    ]  # fmt: skip
    assert bool(_stalled_steps(records)) == judged


def test_without_weight_rms_every_layer_is_judged():
    records = [
        StepRecord(s, 0, np.ones(3), np.ones(3, bool), 1.7, 1.0, weight_norms=np.full(3, 10.0),
                   update_ratios=np.array([0.0, 1e-3, 1e-3]))
        for s in range(5)
    ]  # fmt: skip
    assert _stalled_steps(records) == [4]


def test_a_zero_gradient_is_not_judged_even_when_momentum_moves_the_layer():
    """l0 and l1 have a zero gradient; SGD momentum still moves l1: neither is judged, so l1 is
    no reference for l0."""
    records = [_record(s, [0.0, 1e-3, 0.0], norms=(0.0, 0.0, 1e-9)) for s in range(5)]
    assert _stalled_steps(records) == []


def test_one_moving_step_starts_the_count_of_five_again():
    ratios = lambda s: [1e-3 if s == 3 else 0.0, 1e-3, 1e-3]  # noqa: E731
    assert _stalled_steps([_record(s, ratios(s)) for s in range(10)])[:1] == [8]


def test_zero_weights_and_gradients_raise_no_numpy_warning():
    records = [_record(s, [0.0, 1e-3, 0.0], norms=(0.0, 1.0, 1.0), weights=(0.0, 10.0, 0.0))
               for s in range(5)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _stalled_steps(records) == []


def test_the_message_names_the_layer_furthest_below_its_own_mover():
    """l0 is compared with l2 only (l3's gradient is 100x l0's), l1 with l3 as well:
    l1 sits 2e-8 below its mover l3, l0 5e-8 below l2, so l1 is the one named."""
    records = [
        _record(s, [5e-11, 2e-9, 1e-3, 1e-1], norms=(1.0, 10.0, 10.0, 100.0),
                weights=(10.0,) * 4)
        for s in range(5)
    ]  # fmt: skip
    [alert] = _feed(records)
    assert alert.layers == ("l0", "l1") and alert.value == pytest.approx(2e-8)
    assert alert.details["reference_layer"] == "l3" and alert.details["reference_ratio"] == 0.1
    assert "= 2e-09 at l1, while l3 moves by 0.1" in alert.message
    assert alert.details["update_ratios"] == {"l0": 5e-11, "l1": 2e-9} and alert.epoch == 0
