"""The resolvers the configs use, the sweep comparison and the run summary (in tiny CPU fits)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lightning_gradflow import GradFlowMonitor
from recipes import compare, resolvers
from recipes.callbacks import SUMMARY_FILE, RunSummary
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


@pytest.mark.parametrize(
    ("devices", "expected"), [(1, 1), (4, 4), ("2", 2), ("0,1,2", 3), ([0, 3], 2)]
)
def test_num_devices(devices, expected):
    assert resolvers.num_devices(devices) == expected


def test_sweep_strategy(monkeypatch):
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert resolvers.sweep_strategy(1, 1) == "auto"
    assert resolvers.sweep_strategy(2, 1) == "ddp_spawn"
    assert resolvers.sweep_strategy(1, 2) == "ddp_spawn"
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert resolvers.sweep_strategy(4, 2) == "ddp"
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: spawn as usual
    assert resolvers.sweep_strategy(4, 1) == "ddp_spawn"


def test_wandb_is_offline_unless_asked(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolvers.wandb_offline() is True
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolvers.wandb_offline() is False


def test_gpus_per_node():
    assert resolvers.gpus_per_node("cpu", 4) is None
    assert resolvers.gpus_per_node("gpu", 4) == 4


def _record(model: str, qlike: float, ratio: float | None, alerts: dict, overrides: list) -> dict:
    return {
        "run": {"model": model, "data": "sp500", "task_name": "demo", "overrides": overrides},
        "test": {"qlike": qlike, "qlike_ratio_har": 1.1, "mse_log": 0.5, "mz_r2": 0.3},
        "baselines": [
            {"model": "har", "qlike": 0.49, "ratio_har": 1.0, "mse_log": 0.4, "mz_r2": 0.5}
        ],
        "alerts": alerts,
        "gradient": {"first_last_ratio": ratio, "gamma": 0.5, "grad_norm_max": 3.0},
        "training": {"epochs": 3},
        "wall_time_s": 12.34,
    }


def _sweep(root: Path, records: list[dict]) -> Path:
    for i, record in enumerate(records):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / compare.METRICS_FILE).write_text(json.dumps(record))
    return root


def test_comparison_labels_runs_by_what_differs(tmp_path):
    records = [
        _record("mlp_vanilla", 0.9, 1e-9, {"vanishing": 4}, ["model=mlp_vanilla", "seed=1"]),
        _record("resnet", 0.5, 0.7, {}, ["model=resnet", "seed=1"]),
        _record("resnet", 0.5, 0.7, {}, ["model=resnet", "model.depth=20", "seed=1"]),
    ]
    sweep = _sweep(tmp_path, records)
    text = compare.write_comparison(sweep)
    assert "| model=mlp_vanilla | 1 | ok | 0.9000 |" in text
    assert "| model=resnet,model.depth=20 |" in text
    assert "vanishing:4" in text and "1.0e-09" in text
    assert "| baseline: har |  |  | 0.4900 |" in text
    rows = list(csv.DictReader((sweep / compare.TABLE_CSV).open()))
    assert [r["run"] for r in rows] == [
        "model=mlp_vanilla",
        "model=resnet",
        "model=resnet,model.depth=20",
        "baseline: har",
    ]
    assert rows[0]["wall_s"] == "12.3" and rows[1]["alerts"] == "none"
    assert (sweep / compare.TABLE_MD).read_text().startswith("# demo (3 runs, sp500)")


def test_comparison_lists_baselines_per_data_set(tmp_path):
    records = [_record("lstm", 0.5, 0.9, {}, [f"data={d}"]) for d in ("sp500", "nasdaq")]
    records[1]["run"]["data"] = "nasdaq"
    rows = compare.comparison_rows(records)
    assert [r["run"] for r in rows] == [
        "data=sp500",
        "data=nasdaq",
        "baseline (sp500): har",
        "baseline (nasdaq): har",
    ]


def test_comparison_of_an_empty_sweep_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no metrics\.json"):
        compare.write_comparison(tmp_path)


def test_compare_cli(tmp_path, capsys):
    sweep = _sweep(tmp_path, [_record("lstm", 0.5, 0.9, {}, ["model=lstm"])])
    compare.main([str(sweep)])
    assert "| model=lstm |" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["32-true", "64-true"])
def test_run_summary_measures_the_applied_norm_in_any_precision(precision, tmp_path):
    """Without clipping, the norm the optimizer applied is the monitor's largest total norm."""
    callbacks = [GradFlowMonitor(log_every_n_steps=1), RunSummary(tmp_path)]
    quiet_trainer(callbacks=callbacks, max_steps=3, precision=precision).fit(
        Regressor(mlp(depth=2)), regression_loader()
    )
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["steps"] == 3
    assert summary["applied_grad_norm_max"] == pytest.approx(summary["grad_norm_max"], rel=1e-6)


def test_seeds_aggregate_to_mean_and_sd_in_numeric_job_order(tmp_path):
    """12 jobs (two models x six seeds): job 10 sorts after job 2, each model is one row."""
    records = []
    for model, base in (("lstm", 0.90), ("resnet", 1.00)):
        for seed in range(6):
            rec = _record(model, 0.5, 0.9, {"vanishing": 1} if seed == 0 else {}, [])
            rec["run"]["overrides"] = [f"model={model}", f"seed={seed}"]
            rec["test"].update(qlike_ratio_har=base + 0.01 * seed, dm_t_lhar=-1.0 + seed)
            rec["test"]["in_mcs"] = seed % 2 == 0
            records.append(rec)
    # jobs 0..11, interleaved so that a string sort of job numbers would regroup them
    order = [records[i // 2 + 6 * (i % 2)] for i in range(12)]
    for i, rec in enumerate(order):
        rec["wall_time_s"] = float(i)
    sweep = _sweep(tmp_path, order)
    assert [r["wall_time_s"] for r in compare.collect(sweep)] == list(range(12))
    rows = {r["run"]: r for r in compare.comparison_rows(compare.collect(sweep))}
    lstm, resnet = rows["model=lstm"], rows["model=resnet"]
    assert lstm["seeds"] == "6" and resnet["seeds"] == "6"
    sd = float(np.std([0.01 * s for s in range(6)], ddof=1))
    assert lstm["ratio_har"] == f"{0.925:.3f} ± {sd:.3f}"
    assert resnet["ratio_har"] == f"{1.025:.3f} ± {sd:.3f}"
    assert lstm["dm_lhar"] == f"1.50 ± {np.std(range(6), ddof=1):.2f}"
    assert lstm["in_mcs"] == "3/6" and lstm["alerts"] == "vanishing:1"
    assert lstm["wall_s"] == f"5.0 ± {np.std(range(0, 12, 2), ddof=1):.1f}"  # even jobs
