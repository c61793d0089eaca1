"""Sources, features, targets, loaders and the errors of ``VolatilityDataModule``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recipes.volatility.data import VolatilityDataModule, log_targets
from recipes.volatility.sources import (
    OHLC,
    VARIANCE_FLOOR,
    daily_series,
    load_ohlc,
    simulate_garch_ohlc,
)


def test_sp500_shape_and_proxies(sp500: VolatilityDataModule, sp500_ohlc: OHLC) -> None:
    assert len(sp500_ohlc.dates) == 5031
    assert sp500.num_features == 3
    assert {s: len(i) for s, i in sp500.split_indices.items()} == {
        "train": 3498,
        "val": 756,
        "test": 754,
    }
    hl = np.log(sp500_ohlc.high / sp500_ohlc.low)[1:]
    np.testing.assert_allclose(sp500.proxy, 1e4 * hl**2 / (4 * np.log(2)))
    close = sp500_ohlc.close
    np.testing.assert_allclose(sp500.returns, 100 * np.log(close[1:] / close[:-1]))


def test_horizon_target_is_log_mean_of_next_days() -> None:
    proxy = np.arange(1.0, 11.0)
    y = log_targets(proxy, horizon=5)
    assert np.exp(y[0]) == pytest.approx(np.mean(proxy[1:6]))
    assert np.isnan(y[-5:]).all() and np.isfinite(y[:-5]).all()


def test_loaders(sim: VolatilityDataModule) -> None:
    x, y = next(iter(sim.train_dataloader()))
    assert x.shape == (64, 22, 3) and y.shape == (64,) and x.dtype == torch.float32
    _, log_target = sim.split_targets("test")
    ys = torch.cat([y for _, y in sim.test_dataloader()]).numpy()
    loc, scale = sim.target_affine
    np.testing.assert_allclose(loc + scale * ys, log_target, atol=1e-5)  # chronological order
    first = torch.cat([y for _, y in sim.train_dataloader()])
    assert not torch.equal(first, sim._targets[sim.split_indices["train"]])  # shuffled


def test_raw_targets_without_scaling() -> None:
    dm = VolatilityDataModule("garch_sim", scale_target=False, features=["log_parkinson"])
    dm.setup()
    assert dm.target_affine == (0.0, 1.0)
    _, y = dm.dataloader("val").dataset[0]
    assert float(y) == pytest.approx(dm.log_target[dm.split_indices["val"][0]], abs=1e-5)


def test_simulator_is_seeded_and_consistent() -> None:
    a, b = simulate_garch_ohlc(600, seed=3), simulate_garch_ohlc(600, seed=3)
    np.testing.assert_array_equal(a.close, b.close)
    assert not np.array_equal(a.close, simulate_garch_ohlc(600, seed=4).close)
    assert np.all((a.low <= np.minimum(a.open, a.close)) & (np.maximum(a.open, a.close) <= a.high))
    assert np.is_busday(a.dates).all() and str(a.dates[-1]) == "2018-12-31"
    np.testing.assert_allclose(a.open[1:], a.close[:-1])
    series = daily_series(a)
    # GARCH clustering: squared returns are autocorrelated
    sq = series.returns**2
    assert np.corrcoef(sq[1:], sq[:-1])[0, 1] > 0.05


def test_long_windows_on_simulated_data() -> None:
    dm = VolatilityDataModule("garch_sim", window=500, sim_days=12000, batch_size=8)
    dm.setup()
    assert min(len(i) for i in dm.split_indices.values()) > 500
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 500, 3)


def test_variance_floor_guards_zero_range() -> None:
    days = np.arange("2020-01-01", "2020-01-06", dtype="datetime64[D]")
    flat = np.full(5, 100.0)
    ohlc = OHLC(days, flat, flat * np.array([1, 1, 1.01, 1, 1]), flat, flat)
    series = daily_series(ohlc)
    assert series.parkinson.min() == VARIANCE_FLOOR
    assert np.isfinite(np.log(series.garman_klass)).all()


def test_missing_columns_are_named(sp500_ohlc: OHLC) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"Open": [1.0], "High": [1.0], "Close": [1.0]})
    with pytest.raises(ValueError, match=r"missing columns \['Low'\]"):
        OHLC.from_frame(frame)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "ftse"}, "source='ftse' is not allowed"),
        ({"features": ["log_rs"]}, "features=.*log_rs.* is not allowed"),
        ({"features": []}, "features=.* is not allowed"),
        ({"window": 0}, "window=0"),
        ({"horizon": 0}, "horizon=0"),
        ({"train_end": "2012-13-45"}, "train_end='2012-13-45' is not a date"),
        ({"val_end": "2012-06-30"}, "must be after train_end"),
        ({"variance_floor": 0.0}, "variance_floor=0.0"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VolatilityDataModule(**kwargs)


def test_unknown_source_in_loader() -> None:
    with pytest.raises(ValueError, match="source='dax' is not allowed"):
        load_ohlc("dax")


def test_window_longer_than_data() -> None:
    dm = VolatilityDataModule("garch_sim", window=6000)
    with pytest.raises(ValueError, match="window=6000 is longer than the data"):
        dm.setup()


@pytest.mark.parametrize(
    ("kwargs", "split"),
    [
        ({"train_end": "1990-12-31", "val_end": "2015-12-31"}, "train"),
        ({"train_end": "2015-12-26", "val_end": "2015-12-27"}, "val"),
        ({"train_end": "2017-12-31", "val_end": "2019-12-31"}, "test"),
    ],
)
def test_empty_split(kwargs: dict, split: str) -> None:
    dm = VolatilityDataModule("garch_sim", **kwargs)
    with pytest.raises(ValueError, match=f"split '{split}' is empty"):
        dm.setup()


def test_bad_split_name(sim: VolatilityDataModule) -> None:
    with pytest.raises(ValueError, match="split='holdout' is not allowed"):
        sim.split_targets("holdout")


def test_gap_target_is_consistent_across_the_sp500_open_quirk(sp500_ohlc: OHLC) -> None:
    """Where the file's Open is the previous Close (most S&P days before 2006) the High/Low
    range already holds the overnight gap, so the gap-widened Parkinson equals the plain one;
    later it adds the gap, so plain Parkinson's meaning changes across the sample."""
    s = daily_series(sp500_ohlc)
    copy = sp500_ohlc.open[1:] == sp500_ohlc.close[:-1]
    np.testing.assert_allclose(s.parkinson_gap[copy], s.parkinson[copy])
    assert np.all(s.parkinson_gap >= s.parkinson * (1 - 1e-12))
    years = s.dates.astype("datetime64[Y]").astype(int) + 1970
    early, late = copy.mean(where=years <= 2005), copy.mean(where=years >= 2014)
    assert early > 0.9 and late < 0.01
    widened = (s.parkinson_gap / s.parkinson).mean(where=(years >= 2014) & ~copy)
    assert widened > 1.2  # the gap is a large part of the daily range in the late sample
    dm = VolatilityDataModule(sp500_ohlc, target="parkinson_gap")
    dm.setup()
    np.testing.assert_allclose(dm.proxy, s.parkinson_gap)
    assert dm.log_target[100] == pytest.approx(np.log(s.parkinson_gap[101]))
    with pytest.raises(ValueError, match="target"):
        VolatilityDataModule(sp500_ohlc, target="garman_klass")
