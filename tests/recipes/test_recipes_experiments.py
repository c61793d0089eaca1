"""The experiments end to end (slow): the pathologies they are built to show do show."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.recipes.conftest import check, read_json, run_cli

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path, cwd: Path, args: list[str], timeout: float = 400) -> dict[str, dict]:
    """Run a multirun; return metrics.json per run label, checking the comparison table."""
    sweep = tmp_path / "sweep"
    check(run_cli(["-m", *args, "num_threads=1", f"hydra.sweep.dir={sweep}"], cwd, timeout))
    assert list(cwd.iterdir()) == []
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    runs = sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    labels = [r["run"] for r in rows if not r["run"].startswith("baseline:")]
    assert len(labels) == len(runs)
    return {label: read_json(path) for label, path in zip(labels, runs, strict=True)}


def test_compare_architectures_sweeps_the_four_models(tmp_path, cwd):
    args = ["experiment=compare_architectures", "trainer.max_epochs=2", "logger=csv"]
    runs = _sweep(tmp_path, cwd, args)
    assert list(runs) == [
        "model=mlp_vanilla",
        "model=resnet",
        "model=transformer_prenorm",
        "model=lstm",
    ]
    assert all(r["run"]["data"] == "sp500" and r["test"]["qlike"] > 0 for r in runs.values())
    assert runs["model=mlp_vanilla"]["alerts"].get("vanishing", 0) >= 1
    assert not runs["model=lstm"]["alerts"]


def test_vanishing_depth_reproduces_the_picture(tmp_path, cwd):
    args = [
        "experiment=vanishing_depth",
        "model.net.depth=20",
        "trainer.max_epochs=2",
        "logger=csv",
    ]
    runs = _sweep(tmp_path, cwd, args)
    sigmoid = runs["model=mlp_vanilla"]["gradient"]["first_last_ratio"]
    residual = runs["model=resnet"]["gradient"]["first_last_ratio"]
    assert sigmoid <= 1e-3  # the first layer's gradient >= 1000x below the last's
    assert 0.1 <= residual <= 10  # within 10x
    assert runs["model=mlp_vanilla"]["alerts"].get("vanishing", 0) >= 1
    assert "vanishing" not in runs["model=resnet"]["alerts"]


def test_exploding_rnn_alerts_and_clipping_bounds_the_update(tmp_path, cwd):
    args = [
        "experiment=exploding_rnn",
        "data.sim_days=2500",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",
        "logger=csv",
    ]
    runs = _sweep(tmp_path, cwd, args)
    for clip in ("null", "1.0"):
        rnn = runs[f"model=rnn_vanilla,trainer.gradient_clip_val={clip}"]
        lstm = runs[f"model=lstm,trainer.gradient_clip_val={clip}"]
        assert rnn["alerts"].get("exploding", 0) >= 1
        assert "exploding" not in lstm["alerts"]
        assert rnn["gradient"]["grad_norm_max"] > 1e3
    clipped = runs["model=rnn_vanilla,trainer.gradient_clip_val=1.0"]["gradient"]
    unclipped = runs["model=rnn_vanilla,trainer.gradient_clip_val=null"]["gradient"]
    assert clipped["applied_grad_norm_max"] <= 1.0 + 1e-4
    assert unclipped["applied_grad_norm_max"] == pytest.approx(unclipped["grad_norm_max"])


def test_multirun_with_two_devices_uses_ddp_spawn(tmp_path, cwd):
    """`-m` with several devices: the experiment picks ddp_spawn; each job writes once."""
    args = [
        "experiment=compare_architectures",
        "model=mlp_vanilla,lstm",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "data=garch_sim",
        "data.sim_days=2500",
        "data.batch_size=64",
        "logger=csv",
    ]
    runs = _sweep(tmp_path, cwd, args)
    for metrics in runs.values():
        assert metrics["run"]["strategy"] == "ddp_spawn" and metrics["run"]["devices"] == 2
        job = Path(metrics["run"]["output_dir"])
        assert len(list(job.rglob("metrics.csv"))) == 1
        assert len(list(job.rglob("config.yaml"))) == 1
        assert metrics["test"]["qlike"] > 0 and metrics["gradient"]["first_last_ratio"] > 0


def test_rolling_origin_pools_years_and_aggregates_seeds(tmp_path, cwd):
    """Two test years, two models x two seeds on the simulator: per-year re-fits, pooled scores."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "experiment=rolling_origin",
        "model=lstm,resnet",
        "seed=1,2",
        "rolling.test_years=[2017,2018]",
        "data=garch_sim",
        "data.sim_days=1700",
        "data.batch_size=64",
        "trainer.max_epochs=2",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd)
    check(proc)
    assert list(cwd.iterdir()) == []
    # one line per job says the numbers are pooled over the test years
    assert proc.stdout.count("pooled over test years 2017-2018") == 4
    assert "Test split" not in proc.stdout
    runs = sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    assert len(runs) == 4
    for path in runs:
        metrics = read_json(path)
        years = metrics["per_year"]
        model = metrics["run"]["model"]
        assert [y["test_year"] for y in years] == [2017, 2018]
        assert sorted(p.name for p in path.parent.glob("origin_*")) == [
            "origin_2017",
            "origin_2018",
        ]
        n = sum(next(r["n"] for r in y["rows"] if r["model"] == "har") for y in years)
        pooled = {b["model"]: b for b in metrics["baselines"]}
        assert pooled["har"]["n"] == n and pooled["lhar"]["ratio_lhar"] == 1.0
        with (path.parent / "predictions.csv").open() as f:  # the years joined
            predictions = list(csv.DictReader(f))
        assert len(predictions) == n and predictions[0]["date"].startswith("2017-")
        assert predictions[-1]["date"].startswith("2018-") and predictions[0][model]
        test = metrics["test"]
        assert test["qlike"] > 0 and {"dm_t_har", "dm_t_log_har", "dm_t_lhar"} <= set(test)
        assert test["spa_pvalue"] == metrics["significance"]["spa"][model]["pvalue"]
        assert set(metrics["significance"]["mcs"]) == {model, *pooled}
    rows = {r["run"]: r for r in csv.DictReader((sweep / "comparison.csv").open())}
    assert rows["model=lstm"]["seeds"] == "2" and " ± " in rows["model=lstm"]["ratio_har"]
    assert rows["model=resnet"]["in_mcs"].endswith("/2")
    assert "baseline: lhar" in rows


def test_rnn_vs_lstm_sweep_and_the_growth_recipe(tmp_path, cwd):
    """experiment=rnn_vs_lstm on the simulator, then ``python -m recipes.rnn_growth --sweep``:
    the init table shows the seed facts, the trained table one row per model."""
    from recipes import rnn_growth

    args = [
        "experiment=rnn_vs_lstm",
        "data=garch_sim",
        "data.sim_days=1700",
        "data.batch_size=64",
        "data.window=22",
        "seed=1",
        "trainer.max_epochs=2",
        "logger=csv",
    ]
    runs = _sweep(tmp_path, cwd, args)
    assert list(runs) == ["model=lstm", "model=rnn_orthogonal", "model=rnn_vanilla"]
    assert all(r["run"]["data"] == "garch_sim" and r["test"]["qlike"] > 0 for r in runs.values())
    out = tmp_path / "growth"
    argv = ["--data", "garch_sim", "--rho", "0.5", "3", "--lengths", "10", "22", "40", "66"]
    argv += ["--seeds", "0", "--windows", "16", "--sweep", str(tmp_path / "sweep")]
    result = rnn_growth.main([*argv, "--out", str(out)])
    init = {(r["model"], r["cell"]): r for r in result["init"]}
    assert init[("rnn rho=0.5", "linear")]["rate"] == pytest.approx(0.5, rel=0.02)
    assert init[("rnn rho=3", "linear")]["rate"] == pytest.approx(3.0, rel=0.02)
    damped = init[("rnn rho=3", "tanh")]
    assert damped["rate"] < 0.6 * 3 and damped["deriv_mean"] < 0.5
    assert init[("rnn orthogonal", "linear")]["rate"] == pytest.approx(1.0, abs=1e-3)
    assert init[("lstm default init", "lstm")]["forget_mean"] == pytest.approx(0.5, abs=0.05)
    assert init[("lstm forget bias 1", "lstm")]["forget_mean"] > 0.65
    trained = {r["run"]: r for r in result["trained"]}
    assert set(trained) == set(runs)
    assert trained["model=rnn_vanilla"]["rate"] > 1 > trained["model=rnn_orthogonal"]["rate"]
    assert trained["model=lstm"]["forget_mean"] is not None
    text = (out / "rnn_growth.md").read_text()
    assert "| garch_sim | rnn rho=3 | linear | 3.000 |" in text
    assert "# After training" in text and "| model=rnn_orthogonal | 1 |" in text
    assert read_json(out / "rnn_growth.json")["trained"][0]["lengths"] == [10, 22, 40, 66]
