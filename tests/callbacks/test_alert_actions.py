"""on_alert = warn | stop | raise, in one process and across two DDP ranks."""

import json
from pathlib import Path

import pytest
import torch

from lightning_gradflow import GradFlowMonitor, GradientPathologyError
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader
from tests.helpers.subprocess_runs import run_module


class NanAtStep(Regressor):
    def __init__(self, step: int):
        super().__init__(mlp(depth=3))
        self.nan_step = step

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_step == self.nan_step:
            x = torch.full_like(x, float("nan"))
        return super().training_step((x, y), batch_idx)


def _fit(monitor: GradFlowMonitor, steps: int = 20):
    trainer = quiet_trainer(callbacks=[monitor], max_steps=steps)
    trainer.fit(NanAtStep(5), regression_loader(n=512, batch_size=8))
    return trainer


def test_warn_keeps_training():
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    assert _fit(monitor).global_step == 20
    assert monitor.alerts[0].kind == "nonfinite" and monitor.alerts[0].step == 5


def test_stop_ends_training_at_the_alert_step():
    monitor = GradFlowMonitor(log_every_n_steps=1, on_alert="stop", probe_every_n_steps=None)
    assert _fit(monitor).global_step == 6


def test_per_kind_override_raises():
    monitor = GradFlowMonitor(
        log_every_n_steps=1, actions={"nonfinite": "raise"}, probe_every_n_steps=None
    )
    with pytest.raises(GradientPathologyError, match="nonfinite") as caught:
        _fit(monitor)
    assert caught.value.alerts[0].step == 5


def test_overrides_for_other_kinds_do_not_interrupt():
    monitor = GradFlowMonitor(
        log_every_n_steps=1, actions={"vanishing": "raise"}, probe_every_n_steps=None
    )
    assert _fit(monitor).global_step == 20


def test_check_interval_sets_how_soon_alerts_speak():
    monitor = GradFlowMonitor(
        log_every_n_steps=50,
        check_every_n_steps=4,
        on_alert="stop",
        probe_every_n_steps=None,
        histogram_every_n_steps=None,  # their steps are judged too (a picture shows alerts)
        plot_every_n_steps=None,
    )
    assert _fit(monitor).global_step == 9  # step 5 judged at the check of step 8
    assert monitor.alerts[0].step == 5  # but reported at the step it happened


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_alert": "halt"}, "on_alert='halt' is not allowed"),
        ({"actions": {"nonfinite": "explode"}}, "actions\\['nonfinite'\\]='explode'"),
        ({"actions": {"gradient_ghost": "warn"}}, "'gradient_ghost' is not an alert kind"),
        ({"disable": ["vanishing", "typo"]}, "disable=\\['typo'\\] holds unknown alert kinds"),
        ({"check_every_n_steps": 0}, "check_every_n_steps=0"),
        ({"probe_every_n_steps": -1}, "probe_every_n_steps=-1"),
    ],
)
def test_invalid_alert_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradFlowMonitor(**kwargs)


def _run_ddp(tmp_path: Path, action: str) -> tuple[list[dict], list[str]]:
    run_module("tests.scripts.ddp_alerts", str(tmp_path), action)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    files = list(tmp_path.rglob("gradflow_alerts.jsonl"))
    assert len(files) == 1
    return ranks, files[0].read_text().splitlines()


@pytest.mark.parametrize("action", ["stop", "raise"])
def test_ddp_only_rank_one_sees_nan_and_both_ranks_act_together(tmp_path, action):
    ranks, lines = _run_ddp(tmp_path, action)
    assert ranks[0]["step"] == ranks[1]["step"] == 6  # NaN batch at step 5, no rank hangs
    assert ranks[0]["raised"] == ranks[1]["raised"] == (action == "raise")
    assert len(lines) == 1 and json.loads(lines[0])["kind"] == "nonfinite"  # written once
