"""No look-ahead: windows end before their targets, splits are disjoint, scaling is train-only."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.sources import OHLC


@dataclass
class SplitLayout:
    """What a split construction feeds a model: day indices of inputs/targets and scaler stats."""

    dates: np.ndarray
    raw: np.ndarray  # (days, features) unscaled
    windows: dict[str, np.ndarray]  # split -> (n, window) input day indices
    targets: dict[str, np.ndarray]  # split -> (n, horizon) target day indices
    mean: np.ndarray
    std: np.ndarray


def leakage_problems(layout: SplitLayout) -> list[str]:
    """Every way ``layout`` lets the future into training or a window into its target."""
    problems = []
    for split, windows in layout.windows.items():
        if np.any(windows.max(axis=1) >= layout.targets[split].min(axis=1)):
            problems.append(f"{split}: an input window reaches its target")
    order = ["train", "val", "test"]
    for early, late in itertools.pairwise(order):
        last = layout.dates[layout.targets[early]].max()
        if last >= layout.dates[layout.targets[late]].min():
            problems.append(f"{early}/{late}: target dates overlap")
        if layout.dates[layout.windows[early]].max() > last:
            problems.append(f"{early}: inputs run past its last target")
    rows = np.unique(layout.windows["train"])
    if not (
        np.allclose(layout.mean, layout.raw[rows].mean(axis=0))
        and np.allclose(layout.std, layout.raw[rows].std(axis=0))
    ):
        problems.append("scaler statistics are not those of the training rows")
    return problems


def layout_of(dm: VolatilityDataModule) -> SplitLayout:
    """The layout a data module really serves, checked against its datasets' tensors."""
    windows, targets = {}, {}
    for split, origins in dm.split_indices.items():
        windows[split] = origins[:, None] + np.arange(-dm.window + 1, 1)
        targets[split] = origins[:, None] + np.arange(1, dm.horizon + 1)
        dataset = dm.dataloader(split).dataset
        for i in (0, len(origins) // 2, len(origins) - 1):
            x, y = dataset[i]
            scaled = (dm.raw_features[windows[split][i]] - dm.scaler.feature_mean) / (
                dm.scaler.feature_std
            )
            torch.testing.assert_close(x, torch.as_tensor(scaled, dtype=torch.float32))
            log_y = np.log(dm.proxy[targets[split][i]].mean())
            loc, scale = dm.target_affine
            assert float(y) == pytest.approx((log_y - loc) / scale, abs=1e-5)
    mean, std = dm.scaler.feature_mean, dm.scaler.feature_std
    return SplitLayout(dm.series.dates, dm.raw_features, windows, targets, mean, std)


@pytest.mark.parametrize("horizon", [1, 5])
def test_real_split_has_no_leak(sp500_ohlc: OHLC, horizon: int) -> None:
    dm = VolatilityDataModule(sp500_ohlc, horizon=horizon)
    dm.setup()
    assert leakage_problems(layout_of(dm)) == []
    dates, _ = dm.split_targets("train")
    assert dates.max() <= np.datetime64("2012-12-31")
    assert dm.split_targets("test")[0].min() >= np.datetime64("2016-01-01")


def test_target_scaler_is_train_only(sp500: VolatilityDataModule) -> None:
    train = sp500.split_indices["train"]
    y = np.log(sp500.proxy[train + 1])
    assert sp500.scaler.target_mean == pytest.approx(y.mean())
    assert sp500.scaler.target_std == pytest.approx(y.std())


def test_changing_the_future_changes_nothing_in_training(sp500_ohlc: OHLC) -> None:
    late = sp500_ohlc.dates > np.datetime64("2013-01-01")
    shocked = OHLC(
        sp500_ohlc.dates,
        sp500_ohlc.open,
        np.where(late, sp500_ohlc.high * 1.05, sp500_ohlc.high),
        np.where(late, sp500_ohlc.low * 0.95, sp500_ohlc.low),
        sp500_ohlc.close,
    )
    base, moved = VolatilityDataModule(sp500_ohlc), VolatilityDataModule(shocked)
    base.setup()
    moved.setup()
    np.testing.assert_array_equal(base.scaler.feature_mean, moved.scaler.feature_mean)
    np.testing.assert_array_equal(base.scaler.feature_std, moved.scaler.feature_std)
    assert base.scaler.target_mean == moved.scaler.target_mean
    xb, yb = zip(*base.dataloader("train").dataset, strict=True)
    xm, ym = zip(*moved.dataloader("train").dataset, strict=True)
    torch.testing.assert_close(torch.stack(xb), torch.stack(xm))
    torch.testing.assert_close(torch.stack(yb), torch.stack(ym))
    assert base.dataloader("test").dataset[0][1] != moved.dataloader("test").dataset[0][1]


def test_shuffled_time_control_fails_the_check(sp500: VolatilityDataModule) -> None:
    layout = layout_of(sp500)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(layout.dates))  # days in random order, then windowed as usual
    shuffled = SplitLayout(
        layout.dates,
        layout.raw,
        {s: perm[w] for s, w in layout.windows.items()},
        {s: perm[t] for s, t in layout.targets.items()},
        layout.raw.mean(axis=0),
        layout.raw.std(axis=0),
    )
    problems = leakage_problems(shuffled)
    assert any("reaches its target" in p for p in problems)
    assert any("overlap" in p for p in problems)
    assert any("scaler" in p for p in problems)


def test_full_sample_scaling_control_fails_the_check(sp500: VolatilityDataModule) -> None:
    layout = layout_of(sp500)
    layout.mean, layout.std = layout.raw.mean(axis=0), layout.raw.std(axis=0)
    assert leakage_problems(layout) == ["scaler statistics are not those of the training rows"]


def test_random_split_control_fails_the_check(sp500: VolatilityDataModule) -> None:
    layout = layout_of(sp500)
    origins = np.concatenate(list(sp500.split_indices.values()))
    parts = np.array_split(np.random.default_rng(1).permutation(origins), 3)
    splits = list(layout.windows)
    layout.windows = {
        s: p[:, None] + np.arange(1 - sp500.window, 1) for s, p in zip(splits, parts, strict=True)
    }
    layout.targets = {s: p[:, None] + 1 for s, p in zip(splits, parts, strict=True)}
    assert any("overlap" in p for p in leakage_problems(layout))
