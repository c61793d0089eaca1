"""What the Lightning hooks themselves translate: settings, checkpoint keys, a run that dies or
stops, the Trainer's minimums, loggers, optimizers, epochs, AMP and runs of unknown length."""

from __future__ import annotations

import csv
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from lightning_gradflow import GradFlowMonitor, GradFlowWarning, LogBins, Sink
from lightning_gradflow.callbacks.lightning_hooks import _optimizer_index
from lightning_gradflow.engine import GradFlowEngine
from tests.callbacks.test_alert_actions import NanAtStep
from tests.callbacks.test_monitor_behaviour import TwoOptimizers
from tests.callbacks.test_nan_origin import Log
from tests.callbacks.test_run_lifecycle import DiesAt, nan_loader
from tests.helpers.lightning_models import (
    KeepRecords,
    Regressor,
    mlp,
    quiet_trainer,
    regression_loader,
)

SETTINGS = (
    "log_every_n_steps",
    "histogram_every_n_steps",
    "plot_every_n_steps",
    "granularity",
    "log_weight_norms",
    "log_update_ratios",
    "linear_histogram_bins",
    "histogram_bins",
    "sharded",
    "detector_config",
    "on_alert",
    "actions",
    "check_every_n_steps",
    "probe_every_n_steps",
    "probe_config",
    "locate_nan_origin",
    "flow_log10_range",
    "detector_kinds",
)


def _csv_steps(logger: CSVLogger, column: str = "grad_norm/total") -> list[int]:
    with open(f"{logger.log_dir}/metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get(column)]


def _stop_messages(caught) -> list[str]:
    return [str(w.message) for w in caught if "stopping training" in str(w.message)]


# --- settings -----------------------------------------------------------------------------


def test_a_monitor_without_arguments_has_the_engines_defaults():
    monitor, engine = GradFlowMonitor(), GradFlowEngine()
    assert {name: getattr(monitor, name) for name in SETTINGS} == {
        name: getattr(engine, name) for name in SETTINGS
    }
    assert monitor.extra_sinks == []


def test_every_setting_reaches_the_engine():
    sink = KeepRecords()
    monitor = GradFlowMonitor(
        log_every_n_steps=3,
        histogram_every_n_steps=7,
        plot_every_n_steps=11,
        granularity="block",
        log_weight_norms=False,
        log_update_ratios=False,
        linear_histogram_bins=16,
        histogram_bins={"low_exp": -8, "high_exp": 2, "per_decade": 2},
        sharded=True,
        detectors={"cooldown_steps": 5},
        disable=("always_clipping",),
        on_alert="stop",
        actions={"nonfinite": "raise"},
        check_every_n_steps=2,
        probe_every_n_steps=9,
        probes={"dead_relu_threshold": 0.7},
        locate_nan_origin=False,
        flow_log10_range=(-12.0, 2.0),
        sinks=(sink,),
    )
    assert {name: getattr(monitor, name) for name in SETTINGS[:9]} == {
        "log_every_n_steps": 3,
        "histogram_every_n_steps": 7,
        "plot_every_n_steps": 11,
        "granularity": "block",
        "log_weight_norms": False,
        "log_update_ratios": False,
        "linear_histogram_bins": 16,
        "histogram_bins": LogBins(low_exp=-8, high_exp=2, per_decade=2),
        "sharded": True,
    }
    assert monitor.detector_config.cooldown_steps == 5
    assert "always_clipping" in GradFlowEngine().detector_kinds
    assert "always_clipping" not in monitor.detector_kinds
    assert (monitor.on_alert, monitor.actions) == ("stop", {"nonfinite": "raise"})
    assert (monitor.check_every_n_steps, monitor.probe_every_n_steps) == (2, 9)
    assert monitor.probe_config.dead_relu_threshold == 0.7
    assert monitor.locate_nan_origin is False
    assert monitor.flow_log10_range == (-12.0, 2.0)
    assert monitor.extra_sinks == [sink]


def test_public_engine_names_are_forwarded_private_ones_are_not():
    monitor = GradFlowMonitor(log_every_n_steps=7)
    assert monitor.log_every == 7
    with pytest.raises(AttributeError, match="_detectors"):
        monitor._detectors  # noqa: B018


# --- checkpoints --------------------------------------------------------------------------


def test_a_checkpoint_with_several_other_monitor_states_warns_once_and_starts_afresh():
    state = GradFlowMonitor().state_dict()
    state["alerts"]["counts"] = {"vanishing": 3}
    keys = [
        "GradFlowMonitor{'granularity': 'block'}",
        "GradFlowMonitor{'log_every_n_steps': 1, 'granularity': 'layer'}",
    ]
    checkpoint = {"callbacks": dict.fromkeys(keys, state)}
    monitor = GradFlowMonitor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_load_checkpoint(None, None, checkpoint)
        monitor.on_load_checkpoint(None, None, checkpoint)
    assert [str(w.message) for w in caught] == [
        "GradFlowMonitor: the checkpoint holds 2 monitor states (" + str(keys) + ") and none "
        "under \"GradFlowMonitor{'granularity': 'layer'}\"; starting detectors afresh."
    ]
    assert caught[0].category is GradFlowWarning
    assert monitor.alert_counts == {}


def test_a_resume_from_a_checkpoint_without_monitor_state_keeps_the_logging_steps(tmp_path):
    """A checkpoint written without the monitor (step 6): each optimizer's clock starts at the
    global step, so the logged steps are those of a run monitored from the start."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6)
    quiet_trainer(
        callbacks=[checkpoint], enable_checkpointing=True, max_steps=6, max_epochs=None
    ).fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=99, n=128))
    [ckpt] = (tmp_path / "ckpt").glob("*.ckpt")
    logger = CSVLogger(tmp_path, name="resumed", version=0)
    monitor = GradFlowMonitor(log_every_n_steps=4, probe_every_n_steps=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(logger=logger, callbacks=[monitor], max_steps=12, max_epochs=None).fit(
            Regressor(mlp(depth=2)), nan_loader(nan_batch=99, n=128), ckpt_path=ckpt
        )
    assert _csv_steps(logger) == [8, 11]  # 8 on the interval, 11 the last step


# --- a run that dies, stops or fails around the monitor -------------------------------------


def test_a_run_dying_with_an_alert_pending_reports_it_and_dies_of_its_own_error():
    # "raise" is not acted on while the run dies: its own error is what the user sees
    monitor = GradFlowMonitor(on_alert="raise", log_every_n_steps=50, probe_every_n_steps=None)
    trainer = quiet_trainer(callbacks=[monitor], max_steps=100)
    with pytest.raises(RuntimeError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(DiesAt(20, RuntimeError("user code fails")), nan_loader(nan_batch=7))
    assert type(caught.value) is RuntimeError and str(caught.value) == "user code fails"
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", 7)]


class FailsAt(pl.Callback):
    def __init__(self, hook: str) -> None:
        setattr(self, hook, self._fail)

    def _fail(self, *args, **kwargs) -> None:
        raise RuntimeError("another callback fails")


@pytest.mark.parametrize(
    ("callbacks", "minimums"),
    [
        (lambda monitor: [FailsAt("setup"), monitor], {}),  # before the monitor is set up
        (lambda monitor: [monitor, FailsAt("on_train_end")], {"min_steps": 20}),  # after it
    ],
    ids=["setup", "train_end"],
)
def test_another_callbacks_failure_reaches_the_user_unchanged(callbacks, minimums):
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    trainer = quiet_trainer(callbacks=callbacks(monitor), max_steps=60, **minimums)
    with pytest.raises(RuntimeError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
    assert str(caught.value) == "another callback fails"
    assert trainer.fit_loop.epoch_loop.min_steps == minimums.get("min_steps")


@pytest.mark.parametrize(
    ("minimums", "note"),
    [
        ({"min_steps": 6, "min_epochs": 0}, ""),  # reached at the stop (step 6)
        ({"min_steps": 7, "min_epochs": 0}, "; overriding the Trainer's min_steps=7"),
        (
            {"min_steps": 20, "min_epochs": 2},
            "; overriding the Trainer's min_epochs=2 and min_steps=20",
        ),
    ],
)
def test_the_stop_message_names_exactly_the_minimums_it_overrides(minimums, note):
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    trainer = quiet_trainer(callbacks=[monitor], max_steps=60, max_epochs=None, **minimums)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
    assert _stop_messages(caught) == [
        f"GradFlowMonitor: stopping training at step 6 (nonfinite){note}."
    ]
    assert trainer.global_step == 6
    assert trainer.fit_loop.epoch_loop.min_steps == minimums["min_steps"]


class VetoesOneStop(pl.Callback):
    """Runs after the monitor and undoes the first stop request (as a user's callback may)."""

    def __init__(self) -> None:
        self.vetoed_at: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.should_stop and self.vetoed_at is None:
            trainer.should_stop, self.vetoed_at = False, trainer.global_step


def test_a_vetoed_stop_is_asked_again_at_the_next_step():
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    veto = VetoesOneStop()
    trainer = quiet_trainer(callbacks=[monitor, veto], max_steps=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
    assert (veto.vetoed_at, trainer.global_step) == (6, 7)
    assert len(_stop_messages(caught)) == 1


def test_every_kind_that_stops_at_one_check_is_named():
    # clipped on every step from step 0 (always_clipping over 10 steps: at step 9), NaN data
    # at step 12; both are judged at the check of step 15
    monitor = GradFlowMonitor(
        on_alert="stop",
        log_every_n_steps=50,
        check_every_n_steps=15,
        probe_every_n_steps=None,
        histogram_every_n_steps=None,
        plot_every_n_steps=None,
        detectors={"clipping_window": 10},
        disable=["vanishing", "exploding", "loss_spike"],
    )
    trainer = quiet_trainer(callbacks=[monitor], max_steps=60, gradient_clip_val=1e-6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=12))
    assert [(a.kind, a.step) for a in monitor.alerts] == [("always_clipping", 9), ("nonfinite", 12)]
    assert _stop_messages(caught) == [
        "GradFlowMonitor: stopping training at step 16 (always_clipping, nonfinite)."
    ]


# --- what the Trainer knows about a step --------------------------------------------------


def test_an_alert_carries_the_epoch_it_happened_in():
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    trainer = quiet_trainer(callbacks=[monitor], max_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(NanAtStep(8), regression_loader(n=48, batch_size=8))  # 6 steps an epoch
    [alert] = monitor.alerts
    assert (alert.kind, alert.step, alert.epoch) == ("nonfinite", 8, 1)


def test_a_float16_grad_scaler_is_seen_by_the_nonfinite_detector():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # Inf gradients on every step
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    trainer = quiet_trainer(
        callbacks=[monitor],
        max_steps=30,
        plugins=[MixedPrecision("16-mixed", device="cpu", scaler=scaler)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Regressor(mlp(depth=2), optimizer=torch.optim.Adam, lr=1e-3), nan_loader(99))
    [alert] = monitor.alerts
    assert alert.kind == "nonfinite" and "under AMP" in alert.message


class Batches(IterableDataset):
    """Five regression batches, with no length: the run's length is unknown."""

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for _ in range(5):
            yield torch.randn(8, 8, generator=generator), torch.randn(8, 1, generator=generator)


def test_a_run_of_unknown_length_is_logged_at_its_interval(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    monitor = GradFlowMonitor(log_every_n_steps=3, probe_every_n_steps=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(logger=logger, callbacks=[monitor]).fit(
            Regressor(mlp(depth=2)), DataLoader(Batches(), batch_size=None)
        )
    assert _csv_steps(logger) == [0, 3]  # no last step known: 4 is not logged


def test_a_run_without_any_limit_is_monitored_until_it_stops():
    monitor = GradFlowMonitor(on_alert="stop", log_every_n_steps=1, probe_every_n_steps=None)
    trainer = quiet_trainer(callbacks=[monitor], max_epochs=-1, max_steps=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Regressor(mlp(depth=2)), nan_loader(nan_batch=5))
    assert trainer.global_step == 6
    assert [(a.kind, a.step) for a in monitor.alerts] == [("nonfinite", 5)]


# --- loggers and optimizers ---------------------------------------------------------------


def test_every_logger_after_a_tensorboard_logger_gets_the_scalars(tmp_path):
    loggers = [TensorBoardLogger(tmp_path, name="tb", version=0), CSVLogger(tmp_path, "csv", 0)]
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(logger=loggers, callbacks=[monitor], max_steps=3).fit(
            Regressor(mlp(depth=2)), nan_loader(nan_batch=99)
        )
    assert _csv_steps(loggers[1]) == [0, 1, 2]


def test_a_trainer_without_logger_is_told_how_to_see_the_outputs():
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(callbacks=[monitor], max_steps=2).fit(
            Regressor(mlp(depth=2)), nan_loader(nan_batch=99)
        )
    assert [str(w.message) for w in caught if w.category is GradFlowWarning] == [
        "GradFlowMonitor: the Trainer has no logger, so gradient norms, histograms and pictures "
        "are computed but not shown (alerts still work). Pass `logger=TensorBoardLogger(...)` "
        "(or WandbLogger/CSVLogger) to see them."
    ]


class RecordsStart(Sink):
    def __init__(self) -> None:
        self.started: list[int] = []

    def start(self, num_optimizers: int) -> None:
        self.started.append(num_optimizers)


def test_the_outputs_are_told_how_many_optimizers_the_run_has():
    sink = RecordsStart()
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None, sinks=[sink])
    quiet_trainer(callbacks=[monitor], max_steps=2).fit(
        TwoOptimizers(), regression_loader(n=32, batch_size=16)
    )
    assert sink.started == [2]


class Wrapped:
    """An optimizer wrapper, as some strategies keep them in ``trainer.optimizers``."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer


def test_an_optimizer_is_found_behind_its_wrapper_and_an_unknown_one_counts_as_the_first():
    params = [nn.Parameter(torch.zeros(1))]
    first, second, stranger = (torch.optim.SGD(params, lr=0.1) for _ in range(3))
    trainer = quiet_trainer()
    trainer.strategy.optimizers = [first, Wrapped(second)]
    assert [_optimizer_index(trainer, o) for o in (first, second, stranger)] == [0, 1, 0]
    trainer.strategy.optimizers = [Wrapped(first), second]
    assert [_optimizer_index(trainer, o) for o in (first, second)] == [0, 1]


class LogsBeforeItsForward(Regressor):
    """Logs how often its ``training_step`` ran before its forward pass; the inputs of batch 4
    are huge, so the Softplus underflows to 0 and the ``log`` after it makes -inf."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Sequential(nn.Linear(8, 16), nn.Softplus(), Log(), nn.Linear(16, 1)))
        self.calls = 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        self.log("calls", float(self.calls))
        x, y = batch
        if batch_idx == 4:
            x = x * 1e5
        return nn.functional.mse_loss(self(x), y)


def test_the_re_run_locating_a_nan_gets_the_steps_batch_and_logs_nothing(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    model = LogsBeforeItsForward()
    trainer = quiet_trainer(logger=logger, callbacks=[monitor], max_steps=6, log_every_n_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, regression_loader(n=256, batch_size=8))
    [alert] = [a for a in monitor.alerts if a.kind == "nonfinite"]
    assert alert.step == 4
    assert (alert.details["origin_module"], alert.details["origin_op"]) == ("net.2", "log")
    assert model.calls == 6 + 1  # one re-run, of step 4
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("calls")]
    logged = {int(r["step"]): float(r["calls"]) for r in rows}
    assert logged == {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 7}  # the re-run's 6 not among them


class ManualNan(Regressor):
    """Manual optimization: its ``training_step`` steps the optimizer itself."""

    def __init__(self) -> None:
        super().__init__(mlp(depth=2))
        self.automatic_optimization = False
        self.calls = 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(super().training_step(batch, batch_idx))
        optimizer.step()


def test_manual_optimization_is_never_re_run_to_locate_a_nan():
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=None)
    model = ManualNan()
    trainer = quiet_trainer(callbacks=[monitor], max_steps=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, nan_loader(nan_batch=3))
    assert trainer.global_step == 6 and model.calls == 6
    [alert] = monitor.alerts
    assert (alert.kind, alert.step) == ("nonfinite", 3)
    assert "origin_module" not in alert.details
