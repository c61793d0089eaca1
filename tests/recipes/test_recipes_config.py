"""Every config group composes and instantiates; bad overrides fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_gradflow import DetectorConfig, GradFlowMonitor, LogBins, ProbeConfig
from recipes.train import instantiate_group
from recipes.volatility import VolatilityDataModule, VolatilityForecaster
from tests.recipes.conftest import CONFIG_DIR, MODELS, composed

GROUPS = (
    "data",
    "model",
    "model/optimizer",
    "model/scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "paths",
)
OPTIONS = [
    (group, path.stem) for group in GROUPS for path in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


def test_every_option_is_listed():
    assert {name for group, name in OPTIONS if group == "model"} == set(MODELS)
    assert {name for group, name in OPTIONS if group == "model/optimizer"} == {
        "adam",
        "adamw",
        "sgd",
    }
    assert {name for group, name in OPTIONS if group == "model/scheduler"} == {"cosine"}
    assert {name for group, name in OPTIONS if group == "trainer"} >= {
        "cpu",
        "gpu",
        "ddp",
        "ddp_spawn",
        "debug",
    }
    assert {name for group, name in OPTIONS if group == "logger"} >= {
        "tensorboard",
        "wandb",
        "csv",
        "many",
    }


def _instantiate(group: str, cfg, out: Path) -> None:
    if group == "data":
        dm = instantiate(cfg.data, _convert_="all")
        assert isinstance(dm, VolatilityDataModule) and dm.window == cfg.data.window
    elif group in ("model", "model/optimizer", "model/scheduler", "experiment"):
        forecaster = instantiate(cfg.model, _convert_="all")
        assert isinstance(forecaster, VolatilityForecaster)
        assert type(forecaster.net).__name__ == cfg.model.net._target_.rsplit(".", 1)[-1]
        window = cfg.data.window
        assert forecaster(torch.zeros(2, window, len(cfg.data.features))).shape == (2,)
        configured = forecaster.configure_optimizers()  # the partials, called as in fit
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        assert type(optimizer).__name__ == cfg.model.optimizer._target_.rsplit(".", 1)[-1]
        assert optimizer.param_groups[0]["lr"] == cfg.model.optimizer.lr
        if cfg.model.scheduler is None:
            assert isinstance(configured, torch.optim.Optimizer)
        else:
            scheduler = configured["lr_scheduler"]["scheduler"]
            assert type(scheduler).__name__ == cfg.model.scheduler._target_.rsplit(".", 1)[-1]
    elif group == "trainer":
        trainer = instantiate(cfg.trainer, logger=False)
        assert Path(trainer.default_root_dir) == out
    elif group == "logger":
        for logger in instantiate_group(cfg.logger):
            assert Path(logger.save_dir).is_relative_to(out), logger
    elif group == "callbacks":
        callbacks = instantiate_group(cfg.callbacks)
        for cb in callbacks:
            if getattr(cb, "dirpath", None):  # checkpoints
                assert Path(cb.dirpath).is_relative_to(out)
        monitors = [cb for cb in callbacks if isinstance(cb, GradFlowMonitor)]
        assert len(monitors) == int("gradflow" in (cfg.callbacks or {}))
    elif group == "paths":
        assert Path(cfg.paths.output_dir) == out


@pytest.mark.parametrize(("group", "name"), OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_config_group_composes_and_instantiates(group, name, tmp_path):
    out = tmp_path / "out"
    overrides = [f"{group}={name}", f"paths.output_dir={out}"]
    if group not in ("data", "experiment"):
        overrides += ["data=garch_sim", "data.sim_days=1700"]
    if group == "trainer" and name == "gpu" and not torch.cuda.is_available():
        with composed(overrides) as cfg:
            assert cfg.trainer.accelerator == "gpu"
        pytest.skip("no CUDA device: composed only")
    if group == "trainer" and name.startswith("ddp"):
        overrides.append("trainer.accelerator=cpu")
    with composed(overrides) as cfg:
        OmegaConf.resolve(cfg)  # every interpolation resolves
        _instantiate(group, cfg, out)


@pytest.mark.parametrize(
    "name", ["compare_architectures", "vanishing_depth", "exploding_rnn", "rnn_vs_lstm"]
)
def test_experiments_sweep_and_pick_the_multirun_strategy(name, tmp_path):
    overrides = [f"experiment={name}", f"paths.output_dir={tmp_path}"]
    with composed(overrides, return_hydra_config=True) as cfg:
        assert cfg.task_name == name
        assert "model" in cfg.hydra.sweeper.params
        assert cfg.trainer.strategy == "auto"  # one device
    with composed([*overrides, "trainer=ddp", "trainer.devices=2"]) as cfg:
        assert cfg.trainer.strategy == "ddp_spawn"  # plain ddp hangs under -m


def test_exploding_rnn_uses_long_windows_on_the_simulator():
    with composed(["experiment=exploding_rnn"], return_hydra_config=True) as cfg:
        assert cfg.data.source == "garch_sim" and cfg.data.window >= 120
        assert cfg.hydra.sweeper.params["trainer.gradient_clip_val"] == "null,1.0"


def test_hydra_dirs_are_under_the_log_dir():
    with composed([], return_hydra_config=True) as cfg:
        log_dir = cfg.paths.log_dir
        assert cfg.hydra.run.dir.startswith(f"{log_dir}/train/runs/")
        assert cfg.hydra.sweep.dir.startswith(f"{log_dir}/train/multiruns/")
        assert cfg.hydra.job.chdir is False
        assert cfg.hydra.output_subdir == ".hydra"
        assert cfg.hydra.callbacks.compare._target_ == "recipes.compare.CompareSweep"


# --- SLURM: configuration only ------------------------------------------------------------------

SLURM = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]


def test_slurm_launcher_takes_tasks_and_nodes_from_the_trainer():
    with composed(SLURM, return_hydra_config=True) as cfg:
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher")
        assert launcher.tasks_per_node == cfg.trainer.devices == 4
        assert launcher.nodes == cfg.trainer.num_nodes == 2
        assert launcher.gpus_per_node == 4
        slurm = instantiate(launcher)  # builds the launcher; submits nothing
        assert slurm.params["tasks_per_node"] == 4 and slurm.params["nodes"] == 2
    with composed([*SLURM, "trainer.accelerator=cpu"], return_hydra_config=True) as cfg:
        assert cfg.hydra.launcher.gpus_per_node is None


def _slurm_env(monkeypatch, tasks_per_node: int, nodes: int, procid: int = 0) -> None:
    for key, value in {
        "SLURM_NTASKS": tasks_per_node * nodes,
        "SLURM_NTASKS_PER_NODE": tasks_per_node,
        "SLURM_NNODES": nodes,
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": 1234,
        "SLURM_NODELIST": "node[1-2]",
        "SLURM_PROCID": procid,
        "SLURM_LOCALID": procid % tasks_per_node,
        "SLURM_NODEID": procid // tasks_per_node,
    }.items():
        monkeypatch.setenv(key, str(value))


def _validate_like_lightning(trainer) -> None:
    """What Lightning's launcher checks before starting the ranks of a SLURM job."""
    env = trainer.strategy.cluster_environment
    assert type(env).__name__ == "SLURMEnvironment"
    env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)


def test_slurm_values_pass_lightnings_checks(monkeypatch, tmp_path):
    """Inside the SLURM job the submitit values match what Lightning validates."""
    overrides = [*SLURM, "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"]
    overrides.append("experiment=compare_architectures")
    with composed(overrides, return_hydra_config=True) as cfg:
        _slurm_env(monkeypatch, cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.nodes)
        assert cfg.trainer.strategy == "ddp"  # a SLURM job starts the ranks itself: no spawn
        trainer = instantiate(cfg.trainer, logger=False)
        assert trainer.world_size == 8
        _validate_like_lightning(trainer)
        _slurm_env(monkeypatch, tasks_per_node=2, nodes=4)  # a job that does not match
        trainer = instantiate(cfg.trainer, logger=False)
        with pytest.raises(ValueError, match="ntasks-per-node=2"):
            _validate_like_lightning(trainer)


def test_only_the_first_slurm_task_writes_the_hydra_dir(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    with composed([], return_hydra_config=True) as cfg:
        assert cfg.hydra.output_subdir is None


# --- bad overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=nope", "Could not find 'model/nope'"),
        ("data=nope", "Could not find 'data/nope'"),
        ("trainer=nope", "Could not find 'trainer/nope'"),
    ],
)
def test_unknown_option_names_the_choices(override, message):
    with pytest.raises(ConfigCompositionException) as err, composed([override]):
        pass
    text = str(err.value) + str(err.value.__cause__ or "")
    assert message in text and "Available options" in text


@pytest.mark.parametrize(
    ("override", "node", "message"),
    [
        ("model.net.depth=-1", "model", "depth=-1 is not allowed; need > 0"),
        ("data.source=nope", "data", "source='nope' is not allowed"),
        (
            "model.optimizer._target_=torch.optim.LBFGS",
            "model",
            "optimizer=.*LBFGS.* is not allowed: .*unexpected keyword argument 'weight_decay'",
        ),
        ("model.optimizer.lr=abc", "model", "lr='abc' is not allowed: expected a positive number"),
        ("model.optimizer.lr=0", "model", "lr=0 is not allowed: expected a positive number"),
        (
            "model.optimizer.weight_decay=-1",
            "model",
            "weight_decay=-1 is not allowed: expected a non-negative number",
        ),
        (
            "model/optimizer=sgd model.optimizer.momentum=-1",
            "model",
            "optimizer=.*SGD.* is not allowed: .*Invalid momentum value: -1",
        ),
        ("model.loss=mae", "model", "loss='mae' is not allowed"),
    ],
)
def test_bad_value_fails_with_our_message(override, node, message):
    """At instantiation (before any data is read or a Trainer exists), not at fit."""
    with (
        composed(["model=mlp_vanilla", *override.split()]) as cfg,
        pytest.raises(InstantiationException, match=message),
    ):
        instantiate(cfg[node], _convert_="all")


def test_optimizer_group_and_overrides_reach_torch():
    """``model/optimizer=<name>`` picks a torch optimizer; ``model.optimizer.<arg>`` any of its
    arguments; ``model/scheduler=cosine`` adds a per-epoch cosine decay over the run."""
    overrides = [
        "model/optimizer=sgd",
        "model.optimizer.lr=0.05",
        "model/scheduler=cosine",
        "trainer.max_epochs=7",
        "model.net.hidden=5",
    ]
    with composed(overrides) as cfg:
        forecaster = instantiate(cfg.model, _convert_="all")
    configured = forecaster.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["momentum"] == 0.9
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 7 and forecaster.net.rnn.hidden_size == 5


def test_nasdaq_differs_from_sp500_only_where_it_says():
    with composed(["data=sp500"]) as cfg:
        sp500 = OmegaConf.to_container(cfg.data)
    with composed(["data=nasdaq"]) as cfg:
        nasdaq = OmegaConf.to_container(cfg.data)
    differ = {k for k in sp500 if sp500[k] != nasdaq[k]}
    assert differ == {"source", "target"} and set(sp500) == set(nasdaq)
    assert nasdaq["source"] == "nasdaq" and nasdaq["target"] == "parkinson"


def test_gradflow_thresholds_from_command_line_overrides():
    """``+callbacks.gradflow.<config>.<field>=...`` reaches the monitor, whether the node has a
    ``_target_`` (detectors) or Hydra builds a plain mapping (probes, histogram_bins)."""
    overrides = [
        "+callbacks.gradflow.probes.patience=5",
        "+callbacks.gradflow.detectors.patience=5",
        "+callbacks.gradflow.histogram_bins.per_decade=2",
    ]
    with composed(overrides) as cfg:
        monitor = instantiate(cfg.callbacks.gradflow)
    assert monitor.probe_config == ProbeConfig(patience=5)
    assert monitor.detector_config == DetectorConfig(patience=5)
    assert monitor.histogram_bins == LogBins(per_decade=2)
    with (
        composed(["+callbacks.gradflow.probes.patiense=5"]) as cfg,
        pytest.raises(InstantiationException, match=r"probes=\{'patiense': 5\} is not allowed"),
    ):
        instantiate(cfg.callbacks.gradflow)
