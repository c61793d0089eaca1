"""The real CLI in subprocesses: every model, a multirun table, 2-process DDP, bad overrides."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from recipes.volatility import BASELINES
from tests.recipes.conftest import MODELS, TINY, check, read_json, run_cli


def test_multirun_over_every_model_writes_under_the_sweep_dir(tmp_path, cwd):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *TINY, f"hydra.sweep.dir={sweep}", f"model={','.join(MODELS)}"], cwd=cwd)
    check(proc)
    assert list(cwd.iterdir()) == []
    for num, model in enumerate(MODELS):
        job = sweep / str(num)
        metrics = read_json(job / "metrics.json")
        assert metrics["run"]["model"] == model and metrics["run"]["output_dir"] == str(job)
        assert metrics["test"]["qlike"] > 0 and metrics["test_error"] is None
        assert [b["model"] for b in metrics["baselines"]] == list(BASELINES)
        assert metrics["gradient"]["first_last_ratio"] > 0
        assert isinstance(metrics["alerts"], dict) and metrics["wall_time_s"] > 0
        assert (job / ".hydra" / "config.yaml").is_file()
        assert metrics["run"]["run_name"] == f"model={model}"
        assert (job / "csv" / f"model={model}" / "metrics.csv").is_file()
        assert [p.parent for p in job.rglob("*.ckpt")] == [job / "checkpoints"]
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    assert [r["run"] for r in rows] == [f"model={m}" for m in MODELS] + [
        f"baseline: {b}" for b in BASELINES
    ]
    assert all(rows[i]["qlike"] and rows[i]["grad_ratio"] for i in range(len(MODELS)))
    table = (sweep / "comparison.md").read_text()
    assert "| model=transformer_prenorm |" in table and "| baseline: har |" in table
    # printed at the end of the multirun
    assert "| run | seeds | status | qlike | ratio_har |" in proc.stdout


def test_single_run_puts_every_logger_under_the_run_dir(tmp_path, cwd):
    run = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("logger=")]
    check(run_cli([*tiny, "logger=many", "model=lstm", f"hydra.run.dir={run}"], cwd=cwd))
    assert list(cwd.iterdir()) == []
    metrics = read_json(run / "metrics.json")
    name = metrics["run"]["run_name"]  # the overrides but logger= and num_threads=
    assert name == ",".join(o for o in tiny if not o.startswith("num_threads=")) + ",model=lstm"
    assert list((run / "tensorboard" / name).glob("events.out.tfevents.*"))
    assert (run / "csv" / name / "metrics.csv").is_file()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1  # W&B ran offline
    assert metrics["run"]["multirun"] is False and metrics["test"]["qlike"] > 0
    dm = metrics["significance"]["dm"]["lstm"]
    assert set(dm) == {"har", "log_har", "lhar"} and all(d["bandwidth"] == 6 for d in dm.values())
    assert set(metrics["significance"]["mcs"]) == {"lstm", *BASELINES}
    assert metrics["test"]["dm_t_lhar"] == dm["lhar"]["t"] and "in_mcs" in metrics["test"]
    spa = metrics["significance"]["spa"]["lstm"]  # the network against every baseline
    assert 0 <= spa["pvalue_lower"] <= spa["pvalue"] <= spa["pvalue_upper"] <= 1
    assert set(spa["better"]) <= set(BASELINES)
    assert metrics["test"]["spa_pvalue"] == spa["pvalue"]
    assert metrics["test"]["spa_beaten_by"] == spa["better"]


def test_ddp_two_cpu_processes_one_run_dir_alerts_once(tmp_path, cwd):
    """Lightning relaunches the CLI for rank 1 into the same run dir; rank zero writes."""
    run = tmp_path / "run"
    args = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "data=garch_sim",
        "data.sim_days=2500",  # 4 batches of 64 per rank
        "data.batch_size=64",
        "num_threads=1",
        "logger=csv",
        "model=mlp_vanilla",  # a 10-layer sigmoid MLP: `vanishing` from the first steps
        "+callbacks.gradflow.detectors.patience=2",
        f"hydra.run.dir={run}",
    ]
    check(run_cli(args, cwd=cwd, timeout=300))
    assert list(cwd.iterdir()) == []
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran, in the same directory
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("config.yaml")] == [
        Path("run/.hydra/config.yaml")
    ]
    assert len(list(run.rglob("metrics.csv"))) == 1
    alert_files = list(run.rglob("gradflow_alerts.jsonl"))
    assert len(alert_files) == 1
    lines = alert_files[0].read_text().splitlines()
    assert lines and len(set(lines)) == len(lines)  # each alert once, not once per rank
    announced = read_json(run / "gradflow_summary.json")["alerts"]
    assert [json.loads(line)["step"] for line in lines] == [a["step"] for a in announced]
    metrics = read_json(run / "metrics.json")
    assert metrics["alerts"].get("vanishing", 0) >= 1
    assert metrics["test"]["qlike"] > 0  # scored on one device after the ranks finished
    assert metrics["gradient"]["first_last_ratio"] < 1e-3


@pytest.mark.parametrize(
    ("override", "messages"),
    [
        ("model=nope", ["Could not find 'model/nope'", "lstm", "transformer_prenorm"]),
        ("model.net.depth=-1", ["Error in call to target", "depth=-1 is not allowed; need > 0"]),
        (
            "model.optimizer.lr=abc",
            ["VolatilityForecaster", "lr='abc' is not allowed: expected a positive number"],
        ),
    ],
)
def test_bad_override_fails_with_a_clear_message(override, messages, tmp_path, cwd):
    proc = run_cli([*TINY, "model=mlp_vanilla", override, f"hydra.run.dir={tmp_path / 'run'}"], cwd)
    assert proc.returncode != 0
    for message in messages:
        assert message in proc.stderr, proc.stderr[-3000:]
    assert list(cwd.iterdir()) == []


@pytest.mark.slow
def test_a_job_raised_by_the_monitor_is_a_failed_row_and_still_fails(tmp_path, cwd):
    """``on_alert=raise``: the sigmoid MLP's job raises GradientPathologyError at its first
    checked step; it still writes metrics.json (failed, with the alert and the gradients so
    far), the comparison shows it next to the LSTM that scored, and the multirun fails."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TINY,
        "model=mlp_vanilla,lstm",
        "callbacks.gradflow.on_alert=raise",
        "+callbacks.gradflow.detectors.patience=2",
        "trainer.log_every_n_steps=1",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd=cwd)
    assert proc.returncode != 0  # the error propagates: the job (and the multirun) fails
    assert "GradientPathologyError" in proc.stderr and "vanishing" in proc.stderr
    failed = read_json(sweep / "0" / "metrics.json")
    assert failed["status"] == "failed" and failed["run"]["model"] == "mlp_vanilla"
    error = failed["error"]
    assert error["type"] == "GradientPathologyError" and error["step"] >= 1
    assert [a["kind"] for a in error["alerts"]] == ["vanishing"]
    assert error["alerts"][0]["step"] < error["step"] + 1 and "gradient norm" in error["message"]
    assert failed["alerts"] == {"vanishing": 1} and failed["test"] == {}
    assert failed["gradient"]["first_last_ratio"] < 1e-3  # the summary up to the raise
    assert failed["gradient"]["grad_norm_max"] > 0
    assert read_json(sweep / "1" / "metrics.json")["status"] == "ok"
    rows = {r["run"]: r for r in csv.DictReader((sweep / "comparison.csv").open())}
    mlp, lstm = rows["model=mlp_vanilla"], rows["model=lstm"]
    assert mlp["status"] == "failed" and lstm["status"] == "ok" and not lstm["failure"]
    step = error["alerts"][0]["step"]
    assert mlp["failure"].startswith(f"GradientPathologyError: vanishing @ step {step}: gradient")
    assert mlp["alerts"] == "vanishing:1 (1 step)" and mlp["qlike"] == "" and mlp["grad_ratio"]
    assert float(lstm["qlike"]) > 0 and "baseline: har" in rows  # baselines from the LSTM
    table = (sweep / "comparison.md").read_text()
    assert "| model=mlp_vanilla | 1 | failed |" in table and "(2 runs," in table
    # the job's one line
    assert (
        f"model=mlp_vanilla: FAILED GradientPathologyError (vanishing) at step {error['step']}"
        in proc.stdout
    )


def test_main_returns_the_optimized_metric(tmp_path, monkeypatch):
    """``main`` returns ``cfg.optimized_metric`` of the run (what an Optuna sweeper minimises);
    ``None`` where ``train`` returns nothing (ranks other than zero) or the path is absent."""
    import torch

    import recipes.train as train_module
    from tests.recipes.conftest import composed

    threads = torch.get_num_threads()
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    out = tmp_path / "out"
    try:
        with composed([*TINY, "model=lstm", f"paths.output_dir={out}"]) as cfg:
            assert cfg.optimized_metric == "test.qlike"
            value = train_module.main(cfg)  # Hydra passes a given config straight through
    finally:
        torch.set_num_threads(threads)
    metrics = read_json(out / "metrics.json")
    assert isinstance(value, float) and value == metrics["test"]["qlike"] > 0
    for path, expected in [
        ("training.best_val_loss", metrics["training"]["best_val_loss"]),
        ("test.qlike_ratio_har", metrics["test"]["qlike_ratio_har"]),
        ("test.nope", None),
        ("test.spa_beaten_by", None),  # not a number
        (None, None),
    ]:
        cfg.optimized_metric = path
        assert train_module.optimized_metric(cfg, metrics) == expected
    monkeypatch.setattr(train_module, "train", lambda cfg: None)  # a rank other than zero
    cfg.optimized_metric = "test.qlike"
    assert train_module.main(cfg) is None
