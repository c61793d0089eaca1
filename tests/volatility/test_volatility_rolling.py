"""Rolling-origin evaluation: split dates per test year, pooling, and causality across origins."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.volatility.baselines import Forecast, evaluate_split
from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.metrics import qlike
from recipes.volatility.rolling import YearResult, pool, rolling_origins
from recipes.volatility.sources import OHLC
from tests.volatility.test_volatility_causality import perturb


def test_origins_expand_one_year_at_a_time() -> None:
    origins = rolling_origins([2008, 2009], val_years=2)
    assert [o.overrides() for o in origins] == [
        {"train_end": "2005-12-31", "val_end": "2007-12-31", "test_end": "2008-12-31"},
        {"train_end": "2006-12-31", "val_end": "2008-12-31", "test_end": "2009-12-31"},
    ]
    for bad in ([], [2009, 2008], [2008, 2008]):
        with pytest.raises(ValueError, match="increasing"):
            rolling_origins(bad)
    with pytest.raises(ValueError, match="val_years"):
        rolling_origins([2008], val_years=0)


def test_test_end_bounds_the_test_split(sp500_ohlc: OHLC) -> None:
    dm = VolatilityDataModule(sp500_ohlc, **rolling_origins([2010])[0].overrides())
    dm.setup()
    dates, _ = dm.split_targets("test")
    assert str(dates.min()) == "2010-01-04" and str(dates.max()) == "2010-12-31"
    assert len(dates) == 252
    val_dates, _ = dm.split_targets("val")
    assert str(val_dates.min()).startswith("2009-01") and str(val_dates.max()) == "2009-12-31"
    with pytest.raises(ValueError, match="test_end"):
        VolatilityDataModule(sp500_ohlc, val_end="2015-12-31", test_end="2015-06-30")


def test_pool_concatenates_the_years() -> None:
    rng = np.random.default_rng(0)
    years = []
    for year, n in ((2016, 250), (2017, 251)):
        y = np.exp(rng.normal(size=n))
        fcs = {"har": Forecast(y * 1.4), "lhar": Forecast(y * 1.3), "net": Forecast(y * 1.1)}
        if year == 2016:
            fcs["only_once"] = Forecast(y)
        years.append(YearResult(year, y, fcs))
    out = pool(years, models=["net"], mcs_reps=200)
    pooled = {r["model"]: r for r in out["pooled"]}
    assert set(pooled) == {"har", "lhar", "net"}  # a forecast missing in a year is not pooled
    y = np.concatenate([yr.realised for yr in years])
    assert pooled["net"]["qlike"] == pytest.approx(qlike(y, y * 1.1))
    assert pooled["net"]["n"] == 501 and pooled["net"]["ratio_lhar"] < 1
    assert [p["test_year"] for p in out["per_year"]] == [2016, 2017]
    assert out["significance"]["dm"]["net"]["har"]["t"] < 0
    assert out["significance"]["mcs"]["net"]["in_mcs"]


def _rolling_forecasts(ohlc: OHLC, years: list[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every baseline's re-estimated forecasts of each test year, stamped with the origin date."""
    out: dict[str, list] = {}
    for origin in rolling_origins(years):
        dm = VolatilityDataModule(ohlc, **origin.overrides())
        dm.setup()
        ev = evaluate_split(dm, names=["har", "log_har", "lhar", "har_x", "garch", "ewma"])
        dates = dm.series.dates[dm.split_indices["test"]]
        for name, fc in ev.forecasts.items():
            out.setdefault(name, []).append((dates, fc.variance))
    return {k: tuple(np.concatenate(p) for p in zip(*v, strict=True)) for k, v in out.items()}


@pytest.mark.parametrize("date", ["2009-03-16", "2010-05-06"])
def test_rolling_baselines_are_causal(sp500_ohlc: OHLC, date: str) -> None:
    """A day moved in the rolling span changes no re-estimated forecast made before it, and
    does change the next year's re-estimated parameters (so the forecasts after it)."""
    years = [2008, 2009, 2010, 2011]
    before = _rolling_forecasts(sp500_ohlc, years)
    after = _rolling_forecasts(perturb(sp500_ohlc, date), years)
    day = np.datetime64(date, "D")
    next_year = np.datetime64(f"{int(date[:4]) + 1}-01-01", "D")
    for name, (dates, old) in before.items():
        new = after[name][1]
        np.testing.assert_allclose(new[dates < day], old[dates < day], rtol=1e-6, err_msg=name)
        if name != "ewma":  # EWMA has no parameters; its effect decays but is not re-fit
            assert not np.allclose(new[dates >= next_year], old[dates >= next_year]), name
