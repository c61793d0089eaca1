"""``always_clipping`` judges norm clipping only: ``gradient_clip_algorithm="value"`` clamps each
element and has no norm to exceed, so it must not count as norm clipping."""

import pytest

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


def _clipping_alerts(**clip):
    monitor = GradFlowMonitor(
        log_every_n_steps=1,
        probe_every_n_steps=None,
        histogram_every_n_steps=None,
        plot_every_n_steps=None,
        detectors={"clipping_window": 10},
        disable=["vanishing", "exploding", "loss_spike"],
    )
    trainer = quiet_trainer(callbacks=[monitor], max_steps=12, **clip)
    trainer.fit(Regressor(mlp(depth=2)), regression_loader(n=512, batch_size=8))
    return [a for a in monitor.alerts if a.kind == "always_clipping"]


@pytest.mark.parametrize("algorithm", [None, "norm"])
def test_norm_clipping_on_every_step_is_reported(algorithm):
    clip = {"gradient_clip_val": 1e-6}
    if algorithm:
        clip["gradient_clip_algorithm"] = algorithm
    [alert] = _clipping_alerts(**clip)  # then within the cooldown
    assert alert.step == 9 and alert.value == 1.0  # 10 of the last 10 steps
    assert alert.details["clip_norm"] == 1e-6


def test_value_clipping_is_not_norm_clipping():
    assert _clipping_alerts(gradient_clip_val=1e-6, gradient_clip_algorithm="value") == []


def test_no_clipping_no_alert():
    assert _clipping_alerts() == []
