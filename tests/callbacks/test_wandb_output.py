"""GradFlowMonitor -> Weights & Biases (offline), read back from the run's .wandb records."""

import pytest
from pytorch_lightning.loggers import WandbLogger

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader
from tests.helpers.wandb_records import (
    find_wandb_file,
    finish_wandb,
    histograms,
    history_rows,
    images,
    offline_wandb_env,
    read_finished_records,
    run_files_dir,
)


@pytest.fixture
def wandb_run(tmp_path, monkeypatch):
    root = offline_wandb_env(monkeypatch, tmp_path / "wandb")
    monitor = GradFlowMonitor(log_every_n_steps=2, histogram_every_n_steps=3, plot_every_n_steps=4)
    logger = WandbLogger(save_dir=str(root), offline=True, project="gradflow-test")
    quiet_trainer(logger=logger, callbacks=[monitor], max_steps=7).fit(
        Regressor(mlp(depth=3)), regression_loader(n=128, batch_size=8)
    )
    finish_wandb(logger.experiment)
    yield monitor, root, history_rows(read_finished_records(root))
    finish_wandb()


def _steps_with(rows, predicate):
    return [row["trainer/global_step"] for row in rows if predicate(row)]


def test_scalars_histograms_and_picture_reach_wandb(wandb_run):
    monitor, root, rows = wandb_run
    assert _steps_with(rows, lambda r: "grad_norm/total" in r) == [0, 2, 4, 6]
    assert all(r["grad_norm/net.0"] > 0 for r in rows if "grad_norm/net.0" in r)

    hist_rows = [r for r in rows if any(k.startswith("grad_hist/") for k in histograms(r))]
    assert [r["trainer/global_step"] for r in hist_rows] == [0, 3, 6]
    edges = monitor.histogram_bins.edges()
    for row in hist_rows:
        hists = histograms(row)
        assert set(hists) == {f"grad_hist/{layer.name}" for layer in monitor.layers}
        for layer in monitor.layers:
            hist = hists[f"grad_hist/{layer.name}"]
            assert hist["bins"] == pytest.approx(edges)
            assert sum(hist["values"]) == layer.numel

    picture_rows = [r for r in rows if images(r)]
    assert [r["trainer/global_step"] for r in picture_rows] == [0, 4]
    image = images(picture_rows[0])["grad_flow"]
    assert image["format"] == "png" and image["width"] >= 600
    assert (run_files_dir(find_wandb_file(root)) / image["path"]).is_file()
