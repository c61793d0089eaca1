"""A failing output (disk full, a directory in the way, a broken logger) never ends the run."""

import json
import os
import warnings

import fsspec
import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gradflow import GradFlowMonitor, GradFlowWarning
from tests.callbacks.test_run_lifecycle import nan_loader
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer


def _gradflow_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, GradFlowWarning)]


def _run(logger, **kwargs):
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None, **kwargs)
    trainer = quiet_trainer(logger=logger, callbacks=[monitor], max_steps=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=3))
    return trainer, monitor, _gradflow_warnings(caught)


@pytest.mark.parametrize("blocker", ["disk full", "directory in the way"])
def test_a_failing_alerts_file_warns_once_and_training_goes_on(tmp_path, blocker):
    log_dir = tmp_path / "tb" / "version_0"
    log_dir.mkdir(parents=True)
    if blocker == "disk full":
        if not os.path.exists("/dev/full"):
            pytest.skip("/dev/full (a device that fails every write with ENOSPC) is absent")
        (log_dir / "gradflow_alerts.jsonl").symlink_to("/dev/full")
    else:
        (log_dir / "gradflow_alerts.jsonl").mkdir()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer, monitor, console = _run(logger, on_alert="warn")
    assert trainer.global_step == 12  # the run went on to max_steps
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", 3)]
    failures = [m for m in console if "failed" in m]
    assert len(failures) == 1 and "gradflow_alerts.jsonl" in failures[0]
    assert "training goes on" in failures[0]
    # the other sinks still got the alert
    assert any("[gradflow nonfinite/critical @ step 3]" in m for m in console)
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    [text] = events.Tensors("alerts/nonfinite/text_summary")
    assert text.step == 3


class BrokenLogger(CSVLogger):
    """A logger whose storage went away mid-run."""

    def log_metrics(self, metrics, step=None):
        if step is not None and step >= 2:
            raise OSError(28, "No space left on device")
        super().log_metrics(metrics, step)


def test_a_failing_logger_does_not_end_the_run_and_stop_still_works(tmp_path):
    trainer, monitor, console = _run(BrokenLogger(tmp_path), on_alert="stop")
    assert trainer.global_step == 4  # stopped by the alert at step 3, not by the logger
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", 3)]
    assert sum("BrokenLogger failed" in m for m in console) == 1


def test_an_fsspec_log_dir_gets_its_alerts_file_there_and_nothing_local(tmp_path):
    logger = CSVLogger("memory://gradflow-test/logs")
    _run(logger)
    fs = fsspec.filesystem("memory")
    path = "/gradflow-test/logs/lightning_logs/version_0/gradflow_alerts.jsonl"
    [line] = fs.cat(path).decode().splitlines()
    assert json.loads(line)["step"] == 3
    assert list(tmp_path.iterdir()) == []  # no local folder named 'memory:'
    fs.rm("/gradflow-test", recursive=True)
