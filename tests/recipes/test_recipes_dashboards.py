"""Runs named after their overrides, the HParams session, the run config, W&B run records and
predictions.csv: read back from what a real multirun wrote (TensorBoard event files, the
offline ``.wandb`` log, the CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from recipes import compare
from recipes.dashboards import curated_hparams
from recipes.predictions import PREDICTED_BASELINES, PREDICTIONS_FILE
from recipes.run_names import run_name, run_tags, swept_keys
from recipes.volatility.metrics import qlike
from tests.helpers.wandb_records import read_finished_records, records_of_kind, summary
from tests.recipes.conftest import TINY, check, composed, read_json, run_cli

SWEEP = ["experiment=vanishing_depth", "logger=many", "trainer.max_epochs=1", "seed=7"]


@pytest.mark.parametrize(
    ("overrides", "swept", "expected"),
    [
        (
            [*SWEEP, "model=resnet", "model.net.depth=20"],
            {"model", "model.net.depth"},
            "model=resnet,model.net.depth=20",
        ),
        (SWEEP, set(), "trainer.max_epochs=1"),  # a single run: every override that names
        (["logger=many", "seed=7", "num_threads=1", "paths.log_dir=/x"], set(), "lstm"),
        (["model=lstm", "seed=3"], {"seed"}, "seed=3"),  # a swept seed is named
        (["model=lstm", "hydra.run.dir=/x"], {"hydra.run.dir"}, "model=lstm"),
        (
            ["+callbacks.gradflow.detectors.patience=5"],
            {"callbacks.gradflow.detectors.patience"},
            "+callbacks.gradflow.detectors.patience=5",
        ),
        (["data.source=a/b"], set(), "data.source=a_b"),  # a folder name: no "/"
        (["model=lstm"], {"model.net.depth"}, "model=lstm"),  # nothing swept: every named one
    ],
)
def test_run_name_from_overrides(overrides, swept, expected):
    assert run_name(overrides, "lstm", swept) == expected


def test_long_run_names_are_cut_with_a_hash():
    long = [f"model.net.width={'9' * 40}", f"model.net.depth={'1' * 90}"]
    name = run_name(long, "mlp")
    assert len(name) == 120 and name.startswith("model.net.width=999")
    assert name != run_name([*long[:1], f"model.net.depth={'1' * 89}2"], "mlp")


def test_run_tags_hold_the_model_and_the_overrides():
    tags = run_tags([*SWEEP, "model=resnet", f"+x={'a' * 80}"], "resnet")
    assert tags == ["resnet", "trainer.max_epochs=1", "model=resnet", f"+x={'a' * 61}"]


def test_swept_keys_come_from_the_sweeper_and_the_command_line(tmp_path):
    params = {"model": "mlp_vanilla,resnet", "model.net.depth": "5,10,20,30"}
    assert swept_keys(tmp_path, params) == {"model", "model.net.depth"}
    task = ["logger=many", "seed=1,2,3", "+x=range(2)", "model.net.depth=20"]
    OmegaConf.save({"hydra": {"overrides": {"task": task}}}, tmp_path / "multirun.yaml")
    assert swept_keys(tmp_path, params) == {"model", "seed", "x"}  # depth: one value now


def test_hparams_of_every_model_config_are_scalars():
    for model in ("resnet", "lstm", "transformer_prenorm", "rnn_orthogonal"):
        with composed([f"model={model}", "paths.output_dir=/unused"]) as cfg:
            config = OmegaConf.to_container(cfg, resolve=True)
        params = curated_hparams(config, model=model, run=f"model={model}")
        assert {"run", "model", "optimizer", "lr", "scheduler", "loss", "seed"} <= set(params)
        assert {"batch_size", "window", "max_epochs", "precision"} <= set(params)
        assert all(isinstance(v, bool | int | float | str) for v in params.values())
    assert params["optimizer"] == "Adam" and params["scheduler"] == "none"
    assert "_target_" not in params and "input_dim" not in params


def test_comparison_rows_are_run_names_in_numeric_job_order(tmp_path):
    """12 jobs: job 10 comes after job 2; seeds of one configuration are one row."""
    for job in range(12):
        name = f"model.net.depth={job % 6 + 1},seed={job // 6}"
        record = {
            "run": {"model": "mlp", "data": "sp500", "run_name": name, "overrides": []},
            "test": {"qlike": 0.5 + job, "qlike_ratio_har": 1.0},
            "alerts": {},
            "gradient": {},
            "wall_time_s": float(job),
        }
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / compare.METRICS_FILE).write_text(json.dumps(record))
    rows = compare.comparison_rows(compare.collect(tmp_path))
    assert [r["run"] for r in rows] == [f"model.net.depth={d}" for d in range(1, 7)]
    assert rows[1]["qlike"] == f"{(1.5 + 7.5) / 2:.4f} ± {np.std([1.5, 7.5], ddof=1):.4f}"


def _event_dir(job: Path, name: str) -> EventAccumulator:
    events = EventAccumulator(str(job / "tensorboard" / name), size_guidance={"tensors": 0})
    events.Reload()
    return events


def _hparams(events: EventAccumulator) -> plugin_data_pb2.HParamsPluginData:
    content = events.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(c) for tag, c in content.items()}
    start = data["_hparams_/session_start_info"].session_start_info
    experiment = data["_hparams_/experiment"].experiment
    return start, [m.name.tag for m in experiment.metric_infos]


def _wandb(job: Path) -> tuple[object, dict, dict]:
    """The run record, the run config (every update replayed) and the summary."""
    records = read_finished_records(job)
    [run] = records_of_kind(records, "run")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    for record in records_of_kind(records, "config"):
        config.update({i.key: json.loads(i.value_json) for i in record.update})
    return run, config, summary(records)


def test_multirun_names_runs_and_writes_hparams_config_and_predictions(tmp_path, cwd):
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith("logger=")]
    args = ["-m", *tiny, "logger=many", "model=mlp_vanilla,resnet", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, cwd=cwd)
    check(proc)
    # console: one result line per job, the baselines once (the comparison), no W&B banners
    assert "wandb" not in proc.stdout + proc.stderr
    assert proc.stdout.count("| baseline: har |") == 1 and "Test split" not in proc.stdout
    assert proc.stdout.count(": qlike ") == 2
    for job, model in ((sweep / "0", "mlp_vanilla"), (sweep / "1", "resnet")):
        name = f"model={model}"
        metrics = read_json(job / "metrics.json")
        assert metrics["run"]["run_name"] == name
        assert metrics["run"]["run_group"] == "train/sweep"
        assert f"{name}: qlike {metrics['test']['qlike']:.4f}" in proc.stdout

        events = _event_dir(job, name)
        start, metric_tags = _hparams(events)
        params = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
        assert params["run"] == name and params["model"] == model
        assert params["depth"] == 10 and params["lr"] == pytest.approx(1e-3)
        assert params["source"] == "garch_sim" and params["seed"] == 42
        assert {"hparams/test_qlike", "hparams/qlike_ratio_har", "hparams/gamma"} <= set(
            metric_tags
        )
        assert {"hparams/first_last_ratio", "hparams/alerts_announced"} <= set(metric_tags)
        [qlike_event] = events.Scalars("hparams/test_qlike")
        assert qlike_event.value == pytest.approx(metrics["test"]["qlike"], rel=1e-6)
        [alerts_event] = events.Scalars("hparams/alerts_announced")
        assert alerts_event.value == sum(metrics["alerts"].values())
        [ratio_event] = events.Scalars("hparams/first_last_ratio")
        assert ratio_event.value == pytest.approx(metrics["gradient"]["first_last_ratio"], 1e-6)
        [text] = events.Tensors("config/text_summary")
        assert "depth: 10" in text.tensor_proto.string_val[0].decode()

        run, config, run_summary = _wandb(job)
        assert run.display_name == name and run.run_group == "train/sweep"
        assert list(run.tags) == [model, *tiny[:-1], name]  # tiny's last: num_threads=
        assert config["model"]["net"]["depth"] == 10 and config["data"]["source"] == "garch_sim"
        assert config["logger"]["wandb"]["name"] == name  # the resolved config
        assert run_summary["hparams/test_qlike"] == pytest.approx(metrics["test"]["qlike"])

        with (job / PREDICTIONS_FILE).open() as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["date", "realised", model, *PREDICTED_BASELINES]
        har = next(b for b in metrics["baselines"] if b["model"] == "har")
        assert len(rows) == har["n"]  # the whole test split
        dates = np.array([r["date"] for r in rows], dtype="datetime64[D]")
        assert (np.diff(dates) > np.timedelta64(0, "D")).all()
        realised = np.array([float(r["realised"]) for r in rows])
        for column, expected in ((model, metrics["test"]["qlike"]), ("har", har["qlike"])):
            forecast = np.array([float(r[column]) for r in rows])
            assert qlike(realised, forecast) == pytest.approx(expected, rel=1e-9)
    table = (sweep / "comparison.md").read_text()
    assert "| model=mlp_vanilla | 1 | ok |" in table and "| model=resnet | 1 | ok |" in table


@pytest.fixture
def hydra_job():
    """Make a composed config (with its ``hydra`` node) the current Hydra job, then forget it."""
    from hydra.core.hydra_config import HydraConfig

    def _set(overrides: list[str], mode: str, sweep_dir: Path) -> None:
        with composed(
            [*overrides, f"hydra.mode={mode}", f"hydra.sweep.dir={sweep_dir}"],
            return_hydra_config=True,
        ) as cfg:
            cfg.hydra.overrides.task = overrides  # what the launcher records for the job
            HydraConfig.instance().set_config(cfg)

    yield _set
    HydraConfig.instance().cfg = None


def test_job_names_of_a_single_run_and_of_a_sweep_job(hydra_job, tmp_path):
    from recipes.resolvers import job_names, single_run

    hydra_job(["logger=csv", "seed=3"], "RUN", tmp_path)
    assert job_names("train", "LSTM") == ("lstm", "train", ["lstm"])  # the model option
    assert single_run() is True
    sweep = tmp_path / "2026-12-02_08-00-00"
    sweep.mkdir()
    task = ["experiment=vanishing_depth", "logger=many", "seed=1,2"]
    OmegaConf.save({"hydra": {"overrides": {"task": task}}}, sweep / "multirun.yaml")
    job = ["experiment=vanishing_depth", "logger=many", "seed=2", "model=resnet"]
    hydra_job([*job, "model.net.depth=20"], "MULTIRUN", sweep)
    names = job_names("vanishing_depth", "ResidualMLP")
    assert names.name == "seed=2,model=resnet,model.net.depth=20"
    assert names.group == "vanishing_depth/2026-12-02_08-00-00"
    assert names.tags == ["resnet", "model=resnet", "model.net.depth=20"]
    assert single_run() is False
