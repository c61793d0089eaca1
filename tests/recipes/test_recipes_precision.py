"""Precision and accelerator paths: CPU (always) and CUDA (only where a GPU is present)."""

from __future__ import annotations

import math

import pytest
import torch

from recipes.train import METRICS_FILE, train
from tests.recipes.conftest import TINY, check, composed, read_json, run_cli

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY_NO_TRAINER = [o for o in TINY if not o.startswith("trainer=")]
FEW_STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]


@pytest.fixture
def run_in_process(tmp_path, monkeypatch):
    """``train(cfg)`` in this process on a composed config; restores torch's thread count."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    out = tmp_path / "out"

    def _run(overrides: list[str]) -> dict:
        with composed([f"paths.output_dir={out}", *overrides]) as cfg:
            metrics = train(cfg)
        assert read_json(out / METRICS_FILE)["test"] == metrics["test"]  # written by rank zero
        return metrics

    yield _run
    torch.set_num_threads(threads)


def _healthy(metrics: dict) -> None:
    assert metrics["test_error"] is None and math.isfinite(metrics["test"]["qlike"])
    assert metrics["gradient"]["first_last_ratio"] > 0


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_cpu_precision(precision, run_in_process):
    overrides = [*TINY, "model=transformer_prenorm", f"trainer.precision={precision}"]
    _healthy(run_in_process(overrides))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_gpu_precision(precision, run_in_process):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    overrides = [*TINY_NO_TRAINER, "trainer=gpu", *FEW_STEPS, f"trainer.precision={precision}"]
    _healthy(run_in_process([*overrides, "model=transformer_prenorm"]))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_gpu_ddp_from_the_cli(tmp_path, cwd):
    run = tmp_path / "run"
    args = [*TINY_NO_TRAINER, "trainer=ddp", "trainer.devices=2", *FEW_STEPS, "model=lstm"]
    check(run_cli([*args, f"hydra.run.dir={run}"], cwd=cwd, timeout=300))
    assert list(cwd.iterdir()) == []
    _healthy(read_json(run / METRICS_FILE))
