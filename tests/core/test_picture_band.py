"""The gradient-flow picture's band ("range since last picture") covers only the steps since
the previous picture: checked on what the engine hands to ``render_gradient_flow``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.sinks import Sink
from lightning_gradflow.engine import GradFlowEngine, RunContext, StepInfo
from lightning_gradflow.writers import flow_figure

pytest.importorskip("matplotlib")


class Images(Sink):
    def __init__(self):
        self.steps = []

    def image(self, step, tag, image):
        self.steps.append((step, tag))


def _pictures(monkeypatch, scales, plot_every=3, **settings):
    """One layer whose gradient norm at step ``s`` is ``|scales[s]|``; the renderer's inputs."""
    calls = []

    def render(names, latest, low, high, step, nonfinite=None, log10_range=None):
        calls.append(
            {
                "step": step,
                "log10_range": log10_range,
                "names": list(names),
                "latest": np.array(latest),
                "low": None if low is None else np.array(low),
                "high": None if high is None else np.array(high),
                "nonfinite": None if nonfinite is None else np.array(nonfinite),
            }
        )
        return np.zeros((2, 2, 3), dtype=np.uint8)

    monkeypatch.setattr(flow_figure, "render_gradient_flow", render)
    model = nn.Sequential(nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    images = Images()
    engine = GradFlowEngine(
        log_every_n_steps=1,
        histogram_every_n_steps=None,
        plot_every_n_steps=plot_every,
        probe_every_n_steps=None,
        log_update_ratios=False,
        locate_nan_origin=False,
        **settings,
    )
    engine.start(RunContext(sinks=[images]))
    engine.watch(model)
    for step, scale in enumerate(scales):
        engine.forward_start(step)
        loss = (model(torch.ones(1, 1)) * scale).sum()
        engine.loss(loss)
        loss.backward()
        engine.before_optimizer_step(model, optimizer, step)
        optimizer.zero_grad()  # no update: the weight stays 1, the gradient norm is |scale|
        engine.after_optimizer_step()
        engine.end_batch(StepInfo(step))
    pictures = [(step, tag) for step, tag in images.steps if tag == "grad_flow/picture"]
    assert pictures == [(c["step"], "grad_flow/picture") for c in calls]
    heatmaps = [step for step, tag in images.steps if tag == "grad_flow/heatmap"]
    assert heatmaps == [c["step"] for c in calls]  # refreshed with the picture
    return calls


def test_band_covers_the_steps_since_the_last_picture(monkeypatch):
    calls = _pictures(monkeypatch, [100.0, 2.0, 3.0, 5.0, 7.0, 1.0, 4.0])
    assert [c["step"] for c in calls] == [0, 3, 6]
    assert [c["names"] for c in calls] == [["0"]] * 3
    bands = [(c["low"][0], c["high"][0], c["latest"][0]) for c in calls]
    assert bands[0] == pytest.approx((100.0, 100.0, 100.0))
    assert bands[1] == pytest.approx((2.0, 5.0, 5.0))  # steps 1-3, not step 0's 100
    assert bands[2] == pytest.approx((1.0, 7.0, 4.0))  # steps 4-6


def test_nonfinite_marks_cover_the_steps_since_the_last_picture(monkeypatch):
    calls = _pictures(monkeypatch, [1.0, 2.0, math.nan, 3.0, 2.0, 2.0, 2.0])
    assert [c["nonfinite"].tolist() for c in calls] == [[False], [True], [False]]
    assert calls[1]["low"][0] == pytest.approx(2.0) and calls[1]["high"][0] == pytest.approx(3.0)


def test_a_fixed_range_reaches_every_picture(monkeypatch):
    calls = _pictures(monkeypatch, [1.0, 2.0, 3.0, 4.0], flow_log10_range=(-12, 2))
    assert [c["log10_range"] for c in calls] == [(-12.0, 2.0)] * 2
    assert [c["log10_range"] for c in _pictures(monkeypatch, [1.0])] == [None]
