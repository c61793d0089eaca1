"""The offline ``.wandb`` reader in ``tests.helpers.wandb_records`` round-trips real runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

wandb = pytest.importorskip("wandb")
pl = pytest.importorskip("pytorch_lightning")
torch = pytest.importorskip("torch")

from tests.helpers.wandb_records import (  # noqa: E402
    alerts,
    find_wandb_file,
    finish_wandb,
    histograms,
    history_rows,
    images,
    offline_wandb_env,
    read_finished_records,
    read_records,
    run_files_dir,
    summary,
)


@pytest.fixture
def wandb_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated, silent, offline W&B directory; finishes any run left open and stops
    the ``wandb-core`` service so nothing leaks into the next test."""
    root = offline_wandb_env(monkeypatch, tmp_path / "wandb_root")
    yield root
    finish_wandb()


def test_plain_offline_run_round_trips(wandb_root: Path) -> None:
    counts = np.array([3, 0, 5, 2])
    edges = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])

    run = wandb.init(mode="offline", dir=wandb_root, project="t")
    run.log(
        {
            "loss": 0.25,
            "grads/h": wandb.Histogram(np_histogram=(counts, edges)),
            "img": wandb.Image(np.zeros((8, 8, 3), np.uint8)),
        }
    )
    run.log({"loss": 0.125})
    run.alert(title="exploding grads", text="norm > 1e3", level=wandb.AlertLevel.WARN)
    finish_wandb(run)  # run.finish() alone returns before the file is flushed

    path = find_wandb_file(wandb_root)
    records = read_records(path)
    assert [r.num for r in records] == list(range(1, len(records) + 1))
    rows = history_rows(records)

    assert [r["_step"] for r in rows] == [0, 1]
    assert [r["loss"] for r in rows] == [0.25, 0.125]

    assert histograms(rows[0]) == {
        "grads/h": {"_type": "histogram", "values": [3, 0, 5, 2], "bins": edges.tolist()}
    }
    assert histograms(rows[1]) == {}

    (img_key, img), *others = images(rows[0]).items()
    assert not others
    assert img_key == "img"
    assert img["_type"] == "image-file"
    assert (img["width"], img["height"], img["format"]) == (8, 8, "png")
    assert img["path"].startswith("media/images/img_0_")
    assert (run_files_dir(path) / img["path"]).is_file()

    assert alerts(records) == [
        {
            "title": "exploding grads",
            "text": "norm > 1e3",
            "level": "WARN",
            "wait_duration": 60_000,
        }
    ]
    assert summary(records)["loss"] == 0.125


class _TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _HistogramCallback(pl.Callback):
    """Logs a histogram of the layer weights straight to the W&B run every step."""

    def __init__(self) -> None:
        self.logged: list[tuple[list[int], list[float]]] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        weights = pl_module.layer.weight.detach().cpu().numpy().ravel()
        counts, edges = np.histogram(weights, bins=3)
        self.logged.append((counts.tolist(), edges.tolist()))
        trainer.logger.experiment.log(
            {"weights/layer": wandb.Histogram(np_histogram=(counts, edges))}
        )


def test_lightning_wandb_logger_round_trips(wandb_root: Path) -> None:
    from pytorch_lightning.loggers import WandbLogger

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4, 4), torch.randn(4, 1))
    callback = _HistogramCallback()
    logger = WandbLogger(offline=True, save_dir=wandb_root, project="t")
    trainer = pl.Trainer(
        max_steps=2,
        logger=logger,
        callbacks=[callback],
        accelerator="cpu",
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=wandb_root,
    )
    trainer.fit(_TinyModule(), torch.utils.data.DataLoader(data, batch_size=2))
    # WandbLogger.finalize() does not finish the run, and run.finish() returns before
    # wandb-core has flushed the file: poll for the complete file instead of tearing down.
    logger.experiment.finish()

    rows = history_rows(read_finished_records(wandb_root))
    logged = [
        (h["values"], h["bins"])
        for row in rows
        for key, h in histograms(row).items()
        if key == "weights/layer"
    ]
    assert logged == callback.logged
    assert len(logged) == 2
    assert [r["train_loss"] for r in rows if "train_loss" in r]
    assert all(r["trainer/global_step"] in (0, 1) for r in rows if "trainer/global_step" in r)
