"""A run that dies is still reported: ``on_alert=raise`` in this process (fast)."""

from __future__ import annotations

import pytest
import torch

from lightning_gradflow import GradientPathologyError
from recipes import compare
from recipes.train import METRICS_FILE, train
from tests.recipes.conftest import TINY, composed, read_json

RAISE = [
    "callbacks.gradflow.on_alert=raise",
    "+callbacks.gradflow.detectors.patience=2",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture
def restore_threads(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    yield
    torch.set_num_threads(threads)


def _raise_in_process(out, overrides: list[str]) -> GradientPathologyError:
    overrides = [f"paths.output_dir={out}", *TINY, "model=mlp_vanilla", *RAISE, *overrides]
    with composed(overrides) as cfg, pytest.raises(GradientPathologyError) as info:
        train(cfg)
    return info.value


def test_a_raised_fit_writes_failed_metrics_and_propagates(tmp_path, restore_threads, capsys):
    out = tmp_path / "out"
    error = _raise_in_process(out, [])
    metrics = read_json(out / METRICS_FILE)
    assert metrics["status"] == "failed" and metrics["test"] == {} and metrics["baselines"] == []
    recorded = metrics["error"]
    assert recorded["type"] == "GradientPathologyError" and recorded["message"] == str(error)
    assert recorded["alerts"] == [
        {"kind": a.kind, "severity": a.severity, "step": a.step, "message": a.message}
        for a in error.alerts
    ]
    assert [a["kind"] for a in recorded["alerts"]] == ["vanishing"]
    assert metrics["alerts"] == {"vanishing": 1}
    # the gradient summary up to the raise (RunSummary writes it on the exception)
    assert metrics["gradient"]["first_last_ratio"] < 1e-3
    assert metrics["gradient"]["grad_norm_max"] > 0 and metrics["training"]["steps"] >= 1
    printed = capsys.readouterr().out
    assert "Run FAILED (garch_sim, MLP)" in printed  # composed: the net class, not the option
    assert f"raised by vanishing @ step {error.alerts[0].step}" in printed
    # the comparison shows it as a failed row with the alert, baselines from a run that scored
    ok = {
        "run": {"model": "lstm", "data": "garch_sim", "overrides": ["model=lstm"]},
        "status": "ok",
        "test": {"qlike": 0.5, "qlike_ratio_har": 1.0},
        "baselines": [{"model": "har", "qlike": 0.5, "ratio_har": 1.0, "mse_log": 1, "mz_r2": 0}],
        "alerts": {},
        "gradient": {},
    }
    assert metrics["run"]["run_name"] == "MLP"  # composed: no overrides, the net class
    metrics["run"]["run_name"] = "model=mlp_vanilla"
    rows = {r["run"]: r for r in compare.comparison_rows([metrics, ok])}
    failed = rows["model=mlp_vanilla"]
    assert failed["status"] == "failed" and failed["qlike"] == ""
    assert failed["failure"].startswith(
        f"GradientPathologyError: vanishing @ step {error.alerts[0].step}: gradient norm falls"
    )
    assert failed["alerts"] == "vanishing:1 (1 step)" and failed["grad_ratio"]
    assert rows["model=lstm"]["status"] == "ok" and rows["model=lstm"]["failure"] == ""
    assert "baseline (garch_sim): har" in rows or "baseline: har" in rows


def test_a_raised_rolling_run_names_its_test_year(tmp_path, restore_threads):
    out = tmp_path / "out"
    rolling = ["experiment=rolling_origin", "rolling.test_years=[2017,2018]", "trainer=debug"]
    _raise_in_process(out, rolling)
    metrics = read_json(out / METRICS_FILE)
    assert metrics["status"] == "failed" and metrics["run"]["failed_test_year"] == 2017
    assert metrics["run"]["rolling"] == [2017, 2018]
    assert metrics["error"]["alerts"][0]["kind"] == "vanishing"
    assert not (out / "origin_2018").exists()  # the run stopped at the first failed year
