"""GradFlowMonitor -> Weights & Biases (offline), read back from the run's .wandb records."""

import numpy as np
import pytest
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gradflow import GradFlowMonitor, LogBins
from lightning_gradflow.writers.wandb_writer import merge_bins
from tests.helpers.lightning_models import (
    Regressor,
    StepCounter,
    mlp,
    quiet_trainer,
    regression_loader,
)
from tests.helpers.wandb_records import (
    find_wandb_file,
    finish_wandb,
    histograms,
    history_rows,
    images,
    offline_wandb_env,
    read_finished_records,
    run_files_dir,
    summary,
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
    records = read_finished_records(root)
    yield monitor, root, history_rows(records), summary(records)
    finish_wandb()


def _steps_with(rows, predicate):
    return [row["trainer/global_step"] for row in rows if predicate(row)]


def test_scalars_histograms_and_picture_reach_wandb(wandb_run):
    monitor, root, rows, run_summary = wandb_run
    assert _steps_with(rows, lambda r: "grad_norm/total" in r) == [0, 2, 4, 6]
    first = "grad_log10_norm/00.net.0"
    assert all(-6 < r[first] < 3 for r in rows if first in r)
    assert _steps_with(rows, lambda r: "grad_flow/gamma" in r) == [0, 2, 4, 6]

    hist_rows = [r for r in rows if any(k.startswith("grad_log10_hist/") for k in histograms(r))]
    assert [r["trainer/global_step"] for r in hist_rows] == [0, 3, 6]
    edges = monitor.histogram_bins.edges()
    for row in hist_rows:
        hists = histograms(row)
        assert set(hists) == {f"grad_log10_hist/{tag}" for tag in monitor.layer_tags}
        for layer, tag in zip(monitor.layers, monitor.layer_tags, strict=True):
            hist = hists[f"grad_log10_hist/{tag}"]
            assert hist["bins"] == pytest.approx(edges)
            assert sum(hist["values"]) == layer.numel

    picture_rows = [r for r in rows if "grad_flow/picture" in images(r)]
    assert [r["trainer/global_step"] for r in picture_rows] == [0, 4, 6]  # 6: the last step
    heatmap_rows = [r for r in rows if "grad_flow/heatmap" in images(r)]
    assert [r["trainer/global_step"] for r in heatmap_rows] == [0, 4, 6]
    image = images(picture_rows[0])["grad_flow/picture"]
    assert image["format"] == "png" and image["width"] >= 600
    assert (run_files_dir(find_wandb_file(root)) / image["path"]).is_file()

    expected = monitor.run_summary()  # the run's numbers, in the W&B run summary at the end
    assert {"grad_flow/gamma", "grad_flow/first_last_ratio", "grad_flow/dead_layers"} <= set(
        expected
    )
    for key, value in expected.items():
        assert run_summary[key] == pytest.approx(value), key


class RecordKeeper(StepCounter):
    """Keeps every flushed record, to compare with what W&B received."""


def test_histograms_above_wandbs_512_bins_are_merged_for_wandb_only(tmp_path, monkeypatch):
    root = offline_wandb_env(monkeypatch, tmp_path / "wandb")
    bins = LogBins(low_exp=-12, high_exp=4, per_decade=64)  # 1024 value bins + 2 buckets
    monitor = RecordKeeper(
        histogram_every_n_steps=1,
        plot_every_n_steps=None,
        probe_every_n_steps=None,
        histogram_bins=bins,
        linear_histogram_bins=1000,
    )
    wandb_logger = WandbLogger(save_dir=str(root), offline=True, project="gradflow-test")
    tb_logger = TensorBoardLogger(tmp_path / "tb", name="run", version=0)
    quiet_trainer(logger=[wandb_logger, tb_logger], callbacks=[monitor], max_steps=2).fit(
        Regressor(mlp(depth=1)), regression_loader()
    )
    finish_wandb(wandb_logger.experiment)
    rows = [r for r in history_rows(read_finished_records(root)) if histograms(r)]
    assert [r["trainer/global_step"] for r in rows] == [0, 1]
    edges = np.asarray(bins.edges())
    for row, record in zip(rows, monitor.records, strict=True):
        for i, layer in enumerate(monitor.layers):
            log_hist = histograms(row)[f"grad_log10_hist/{monitor.layer_tags[i]}"]
            counts, merged_edges = merge_bins(record.log_histograms[i], edges, 512)
            assert len(log_hist["values"]) == 2 + 1024 // 3 + 1  # runs of 3 inner bins
            assert log_hist["values"] == counts.tolist() and sum(counts) == layer.numel
            assert log_hist["bins"] == pytest.approx(merged_edges.tolist())
            assert log_hist["bins"][:2] == [-13.0, -12.0] and log_hist["bins"][-2:] == [4.0, 5.0]
            values = histograms(row)[f"grad_values/{monitor.layer_tags[i]}"]
            linear, maxabs = record.linear_histograms[0][i], record.linear_histograms[1][i]
            counts, _ = merge_bins(linear, np.linspace(-1, 1, 1001) * maxabs, 512)
            assert len(values["values"]) == 2 + 998 // 2  # runs of 2 inner bins
            assert values["values"] == counts.tolist() and sum(counts) == layer.numel
            assert values["bins"][0] == pytest.approx(-maxabs)
    events = EventAccumulator(str(tmp_path / "tb" / "run" / "version_0"), {"histograms": 0})
    events.Reload()
    for tag in monitor.layer_tags:  # TensorBoard keeps every bin
        [first, _] = events.Histograms(f"grad_values/{tag}")
        assert len(first.histogram_value.bucket) == 1000
        [first, _] = events.Histograms(f"grad_log10_hist/{tag}")
        assert len(first.histogram_value.bucket) == bins.num_buckets == 1026
