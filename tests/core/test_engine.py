"""The engine driven directly, step by step: its summaries, its saved state, warnings, parameters
that arrive mid-fit, where a NaN began (once per cooldown), probe steps (names, epoch, the
cross-rank sum above one process), linear-value histograms and ``release``."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.alerts import Alert, GradientPathologyError
from lightning_gradflow.core.collector import StepRecord
from lightning_gradflow.core.sinks import GradFlowWarning, Sink
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo
from lightning_gradflow.writers import flow_heatmap
from tests.helpers.threaded import run_on_threaded_ranks

QUIET = dict(histogram_every_n_steps=None, plot_every_n_steps=None, probe_every_n_steps=None)


class Recorder(Sink):
    """What the engine hands its outputs, by step."""

    def __init__(self) -> None:
        self.metrics: dict[Any, dict[str, float]] = {}
        self.hists: dict[Any, Any] = {}
        self.images: list[tuple[int, str, Any]] = []
        self.losses: dict[int, float] = {}
        self.summary: dict[str, float] | None = None

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        self.metrics.setdefault(step, {}).update(metrics)

    def histograms(self, step: int, histograms: Any) -> None:
        if histograms is None:
            self.hists[step] = None
        else:
            self.hists.setdefault(step, {}).update(histograms)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self.images.append((step, tag, image))

    def record(self, record: StepRecord) -> None:
        self.losses[record.step] = record.loss

    def finish(self, summary: Mapping[str, float]) -> None:
        self.summary = dict(summary)


class Sqrt(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)


def _wrapped(*modules: nn.Module) -> nn.Module:
    """``modules`` under an ``_orig_mod`` child, as ``torch.compile`` names them."""
    model = nn.Module()
    model._orig_mod = nn.Sequential(*modules)
    model.forward = model._orig_mod.forward
    return model


def _engine(model: nn.Module, sinks: list[Sink] = (), **settings: Any) -> GradFlowEngine:
    engine = GradFlowEngine(**{"log_every_n_steps": 1, **QUIET, **settings})
    engine.start(RunContext(sinks=list(sinks)))
    engine.watch(model)
    return engine


def _step(
    engine: GradFlowEngine,
    model: nn.Module,
    step: int,
    x: torch.Tensor,
    rerun: Callable[[], object] | None = None,
    info: StepInfo | None = None,
) -> str:
    """One batch; the optimizer never updates, so a NaN step leaves the weights finite."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine.forward_start(step, x)
    loss = model(x).pow(2).mean()
    engine.loss(loss)
    loss.backward()
    engine.before_optimizer_step(model, optimizer, step, rerun=rerun)
    model.zero_grad()
    engine.after_optimizer_step()
    return engine.end_batch(info or StepInfo(step))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _x(step: int, nan: bool = False) -> torch.Tensor:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
    if nan:
        x[0, 0] = float("nan")
    return x


def test_the_run_summary_flattens_the_gradient_summary_and_the_announced_alerts():
    model = _mlp()
    engine = _engine(model)
    for step in range(4):
        _step(engine, model, step, _x(step, nan=step == 1))
    summary = engine.gradient_summary()
    assert summary["alert_counts"] == {"nonfinite": 1}
    assert summary["first_last_ratio"] is not None and summary["gamma"] is not None
    flat = engine.run_summary()
    assert flat == {
        "grad_flow/nonfinite_grad_steps": 1.0,
        "grad_flow/first_last_ratio": summary["first_last_ratio"],
        "grad_flow/gamma": summary["gamma"],
        "grad_flow/dead_layers": 0.0,
        "alerts/announced/nonfinite": 1.0,
    }
    assert isinstance(flat["alerts/announced/nonfinite"], float)


def test_a_restored_engine_continues_the_clocks_and_the_flow_history():
    model = _mlp()
    engine = _engine(model)
    for step in range(3):
        _step(engine, model, step, _x(step))
    state = engine.state_dict()
    assert state["optimizer_steps"] == {"0": 3} and state["history"]["steps"] == [0, 1, 2]
    restored = _engine(_mlp())
    restored.load_state_dict(state)
    assert restored.optimizer_steps == {0: 3}
    assert restored.state_dict()["history"] == state["history"]
    # a checkpoint of an older version holds neither clocks nor history nor summary
    old = _engine(_mlp())
    old.load_state_dict({k: state[k] for k in ("detectors", "probe_detectors", "alerts")})
    assert old.optimizer_steps == {} and old.state_dict()["history"]["steps"] == []


def test_a_model_without_parameters_is_warned_about_once_on_rank_zero_only():
    model = nn.ReLU()
    message = "^GradFlowMonitor: the model has no parameters; nothing to monitor.$"
    engine = GradFlowEngine(**QUIET)
    with pytest.warns(GradFlowWarning, match=message) as caught:
        for _ in range(2):  # two fits, one warning: the key outlives a fit
            engine.start(RunContext())
            engine.watch(model)
            engine.loss(model(torch.ones(2)).sum())
            engine.release()
    assert len([w for w in caught if issubclass(w.category, GradFlowWarning)]) == 1
    other = GradFlowEngine(**QUIET)
    other.start(RunContext(is_rank_zero=False))
    other.watch(model)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        other.loss(model(torch.ones(2)).sum())
    assert seen == []


class Growing(nn.Module):
    """``body``; from step 2 on also ``pre`` (runs first) and ``post``, registered after it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)

    def grow(self) -> None:
        self.pre = nn.Linear(4, 4)
        self.post = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pre"):
            return self.post(self.body(self.pre(x)))
        return self.body(x)


def test_new_parameters_are_named_in_one_warning_and_sorted_by_the_next_forward():
    torch.manual_seed(0)
    model = Growing()
    stray = nn.Parameter(torch.ones(1))  # in the optimizer, not in the model
    engine = _engine(model)
    for step in range(4):
        if step == 2:
            model.grow()
        params = [*model.parameters(), stray]
        optimizer = torch.optim.SGD(params, lr=0.0)
        x = _x(step)
        engine.forward_start(step, x)
        loss = model(x).pow(2).mean()
        if step >= 2:
            loss = loss + stray.sum()
        engine.loss(loss)
        loss.backward()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            engine.before_optimizer_step(model, optimizer, step)
        texts = [str(w.message) for w in seen if issubclass(w.category, GradFlowWarning)]
        if step == 2:
            assert texts == [
                "GradFlowMonitor: new parameters at step 2; now monitoring 3 layers "
                "(new: pre, post); 1 optimizer parameter(s) are not part of the model and "
                "are not monitored"
            ]
        else:
            assert texts == []
        for p in params:
            p.grad = None
        engine.end_batch(StepInfo(step))
    assert [layer.name for layer in engine.layers] == ["pre", "body", "post"]


@pytest.mark.parametrize(
    ("nan_at", "actions"), [(1, ["warn", "warn", "stop"]), (None, ["warn"] * 3)]
)
@pytest.mark.parametrize("log_every", [50, 2])  # step 2 logs nothing / is itself judged
@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_a_stop_decided_on_the_steps_judged_at_new_parameters_stops_that_batch(
    nan_at, actions, log_every
):
    """Step 1 waits for its judgement; the module added at step 2 has it judged early, and
    its stop is the answer of step 2's batch, whether that batch then judges steps of its own
    (which call for nothing) or not."""
    torch.manual_seed(0)
    model = Growing()
    engine = _engine(model, on_alert="stop", log_every_n_steps=log_every)
    decided = []
    for step in range(3):
        if step == 2:
            model.grow()
        decided.append(_step(engine, model, step, _x(step, nan=step == nan_at)))
    assert decided == actions
    expected = [("nonfinite", 1)] if nan_at else []
    assert [(a.kind, a.step) for a in engine.alerts] == expected


def _negative_at(step: int, bad: set[int]) -> torch.Tensor:
    x = torch.rand(8, 2, generator=torch.Generator().manual_seed(step)) + 0.5
    if step in bad:
        x[0, 0] = -1.0  # sqrt gives NaN
    return x


def test_the_origin_of_a_nan_is_looked_for_once_per_cooldown():
    torch.manual_seed(0)
    model = nn.Sequential(Sqrt(), nn.Linear(2, 1))
    engine = _engine(model, detectors={"cooldown_steps": 3})
    reruns: set[int] = set()
    for step in range(8):
        x = _negative_at(step, set(range(8)))

        def rerun(step: int = step, x: torch.Tensor = x) -> torch.Tensor:
            reruns.add(step)
            return model(x)

        _step(engine, model, step, x, rerun=rerun)
    assert sorted(reruns) == [0, 3, 6]  # 3 steps after the last one, not 2
    assert [a.step for a in engine.alerts] == [0, 3, 6]
    assert all(a.details["origin_op"] == "sqrt" for a in engine.alerts)


def test_an_alert_names_the_origin_found_within_its_cooldown_only():
    """Cooldown 1: step 1 (not re-run) gets no origin, step 2 (re-run) its own; names are
    those of the model without the compile wrapper; the detector's details are kept."""
    torch.manual_seed(0)
    model = _wrapped(Sqrt(), nn.Linear(2, 1))
    engine = _engine(model, detectors={"cooldown_steps": 1}, log_every_n_steps=50)
    for step in range(3):
        x = _negative_at(step, {1, 2})
        _step(engine, model, step, x, rerun=(lambda x=x: model(x)) if step == 2 else None)
    engine.finish(StepInfo(2))
    first, second = engine.alerts
    assert (first.kind, first.step, second.kind, second.step) == ("nonfinite", 1, "nonfinite", 2)
    assert "origin_module" not in first.details and "first non-finite" not in first.message
    assert second.details["origin_module"] == "0" and second.details["origin_op"] == "sqrt"
    assert second.details["loss_nonfinite"] is True
    assert second.message.endswith(
        "; first non-finite value in the forward pass of step 2: `0` (Sqrt), in op `sqrt`"
    )


def test_a_nan_in_the_batch_itself_is_named_as_such():
    model = _mlp()
    engine = _engine(model)
    x = _x(0, nan=True)
    _step(engine, model, 0, x, rerun=lambda: model(x))
    [alert] = engine.alerts
    assert alert.details["origin_module"] == ""
    assert "the input batch itself (NaN/Inf in the data)" in alert.message


def test_a_probe_step_reports_under_clean_names_with_the_epoch():
    model = _wrapped(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model._orig_mod[0].weight.zero_()
        model._orig_mod[0].bias.fill_(-1.0)  # every ReLU unit dead
    recorder = Recorder()
    engine = _engine(
        model,
        [recorder],
        probe_every_n_steps=1,
        histogram_every_n_steps=1,
        probes={"patience": 1},
    )
    _step(engine, model, 0, torch.randn(32, 4), info=StepInfo(0, epoch=4))
    [alert] = [a for a in engine.alerts if a.kind == "dead_relu"]
    assert (alert.step, alert.epoch, alert.layers) == (0, 4, ("1",))
    assert recorder.metrics[0]["probe/dead_relu/1"] == 1.0
    probe_hists = [k for k in recorder.hists[0] if k.startswith("probe/")]
    assert "probe/unit_activity/1" in probe_hists
    assert not [k for k in recorder.metrics[0] if "_orig_mod" in k]
    assert not [k for k in probe_hists if "_orig_mod" in k]


def _on_a_rank(rank: int, world_size: int, end: str) -> tuple[float, float]:
    """ReLU unit 0 is dead on rank 1's batch, unit 1 on rank 0's: half dead on each rank,
    none on both together. The losses: 0.5 on rank 0, 2.0 on rank 1. Returns the dead share
    and the loss the outputs get."""
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.zero_()
    recorder = Recorder()
    engine = GradFlowEngine(log_every_n_steps=1, **{**QUIET, "probe_every_n_steps": 1})
    engine.start(RunContext(sinks=[recorder], world_size=world_size))
    engine.watch(model)
    x = torch.full((4, 1), 1.0 if rank == 0 else -2.0)
    engine.forward_start(0, x)
    loss = model(x).pow(2).mean()
    engine.loss(loss)
    loss.backward()
    engine.before_optimizer_step(model, torch.optim.SGD(model.parameters(), lr=0.0), 0)
    if end == "batch":
        engine.end_batch(StepInfo(0))
    else:  # the fit ends (or dies) before the batch does
        engine.finish(StepInfo(0), interrupted=end == "interrupted")
    return recorder.metrics[0]["probe/dead_relu/1"], recorder.losses[0]


@pytest.mark.parametrize(
    ("world_size", "end", "shares", "losses"),
    [
        (2, "batch", [0.0, 0.0], [1.25, 1.25]),
        (2, "finish", [0.0, 0.0], [1.25, 1.25]),
        (2, "interrupted", [0.5, 0.5], [0.5, 2.0]),  # nothing talks to the other ranks
        (1, "batch", [0.5, 0.5], None),  # one process: nothing to sum
    ],
)
def test_probe_statistics_and_losses_are_summed_over_ranks_unless_interrupted(
    world_size: int, end: str, shares: list[float], losses: list[float] | None
):
    results = run_on_threaded_ranks(_on_a_rank, world_size, end)
    assert [share for share, _ in results] == shares
    if losses is not None:
        assert [loss for _, loss in results] == pytest.approx(losses)


class Branches(nn.Module):
    """Three one-output layers, each fed its own input: their gradients are those inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 1, bias=False)
        self.b = nn.Linear(2, 1, bias=False)
        self.c = nn.Linear(2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x[:, 0]) + self.b(x[:, 1]) + self.c(x[:, 2])


def test_linear_histograms_span_each_layers_largest_gradient_magnitude():
    """Gradients (1, -3), (0.5, 0.125) and (0, 0): the last, all zero, has no value range."""
    model = Branches()
    recorder = Recorder()
    engine = _engine(model, [recorder], histogram_every_n_steps=1, linear_histogram_bins=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine.forward_start(0)
    loss = model(torch.tensor([[[1.0, -3.0], [0.5, 0.125], [0.0, 0.0]]])).sum()
    engine.loss(loss)
    loss.backward()
    engine.before_optimizer_step(model, optimizer, 0)
    engine.end_batch(StepInfo(0))
    hists = recorder.hists[0]
    assert sorted(k for k in hists if k.startswith("grad_values/")) == [
        "grad_values/00.a",
        "grad_values/01.b",
    ]
    counts, edges = hists["grad_values/00.a"]
    np.testing.assert_allclose(edges, [-3.0, -1.5, 0.0, 1.5, 3.0])
    np.testing.assert_array_equal(counts, [1, 0, 1, 0])
    counts, edges = hists["grad_values/01.b"]
    np.testing.assert_allclose(edges, [-0.5, -0.25, 0.0, 0.25, 0.5])
    np.testing.assert_array_equal(counts, [0, 0, 1, 1])


def test_probe_patience_counts_probe_steps_only():
    """Patience 2, a probe every 2 steps, every ReLU dead: the alert comes at the second probe
    step (2), the steps between probes neither advance nor reset the streak."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)
    engine = _engine(model, probe_every_n_steps=2, probes={"patience": 2})
    for step in range(5):
        _step(engine, model, step, torch.randn(32, 4))
        if step < 2:
            assert [a.kind for a in engine.alerts] == []
    assert [(a.kind, a.step) for a in engine.alerts] == [("dead_relu", 2)]


def test_release_is_idempotent_and_drops_a_probe_step_not_yet_reported():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    recorder = Recorder()
    engine = _engine(model, [recorder], probe_every_n_steps=1)
    engine.forward_start(0)
    model(torch.randn(8, 4))
    engine.release()
    engine.release()
    assert engine.end_batch(StepInfo(0)) == "warn"
    assert recorder.metrics == {}


@pytest.mark.parametrize(
    ("mine", "loops", "expected"), [(10, 20, 10), (None, 20, 20), (None, None, 50)]
)
def test_the_log_interval_is_the_engines_else_the_loops_else_50(mine, loops, expected):
    engine = GradFlowEngine(log_every_n_steps=mine, **QUIET)
    engine.start(RunContext(), log_every_n_steps=loops)
    assert engine.log_every == engine.check_every == expected


class Started(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.optimizers: list[int] = []

    def start(self, num_optimizers: int) -> None:
        self.optimizers.append(num_optimizers)


@pytest.mark.parametrize("rank_zero", [True, False])
def test_only_rank_zero_writes(rank_zero: bool):
    model = _mlp()
    sink = Started()
    engine = GradFlowEngine(log_every_n_steps=1, **QUIET)
    engine.start(RunContext(sinks=[sink], is_rank_zero=rank_zero))
    engine.watch(model)
    _step(engine, model, 0, _x(0))
    assert sink.optimizers == ([1] if rank_zero else [])
    assert (0 in sink.metrics) is rank_zero


@pytest.mark.parametrize(
    ("global_step", "optimizers", "restored", "clocks"),
    [
        (11, 2, None, {0: 5, 1: 5}),  # each optimizer's share of an old checkpoint's step
        (7, 1, None, {0: 7}),
        (0, 2, None, {}),
        (10, 1, {"0": 3}, {0: 3}),  # restored clocks win
    ],
)
def test_watch_starts_the_optimizer_clocks_of_a_checkpoint_without_them(
    global_step: int, optimizers: int, restored: dict[str, int] | None, clocks: dict[int, int]
):
    engine = GradFlowEngine(**QUIET)
    engine.start(RunContext())
    if restored is not None:
        state = engine.state_dict()
        engine.load_state_dict({**state, "optimizer_steps": restored})
    engine.watch(_mlp(), global_step=global_step, num_optimizers=optimizers)
    assert engine.optimizer_steps == clocks
    assert all(type(n) is int for n in engine.optimizer_steps.values())


def test_a_closure_evaluated_again_is_one_step():
    """LBFGS calls the closure (and so the hook) again for the same step."""
    model = _mlp()
    recorder = Recorder()
    engine = _engine(model, [recorder])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine.forward_start(0)
    for scale in (1.0, 3.0):
        loss = model(_x(0)).pow(2).mean() * scale
        engine.loss(loss)
        loss.backward()
        engine.before_optimizer_step(model, optimizer, 0)
    engine.end_batch(StepInfo(0))
    engine.finish(StepInfo(0))
    assert engine.optimizer_steps == {0: 1}
    assert list(recorder.losses) == [0]


def test_the_last_step_of_a_run_of_known_length_is_logged():
    pytest.importorskip("matplotlib")
    model = _mlp()
    recorder = Recorder()
    engine = GradFlowEngine(
        log_every_n_steps=3,
        histogram_every_n_steps=3,
        plot_every_n_steps=3,
        probe_every_n_steps=None,
    )
    engine.start(RunContext(sinks=[recorder], total_steps=5))
    engine.watch(model)
    for step in range(5):
        _step(engine, model, step, _x(step))
    assert sorted(recorder.metrics) == sorted(recorder.hists) == [0, 3, 4]
    pictures = [step for step, tag, _ in recorder.images if tag == "grad_flow/picture"]
    assert pictures == [0, 3, 4]
    engine.finish(StepInfo(4))
    assert recorder.summary == engine.run_summary()
    assert recorder.summary["grad_flow/nonfinite_grad_steps"] == 0.0


def test_finish_raises_for_a_probe_alert_of_a_step_never_ended():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)
    recorder = Recorder()
    engine = _engine(
        model,
        [recorder],
        on_alert="raise",
        log_every_n_steps=50,
        probe_every_n_steps=1,
        probes={"patience": 1},
    )
    engine.forward_start(0)
    loss = model(torch.randn(32, 4)).pow(2).mean()
    engine.loss(loss)
    loss.backward()
    engine.before_optimizer_step(model, torch.optim.SGD(model.parameters(), lr=0.0), 0)
    with pytest.raises(GradientPathologyError) as raised:
        engine.finish(StepInfo(0, epoch=2))
    assert [(a.kind, a.step, a.epoch) for a in raised.value.alerts] == [("dead_relu", 0, 2)]


def test_a_model_without_parameters_gets_no_picture():
    pytest.importorskip("matplotlib")
    model = nn.ReLU()
    recorder = Recorder()
    engine = _engine(model, [recorder], plot_every_n_steps=1)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)  # none of the model's
    with pytest.warns(GradFlowWarning, match="no parameters"):
        for step in range(2):
            engine.forward_start(step)
            engine.loss(model(torch.ones(2)).sum())
            engine.before_optimizer_step(model, optimizer, step)
            engine.end_batch(StepInfo(step))
        engine.finish(StepInfo(1))
    assert recorder.images == []


def test_without_matplotlib_a_warning_replaces_the_picture(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    model = _mlp()
    recorder = Recorder()
    engine = _engine(model, [recorder], plot_every_n_steps=1)
    message = "^GradFlowMonitor: install matplotlib to log the gradient-flow picture.$"
    with pytest.warns(GradFlowWarning, match=message) as caught:
        for step in range(2):
            _step(engine, model, step, _x(step))
    assert len([w for w in caught if issubclass(w.category, GradFlowWarning)]) == 1
    assert recorder.images == []


def test_the_heatmap_gets_the_history_and_the_fixed_range(monkeypatch):
    pytest.importorskip("matplotlib")
    calls = []

    def render(names, steps, log10_norms, value_range=None):
        calls.append((list(names), list(steps), value_range))
        return np.full((2, 2, 3), len(calls), dtype=np.uint8)

    monkeypatch.setattr(flow_heatmap, "render_flow_heatmap", render)
    model = _mlp()
    recorder = Recorder()
    engine = _engine(model, [recorder], plot_every_n_steps=2, flow_log10_range=(-6, 0))
    for step in range(3):
        _step(engine, model, step, _x(step))
    assert calls == [(["0", "2"], [0], (-6.0, 0.0)), (["0", "2"], [0, 1, 2], (-6.0, 0.0))]
    heatmaps = [(step, image[0, 0, 0]) for step, tag, image in recorder.images if "heatmap" in tag]
    assert heatmaps == [(0, 1), (2, 2)]


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_a_warn_only_policy_answers_warn_on_alerting_steps():
    model = _mlp()
    engine = _engine(model)  # on_alert="warn": nothing may interrupt
    assert _step(engine, model, 0, _x(0, nan=True)) == "warn"
    assert [a.kind for a in engine.alerts] == ["nonfinite"]


def _alert(kind: str) -> Alert:
    return Alert(kind, "critical", 3, None, ("l0",), 1.0, 0.5, f"{kind} seen", "a fix")


def test_a_raise_carries_the_alerts_that_asked_for_it_not_the_others():
    engine = _engine(_mlp(), actions={"nonfinite": "raise", "exploding": "warn"})
    raising, warning = _alert("nonfinite"), _alert("exploding")
    with pytest.raises(GradientPathologyError) as error:
        engine._act([warning, raising])
    assert error.value.alerts == [raising]


def test_a_probe_alert_of_a_logged_step_is_handled_with_it():
    """A probe alert due on a step that also judges gradients is announced there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight.mul_(60.0)  # every sigmoid unit saturated
    engine = _engine(
        model,
        probe_every_n_steps=1,
        probes={"patience": 1},
        on_alert="stop",
    )
    assert _step(engine, model, 0, _x(0) * 5) == "stop"
    assert "saturation" in [a.kind for a in engine.alerts]


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_a_stop_names_the_kinds_that_asked_for_it():
    model = _mlp()
    engine = _engine(model, actions={"nonfinite": "stop"})
    assert _step(engine, model, 0, _x(0, nan=True)) == "stop"
    assert engine.stop_kinds == ["nonfinite"]


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_the_batchs_amp_scaler_reaches_the_detectors():
    """Under a float16 GradScaler a NaN step is skipped by the scaler: not alerted at once."""
    model = _mlp()
    engine = _engine(model)
    _step(engine, model, 0, _x(0, nan=True), info=StepInfo(0, amp_scaler=True))
    assert engine.alerts == []
    _step(engine, model, 1, _x(1, nan=True))
    assert [a.kind for a in engine.alerts] == ["nonfinite"]


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_the_flow_history_marks_a_nan_gradient_as_non_finite_not_missing():
    from lightning_gradflow.core.flow_history import NONFINITE_LOG10

    model = _mlp()
    engine = _engine(model)
    _step(engine, model, 0, _x(0, nan=True))
    assert np.all(engine._history.log10_norms()[:, -1] == NONFINITE_LOG10)


def test_with_two_optimizers_each_ones_scalars_are_named_after_it():
    model = _mlp()
    recorder = Recorder()
    engine = _engine(model, [recorder])
    first = torch.optim.SGD(model[0].parameters(), lr=0.0)
    second = torch.optim.SGD(model[2].parameters(), lr=0.0)
    engine.forward_start(0, _x(0))
    model(_x(0)).pow(2).mean().backward()
    engine.before_optimizer_step(model, first, 0, optimizer_index=0)
    engine.before_optimizer_step(model, second, 0, optimizer_index=1)
    engine.end_batch(StepInfo(0))
    names = set(recorder.metrics[0])
    assert "grad_norm/total_optimizer0" in names and "grad_norm/total_optimizer1" in names
    assert "grad_norm/total" not in names


@pytest.mark.parametrize(
    ("hist_every", "plot_every", "hist_steps", "picture_steps"),
    [
        ("auto", "auto", [0, 7], [0, 7]),  # "auto" (every step here) waits for the budget
        (2, 2, [0, 2, 4, 6, 7], [0, 2, 4, 6, 7]),  # a fixed interval does not
        ("auto", 2, [0, 7], [0, 2, 4, 6, 7]),
        (2, "auto", [0, 2, 4, 6, 7], [0, 7]),
    ],
)
def test_an_exhausted_budget_postpones_auto_outputs_only_and_never_the_ends(
    hist_every, plot_every, hist_steps, picture_steps
):
    model = _mlp()
    recorder = Recorder()
    engine = GradFlowEngine(
        log_every_n_steps=1,
        histogram_every_n_steps=hist_every,
        plot_every_n_steps=plot_every,
        probe_every_n_steps=None,
    )
    engine.start(RunContext(sinks=[recorder], total_steps=8))
    engine.watch(model)
    engine._budget.allows = lambda: False  # every output so far took too long
    for step in range(8):
        _step(engine, model, step, _x(step))
    assert sorted(s for s, h in recorder.hists.items() if h) == hist_steps
    pictures = sorted({s for s, tag, _ in recorder.images if tag == "grad_flow/picture"})
    assert pictures == picture_steps


def _batch(engine: GradFlowEngine, model: nn.Module, optimizer, step: int, rerun=None) -> str:
    """One batch with the given optimizer (kept across steps)."""
    x = _x(step)
    engine.forward_start(step, x)
    model(x).pow(2).mean().backward()
    engine.before_optimizer_step(model, optimizer, step, rerun=rerun)
    optimizer.zero_grad()
    return engine.end_batch(StepInfo(step))


def test_each_output_is_written_at_its_own_step_not_a_later_one():
    """Scalars every 3, histograms every 2, pictures every 5, checks every 7: each step's
    outputs are out by the end of that batch."""
    model = _mlp()
    recorder = Recorder()
    engine = GradFlowEngine(
        log_every_n_steps=3,
        histogram_every_n_steps=2,
        plot_every_n_steps=5,
        probe_every_n_steps=None,
        check_every_n_steps=7,
    )
    engine.start(RunContext(sinks=[recorder]))
    engine.watch(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for step in range(11):
        _batch(engine, model, optimizer, step)
        done = range(step + 1)
        assert sorted(recorder.metrics) == [s for s in done if s % 3 == 0], step
        assert sorted(s for s, h in recorder.hists.items() if h) == [s for s in done if s % 2 == 0]
        pictures = sorted({s for s, tag, _ in recorder.images if tag == "grad_flow/picture"})
        assert pictures == [s for s in done if s % 5 == 0], step


@pytest.mark.parametrize("ratios", [False, True])
def test_logged_steps_carry_weight_norms_unless_turned_off(ratios: bool):
    """The update ratios need the weight norms, but asking for the ratios alone does not
    write the norms."""
    for on in (True, False):
        model = _mlp()
        recorder = Recorder()
        engine = _engine(model, [recorder], log_weight_norms=on, log_update_ratios=ratios)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        engine.forward_start(0, _x(0))
        model(_x(0)).pow(2).mean().backward()
        engine.before_optimizer_step(model, optimizer, 0)
        optimizer.step()
        engine.after_optimizer_step()
        engine.end_batch(StepInfo(0))
        assert any(k.startswith("weight_norm/") for k in recorder.metrics[0]) is on
        assert any(k.startswith("update_ratio_log10/") for k in recorder.metrics[0]) is ratios


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_without_locate_nan_origin_the_forward_is_never_re_run():
    torch.manual_seed(0)
    model = nn.Sequential(Sqrt(), nn.Linear(2, 1))  # the NaN begins inside: finding it re-runs
    engine = _engine(model, locate_nan_origin=False)
    calls = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x = _negative_at(0, {0})
    engine.forward_start(0, x)
    model(x).pow(2).mean().backward()
    engine.before_optimizer_step(model, optimizer, 0, rerun=lambda: calls.append(1))
    engine.end_batch(StepInfo(0))
    assert calls == [] and [a.kind for a in engine.alerts] == ["nonfinite"]


def test_block_granularity_and_histogram_bins_reach_the_collector():
    from lightning_gradflow.core.histograms import LogBins

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)),
        nn.Sequential(nn.Linear(4, 1)),
    )
    recorder = Recorder()
    bins = LogBins(low_exp=-3, high_exp=1, per_decade=1)
    engine = _engine(
        model, [recorder], granularity="block", histogram_every_n_steps=1, histogram_bins=bins
    )
    _step(engine, model, 0, _x(0))
    assert [layer.name for layer in engine.layers] == ["0", "1"]
    counts, edges = recorder.hists[0]["grad_log10_hist/00.0"]
    assert len(counts) == bins.num_buckets and len(edges) == bins.num_buckets + 1


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_a_parameter_appended_to_an_optimizers_group_is_monitored_from_then_on():
    torch.manual_seed(0)
    model = Growing()
    engine = _engine(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    _batch(engine, model, optimizer, 0)
    model.grow()
    optimizer.param_groups[0]["params"].extend([*model.pre.parameters(), *model.post.parameters()])
    _batch(engine, model, optimizer, 1)
    _batch(engine, model, optimizer, 2)
    assert [layer.name for layer in engine.layers] == ["pre", "body", "post"]


class AlertRecorder(Sink):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def alert(self, alert: Alert, count: int) -> None:
        self.seen.append((alert.kind, alert.step, count))


@pytest.mark.filterwarnings("ignore::lightning_gradflow.core.sinks.GradFlowWarning")
def test_outputs_get_each_alert_with_how_often_its_kind_occurred():
    model = _mlp()
    recorder = AlertRecorder()
    engine = _engine(model, [recorder])
    for step in range(2):
        _step(engine, model, step, _x(step, nan=True))
    assert recorder.seen == [("nonfinite", 0, 1)]  # the repeat at step 1 is counted, not shown
    assert engine.alert_counts["nonfinite"] == 2


def test_auto_histograms_take_a_tenth_of_a_run_of_known_length():
    model = _mlp()
    recorder = Recorder()
    engine = GradFlowEngine(log_every_n_steps=50, plot_every_n_steps=None, probe_every_n_steps=None)
    engine.start(RunContext(sinks=[recorder]))
    engine.expect_steps(40)  # "auto": every 4 steps, and the last
    engine.watch(model)
    engine._budget.allows = lambda: True
    for step in range(40):
        _step(engine, model, step, _x(step))
    assert sorted(s for s, h in recorder.hists.items() if h) == [*range(0, 40, 4), 39]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("log_every_n_steps", 0),
        ("linear_histogram_bins", -1),
        ("check_every_n_steps", 0),
        ("probe_every_n_steps", 0),
        ("histogram_every_n_steps", "often"),
        ("plot_every_n_steps", 0),
        ("granularity", "module"),
        ("log_weight_norms", "yes"),
        ("log_update_ratios", 1),
        ("sharded", "yes"),
        ("locate_nan_origin", 2),
        ("histogram_bins", 5),
        ("detectors", 5),
        ("probes", 5),
        ("flow_log10_range", (3, 1)),
    ],
)
def test_a_setting_out_of_range_is_refused_by_name(setting: str, value: object):
    with pytest.raises((ValueError, TypeError), match=rf"\b{setting}\b.*{re.escape(repr(value))}"):
        GradFlowEngine(**{setting: value})


def test_the_documented_defaults():
    engine = GradFlowEngine()
    assert (engine.log_weight_norms, engine.log_update_ratios) == (True, True)
    assert engine.probe_every_n_steps == 500
    assert engine.histogram_every_n_steps == engine.plot_every_n_steps == "auto"


class Reversed(nn.Module):
    """Registers ``late`` first but runs ``early`` first."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Linear(4, 1)
        self.early = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.early(x))


def test_layers_follow_the_forward_pass_not_the_registration_order():
    model = Reversed()
    engine = _engine(model)
    _step(engine, model, 0, _x(0))
    assert [layer.name for layer in engine.layers] == ["early", "late"]


def test_an_engine_that_saw_no_model_has_no_layers():
    engine = GradFlowEngine()
    engine.start(RunContext(sinks=[]))
    assert engine.layers == [] and engine.layer_tags == [] and engine.stop_kinds == []


def test_an_optimizer_made_anew_at_the_same_index_is_read_with_its_own_parameters():
    model = _mlp()
    recorder = Recorder()
    engine = _engine(model, [recorder])
    _batch(engine, model, torch.optim.SGD(model[0].parameters(), lr=0.0), 0)
    model.zero_grad()  # the first optimizer left the other layers' gradients behind
    _batch(engine, model, torch.optim.SGD(model.parameters(), lr=0.0), 1)  # all layers now
    model(_x(1)).pow(2).mean().backward()  # lr 0: the same gradients, computed here
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert recorder.metrics[1]["grad_norm/total"] == pytest.approx(expected, rel=1e-6)
