"""``VolatilityForecaster``: logging, test-time scoring, and short CPU trainings against HAR."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.forecaster import VolatilityForecaster, qlike_loss
from recipes.volatility.models import LSTM, MLP, Transformer

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers")


def trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small recurrent batches run fastest single-threaded (and two threads on two busy cores
    oversubscribe badly: ~100x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def adam(**kwargs: Any) -> partial:
    """What Hydra builds from ``{_target_: torch.optim.Adam, _partial_: true, **kwargs}``."""
    return partial(torch.optim.Adam, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "adam"}, "optimizer='adam' is not allowed: expected a callable"),
        ({"scheduler": "cosine"}, "scheduler='cosine' is not allowed: expected null or a callable"),
        ({"loss": "mae"}, "loss='mae'"),
        ({"optimizer": adam(lr=0.0)}, "lr=0.0"),
        # torch's own checks, named with the setting: at construction, not at fit
        ({"optimizer": adam(betas=(0.9, 2.0))}, r"optimizer=.*Invalid beta parameter"),
        ({"optimizer": adam(lr=1e-3, momentum=0.9)}, r"optimizer=.*unexpected keyword.*momentum"),
        ({"optimizer": torch.optim.Adam}, None),  # a class is a factory too
        (
            {"scheduler": partial(torch.optim.lr_scheduler.StepLR, step=3)},
            r"scheduler=.*unexpected keyword.*step",
        ),
        ({"optimizer": lambda params: None}, "expected a torch.optim.Optimizer, not NoneType"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str | None) -> None:
    if match is None:
        VolatilityForecaster(LSTM(3), **kwargs)
        return
    with pytest.raises(ValueError, match=match):
        VolatilityForecaster(LSTM(3), **kwargs)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("lr", "abc", "a positive number"),  # Hydra's model.optimizer.lr=abc
        ("lr", "1e-3", "a positive number"),  # a number in a string is still a string
        ("lr", None, "a positive number"),
        ("lr", True, "a positive number"),
        ("lr", 0, "a positive number"),
        ("lr", -1e-3, "a positive number"),
        ("lr", float("nan"), "a positive number"),
        ("lr", float("inf"), "a positive number"),
        ("weight_decay", "x", "a non-negative number"),
        ("weight_decay", -0.1, "a non-negative number"),
        ("weight_decay", float("nan"), "a non-negative number"),
        ("weight_decay", [0.1], "a non-negative number"),
    ],
)
def test_numeric_settings_are_checked_with_the_validation_wording(name, value, allowed) -> None:
    message = f"{name}={value!r} is not allowed: expected {allowed}"
    with pytest.raises(ValueError) as info:
        VolatilityForecaster(LSTM(3), optimizer=adam(**{name: value}))
    assert str(info.value) == message


@pytest.mark.parametrize(("lr", "weight_decay"), [(1e-3, 0.0), (1, 0), (np.float64(0.01), 1e-4)])
def test_numeric_settings_accept_numbers(lr, weight_decay) -> None:
    forecaster = VolatilityForecaster(LSTM(3), optimizer=adam(lr=lr, weight_decay=weight_decay))
    group = forecaster.configure_optimizers().param_groups[0]
    assert group["lr"] == lr and group["weight_decay"] == weight_decay


def test_optimizer_and_scheduler_are_called_with_the_parameters_and_the_optimizer() -> None:
    net = LSTM(3, hidden=4)
    cosine = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=5)
    forecaster = VolatilityForecaster(
        net, optimizer=partial(torch.optim.SGD, lr=0.1), scheduler=cosine
    )
    configured = forecaster.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and scheduler.optimizer is optimizer
    assert scheduler.T_max == 5 and configured["lr_scheduler"]["interval"] == "epoch"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(params) == len(list(net.parameters()))
    assert all(any(p is q for q in net.parameters()) for p in params)
    assert "optimizer" not in forecaster.hparams and forecaster.hparams.loss == "mse"


def test_qlike_loss_matches_variance_form() -> None:
    t, f = torch.tensor([0.3, -1.0]), torch.tensor([0.0, -0.5])
    ratio = torch.exp(t - f)
    torch.testing.assert_close(qlike_loss(t, f), (ratio - torch.log(ratio) - 1).mean())


COSINE = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=2)


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "loss"),
    [
        (torch.optim.Adam, None, "mse"),
        (torch.optim.AdamW, COSINE, "qlike"),
        (partial(torch.optim.SGD, momentum=0.9), COSINE, "mse"),
    ],
)
def test_fit_and_test_on_simulated_data(
    sim: VolatilityDataModule, optimizer: Any, scheduler: Any, loss: str
) -> None:
    pl.seed_everything(0, verbose=False)
    model = MLP(3, 22, depth=2, width=16)
    forecaster = VolatilityForecaster(
        model, optimizer=partial(optimizer, lr=1e-3), scheduler=scheduler, loss=loss
    )
    fitter = trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=2)
    fitter.fit(forecaster, datamodule=sim)
    assert {"train/loss_epoch", "val/loss"} <= set(fitter.callback_metrics)
    assert forecaster.target_loc.item() == pytest.approx(sim.scaler.target_mean)
    if scheduler is not None:  # stepped once, at the end of the epoch
        assert fitter.optimizers[0].param_groups[0]["lr"] < 1e-3
    trainer().test(forecaster, datamodule=sim, verbose=False)
    metrics = forecaster.test_metrics
    assert set(metrics) == {"qlike", "mse_log", "mz_r2", "qlike_ratio_har"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert forecaster.residual_var.item() > 0
    dates, log_target = sim.split_targets("test")
    preds = forecaster.test_predictions
    np.testing.assert_array_equal(preds["date"], dates)
    np.testing.assert_array_equal(preds["log_target"], log_target)
    np.testing.assert_allclose(
        preds["variance_forecast"],
        np.exp(preds["log_forecast"] + forecaster.residual_var.item() / 2),
    )


def test_partial_test_run_is_refused(sim: VolatilityDataModule) -> None:
    forecaster = VolatilityForecaster(MLP(3, 22, depth=1, width=4))
    with pytest.raises(RuntimeError, match="whole test split"):
        trainer(limit_test_batches=1).test(forecaster, datamodule=sim, verbose=False)


HEALTHY = {
    "lstm": (lambda: LSTM(3, hidden=32), 6, 3e-3),
    "transformer": (
        lambda: Transformer(3, 22, depth=2, d_model=32, heads=4, norm_position="pre"),
        10,
        1e-3,
    ),
}


def train_and_test(name: str, seed: int) -> tuple[dict, float]:
    """Seeded short CPU training of a healthy model on the S&P 500; test metrics and fit seconds."""
    build, epochs, lr = HEALTHY[name]
    pl.seed_everything(seed, verbose=False)
    dm = VolatilityDataModule("sp500", batch_size=128)
    forecaster = VolatilityForecaster(
        build(),
        optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=1e-4),
        scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs),
    )
    start = time.perf_counter()
    trainer(max_epochs=epochs).fit(forecaster, datamodule=dm)
    seconds = time.perf_counter() - start
    trainer().test(forecaster, datamodule=dm, verbose=False)
    print(f"{name} seed {seed}: {forecaster.test_metrics} after {seconds:.1f}s of training")
    return forecaster.test_metrics, seconds


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", list(HEALTHY))
def test_short_training_is_near_har(name: str) -> None:
    pytest.importorskip("arch")
    metrics, _ = train_and_test(name, seed=0)
    assert 0.85 < metrics["qlike_ratio_har"] < 1.10  # far better than HAR: a leak or a bug
    assert metrics["mz_r2"] > 0.4


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(HEALTHY))
def test_short_training_is_near_har_for_other_seeds(name: str, seed: int) -> None:
    pytest.importorskip("arch")
    metrics, _ = train_and_test(name, seed=seed)
    assert metrics["qlike_ratio_har"] < 1.10
    assert metrics["qlike_ratio_har"] > 0.85  # far better than HAR would smell of a leak
