"""Causality: changing one day's prices changes nothing dated before that day.

Every quantity a model or a baseline consumes is stamped with the date it becomes known: a served
input window with its origin (last input day), a served target with its last target day, the
scaler statistics with the last training day, a baseline forecast with its origin. Then one day's
Open/High/Low/Close are moved (at dates in the training, validation and test periods) and every
stamped value dated strictly earlier must be unchanged. Served windows are un-scaled with each
module's own scaler, so a perturbation inside the training period (which legitimately moves the
scaler) still tests the inputs. The controls show that the check fails for a feature rolled one
day forward, for tomorrow's return as an input and for a window sliced one day too far.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from recipes.volatility import data as data_module
from recipes.volatility.baselines import (
    BASELINES,
    FIT_SPLITS,
    baseline_forecasts,
    split_origins,
)
from recipes.volatility.data import FEATURES, VolatilityDataModule, WindowDataset
from recipes.volatility.sources import OHLC

Stamped = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (dates, values with dates on axis 0)
# the training, validation and test periods of the default split
DATES = ("2003-06-16", "2010-05-06", "2014-03-03", "2017-05-10")


def perturb(ohlc: OHLC, date: str) -> OHLC:
    """Move Open, High, Low and Close of ``date`` (a valid OHLC stays valid)."""
    hit = ohlc.dates == np.datetime64(date, "D")
    assert hit.sum() == 1, f"{date} is not a trading day"
    close = np.where(hit, ohlc.close * 1.03, ohlc.close)
    return OHLC(
        ohlc.dates,
        np.where(hit, ohlc.open * 1.01, ohlc.open),
        np.where(hit, np.maximum(ohlc.high * 1.04, close), ohlc.high),
        np.where(hit, ohlc.low * 0.97, ohlc.low),
        close,
    )


def stamped(dm: VolatilityDataModule, baselines: tuple[str, ...] = BASELINES) -> Stamped:
    """Everything ``dm`` serves and every baseline forecast, each with the date it is known."""
    dm.setup()
    dates, h = dm.series.dates, dm.horizon
    mean, std = dm.scaler.feature_mean, dm.scaler.feature_std
    loc, scale = dm.target_affine
    out: Stamped = {}
    for split, origins in dm.split_indices.items():
        xs, ys = zip(*dm.dataloader(split), strict=True)  # what a model really gets, in order
        x = torch.cat(xs).double().numpy() * std + mean
        for f, name in enumerate(dm.features):
            out[f"{split} input {name}"] = (dates[origins], x[:, :, f])
        out[f"{split} target"] = (dates[origins + h], loc + scale * torch.cat(ys).double().numpy())
    train = dm.split_indices["train"]
    stats = np.concatenate([mean, std, [dm.scaler.target_mean, dm.scaler.target_std]])
    out["scaler"] = (dates[[train[-1] + h]], stats[None])
    if baselines:
        fit = split_origins(dm.split_indices, FIT_SPLITS)
        test = dm.split_indices["test"]
        forecasts = baseline_forecasts(
            dm.returns, dm.proxy, fit, test, h, baselines, garman_klass=dm.garman_klass
        )
        for name, fc in forecasts.items():
            out[f"baseline {name}"] = (dates[test], fc.variance)
    return out


def causality_problems(before: Stamped, after: Stamped, date: str) -> list[str]:
    """Each stamped quantity that changed at a date before ``date``."""
    day = np.datetime64(date, "D")
    problems = []
    for name, (dates, old) in before.items():
        new = after[name][1]
        early = dates < day
        changed = ~np.isclose(old[early], new[early], rtol=1e-6, atol=1e-4)
        changed = changed.reshape(int(early.sum()), -1).any(axis=1) if early.any() else []
        if np.any(changed):
            problems.append(f"{name}: changed on {dates[early][changed][0]} (before {date})")
    return problems


def check_date(ohlc: OHLC, date: str, make: Callable[[OHLC], VolatilityDataModule], **kw) -> list:
    """``causality_problems`` of moving ``date``; asserts that the move reaches some target."""
    before, after = stamped(make(ohlc), **kw), stamped(make(perturb(ohlc, date)), **kw)
    day = np.datetime64(date, "D")
    moved = [
        not np.allclose(old[dates >= day], after[name][1][dates >= day])
        for name, (dates, old) in before.items()
        if name.endswith("target")
    ]
    assert any(moved), "the perturbation changed no target"
    return causality_problems(before, after, date)


@pytest.mark.parametrize("horizon", [1, 5])
@pytest.mark.parametrize("date", DATES)
def test_nothing_dated_earlier_changes(sp500_ohlc: OHLC, date: str, horizon: int) -> None:
    baselines = BASELINES if horizon == 1 else ("har", "log_har", "lhar", "har_x", "ewma")
    problems = check_date(
        sp500_ohlc,
        date,
        lambda o: VolatilityDataModule(o, horizon=horizon),
        baselines=baselines,
    )
    assert problems == []


# -- controls: the check catches one-day look-aheads -------------------------------------------


def _rolled(feature: str, days: int = -1) -> Callable:
    original = VolatilityDataModule._feature

    def _feature(series, name):
        values = original(series, name)
        return np.roll(values, days) if name == feature else values

    return staticmethod(_feature)


@pytest.mark.parametrize("feature", FEATURES)
def test_control_feature_rolled_one_day_forward_fails(sp500_ohlc, monkeypatch, feature) -> None:
    monkeypatch.setattr(VolatilityDataModule, "_feature", _rolled(feature))
    for date in ("2003-06-16", "2017-05-10"):
        problems = check_date(sp500_ohlc, date, VolatilityDataModule, baselines=())
        assert any(f"input {feature}" in p for p in problems), problems
        assert not any("input" in p and feature not in p for p in problems), problems


def test_control_tomorrows_return_as_an_extra_input_fails(sp500_ohlc, monkeypatch) -> None:
    """A fourth input, tomorrow's return, next to the three honest ones."""
    original = VolatilityDataModule._feature

    def _feature(series, name):
        if name == "next_return":
            return np.append(series.returns[1:], 0.0)
        return original(series, name)

    monkeypatch.setattr(data_module, "FEATURES", (*FEATURES, "next_return"))
    monkeypatch.setattr(VolatilityDataModule, "_feature", staticmethod(_feature))
    problems = check_date(
        sp500_ohlc,
        "2014-03-03",
        lambda o: VolatilityDataModule(o, features=[*FEATURES, "next_return"]),
        baselines=(),
    )
    assert any("input next_return" in p for p in problems), problems
    assert not any("input return" in p or "log_" in p for p in problems), problems


def test_control_window_one_day_too_far_fails(sp500_ohlc, monkeypatch) -> None:
    def getitem(self, index):
        t = int(self.origins[index]) + 1
        return self.features[t - self.window + 1 : t + 1], self.targets[t - 1]

    monkeypatch.setattr(WindowDataset, "__getitem__", getitem)
    problems = check_date(sp500_ohlc, "2010-05-06", VolatilityDataModule, baselines=())
    assert any("train input" in p for p in problems), problems


def test_control_full_sample_scaler_fails(sp500_ohlc, monkeypatch) -> None:
    """The scaler fit on every row: a test-period change moves it (dated at the training end)."""
    original = VolatilityDataModule.setup

    def setup(self, stage=None):
        original(self, stage)
        self.scaler = type(self.scaler)(
            self.raw_features.mean(axis=0),
            self.raw_features.std(axis=0),
            self.scaler.target_mean,
            self.scaler.target_std,
        )

    monkeypatch.setattr(VolatilityDataModule, "setup", setup)
    problems = check_date(sp500_ohlc, "2017-05-10", VolatilityDataModule, baselines=())
    assert any(p.startswith("scaler") for p in problems), problems


def test_control_baseline_reading_tomorrow_fails(sp500_ohlc, monkeypatch) -> None:
    """The ``yesterday`` floor fed tomorrow's proxy instead of today's."""
    import recipes.volatility.baselines as baselines

    original = baselines.baseline_forecasts

    def leaky(returns, proxy, fit, test, horizon=1, names=BASELINES, garman_klass=None):
        out = original(returns, proxy, fit, test, horizon, names, garman_klass)
        out["yesterday"] = out["yesterday"]._replace(variance=proxy[test + 1])
        return out

    monkeypatch.setitem(globals(), "baseline_forecasts", leaky)
    problems = check_date(sp500_ohlc, "2017-05-10", VolatilityDataModule, baselines=("yesterday",))
    assert problems == ["baseline yesterday: changed on 2017-05-09 (before 2017-05-10)"]
