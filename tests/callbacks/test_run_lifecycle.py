"""Alerts and data survive a run's whole life: a crash, Ctrl-C, a second fit, a resume."""

import json
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lightning_gradflow import GradFlowMonitor, GradFlowWarning
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


def nan_loader(nan_batch: int, n: int = 512, batch_size: int = 8):
    """Regression batches in order; every row of batch ``nan_batch`` is NaN."""
    loader = regression_loader(n=n, batch_size=batch_size)
    x = loader.dataset.tensors[0]
    x[nan_batch * batch_size : (nan_batch + 1) * batch_size] = float("nan")
    return loader


class DiesAt(Regressor):
    """Fails in ``training_step`` at step ``step`` with ``error``."""

    def __init__(self, step: int, error: BaseException) -> None:
        super().__init__(mlp(depth=2, act=torch.nn.ReLU))
        self.die_at, self.error = step, error

    def training_step(self, batch, batch_idx):
        if self.global_step == self.die_at:
            raise self.error
        return super().training_step(batch, batch_idx)


def _alert_lines(log_dir) -> list[dict]:
    path = log_dir / "gradflow_alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    ("error", "expected"),
    [(RuntimeError("user code fails"), RuntimeError), (KeyboardInterrupt(), SystemExit)],
    ids=["exception", "ctrl-c"],
)
def test_a_dying_run_still_judges_and_reports_its_pending_steps(tmp_path, error, expected):
    # The NaN at step 7 would be judged at step 50 (the check interval); the run dies at 20.
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    monitor = GradFlowMonitor(log_every_n_steps=50, probe_every_n_steps=None)
    trainer = quiet_trainer(logger=logger, callbacks=[monitor], max_steps=100)
    with pytest.raises(expected), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(DiesAt(20, error), nan_loader(nan_batch=7))
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", 7)]
    assert monitor.alert_counts["nonfinite"] == 13  # steps 7..19: every pending step judged
    assert monitor.gradient_summary()["nonfinite_grad_steps"] == 13
    console = [str(w.message) for w in caught if issubclass(w.category, GradFlowWarning)]
    assert len(console) == 1 and "@ step 7]" in console[0]
    [line] = _alert_lines(tmp_path / "tb" / "version_0")
    assert (line["kind"], line["step"]) == ("nonfinite", 7)


def test_a_second_fit_with_the_same_monitor_starts_clean(tmp_path):
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    for run in range(2):
        logger = CSVLogger(tmp_path, name="csv", version=run)
        trainer = quiet_trainer(logger=logger, callbacks=[monitor], max_steps=20)
        with pytest.warns(GradFlowWarning, match="stopping training at step 6"):
            trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
        assert trainer.global_step == 6
        assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", 5)]
        assert monitor.alert_counts == {"nonfinite": 1}
        [line] = _alert_lines(tmp_path / "csv" / f"version_{run}")
        assert line["step"] == 5 and line["count"] == 1


@pytest.mark.parametrize(
    "minimums", [{"min_steps": 20}, {"min_epochs": 1}, {"min_steps": 20, "min_epochs": 2}]
)
def test_stop_happens_despite_the_trainers_minimums(minimums):
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    seen = {}

    class Minimums(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["start"] = (trainer.fit_loop.epoch_loop.min_steps, trainer.fit_loop.min_epochs)

    trainer = quiet_trainer(
        callbacks=[monitor, Minimums()], max_steps=60, max_epochs=None, **minimums
    )
    with pytest.warns(GradFlowWarning, match=r"stopping training at step 6 \(nonfinite\); overr"):
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
    assert trainer.global_step == 6
    # the user's settings are given back once the run is over
    assert (trainer.fit_loop.epoch_loop.min_steps, trainer.fit_loop.min_epochs) == seen["start"]


def test_stop_without_minimums_claims_nothing_it_did_not_do():
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    trainer = quiet_trainer(callbacks=[monitor], max_steps=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
    stops = [str(w.message) for w in caught if "stopping training" in str(w.message)]
    assert stops == ["GradFlowMonitor: stopping training at step 6 (nonfinite)."]
    assert trainer.global_step == 6


def _fit(tmp_path, name, monitor, max_steps, ckpt_path=None):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    trainer = quiet_trainer(
        callbacks=[monitor, checkpoint],
        enable_checkpointing=True,
        max_steps=max_steps,
        max_epochs=None,
        logger=CSVLogger(tmp_path, name=name, version=0),
    )
    torch.manual_seed(0)
    model = Regressor(mlp(depth=3, act=torch.nn.Sigmoid))
    # 6 batches an epoch, so the step-6 checkpoint ends an epoch; NaN weights from step 3 on
    trainer.fit(model, nan_loader(nan_batch=3, n=48), ckpt_path=ckpt_path)
    return trainer


def test_resume_with_another_logging_interval_keeps_detector_state_and_summary(tmp_path):
    whole = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    _fit(tmp_path, "whole", whole, 14)
    ckpt = sorted((tmp_path / "ckpt").glob("*step=6*.ckpt"))[0]

    resumed = GradFlowMonitor(log_every_n_steps=4, probe_every_n_steps=None)
    _fit(tmp_path / "b", "resumed", resumed, 14, ckpt_path=ckpt)
    # The NaN streak from step 3 is announced once; counts and summary are whole-run ones.
    assert [(a.kind, a.step) for a in resumed.alerts] == [(a.kind, a.step) for a in whole.alerts]
    assert resumed.alert_counts == whole.alert_counts
    got, want = resumed.gradient_summary(), whole.gradient_summary()
    assert got["nonfinite_grad_steps"] == want["nonfinite_grad_steps"] == 11
    assert got["mean_log10_norm"] == pytest.approx(want["mean_log10_norm"], rel=1e-9)
    assert got["grad_norm_max"] == pytest.approx(want["grad_norm_max"], rel=1e-9)


def test_a_checkpoint_of_the_old_state_key_is_adopted(tmp_path):
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    state = monitor.state_dict()
    state["alerts"]["counts"] = {"vanishing": 3}
    old_key = "GradFlowMonitor{'log_every_n_steps': 1, 'granularity': 'layer'}"
    fresh = GradFlowMonitor(log_every_n_steps=5)
    fresh.on_load_checkpoint(None, None, {"callbacks": {old_key: state}})
    assert fresh.alert_counts == {"vanishing": 3}
