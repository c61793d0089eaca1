"""Windowed, chronologically split, train-scaled daily volatility data for Lightning.

A sample has an *origin* day ``t`` (the last day its input window sees): inputs are the features of
days ``t-window+1 .. t``; the target is ``ln mean(P_{t+1..t+horizon})`` with ``P`` the Parkinson
variance (horizon 1: tomorrow's log Parkinson variance). Samples are split by target date: a split
holds the samples whose whole target window lies in its period (for ``horizon > 1`` the few samples
straddling a boundary are dropped, so no two splits' targets overlap). Z-score statistics are fit on
the days seen by training windows only.

Example:
    >>> dm = VolatilityDataModule("garch_sim", window=22, batch_size=64)
    >>> dm.setup()
    >>> x, y = next(iter(dm.val_dataloader()))
    >>> tuple(x.shape), tuple(y.shape)
    ((64, 22, 3), (64,))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from recipes.volatility.baselines import trailing_mean
from recipes.volatility.sources import (
    OHLC,
    SOURCES,
    VARIANCE_FLOOR,
    DailySeries,
    daily_series,
    load_ohlc,
)
from recipes.volatility.validation import check_choice, fail

FEATURES = ("return", "log_parkinson", "log_garman_klass")
TARGETS = ("parkinson", "parkinson_gap")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ScalerStats:
    """Z-score statistics fit on training rows only (population std)."""

    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: float
    target_std: float


def log_targets(proxy: np.ndarray, horizon: int) -> np.ndarray:
    """``y[t] = ln mean(proxy[t+1 .. t+horizon])``; NaN where the horizon runs past the data.

    Example:
        >>> np.exp(log_targets(np.array([1.0, 2.0, 4.0]), horizon=2)).round(2).tolist()
        [3.0, nan, nan]
    """
    out = np.full(len(proxy), np.nan)
    n = len(proxy) - horizon
    if n > 0:  # the mean ending at t + horizon, moved back to origin t
        out[:n] = np.log(trailing_mean(proxy, horizon)[horizon:])
    return out


class WindowDataset(Dataset):
    """``(features[t-window+1 : t+1], targets[t])`` for each origin ``t``."""

    def __init__(
        self, features: torch.Tensor, targets: torch.Tensor, origins: np.ndarray, window: int
    ) -> None:
        self.features = features
        self.targets = targets
        self.origins = origins
        self.window = window

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = int(self.origins[index])
        return self.features[t - self.window + 1 : t + 1], self.targets[t]


def _date(name: str, value: str) -> np.datetime64:
    try:
        return np.datetime64(value, "D")
    except ValueError as err:
        raise ValueError(f"{name}={value!r} is not a date; use 'YYYY-MM-DD'") from err


class VolatilityDataModule(pl.LightningDataModule):
    """Daily realised-volatility forecasting data with a leak-free chronological split.

    Args:
        source: ``"sp500"``, ``"nasdaq"`` (``arch`` data, needs the ``recipes`` extra),
            ``"garch_sim"`` (see :func:`simulate_garch_ohlc`), or an :class:`OHLC` of your own.
        features: names from ``FEATURES``: ``return`` (%), ``log_parkinson``, ``log_garman_klass``
            (uses Open, which on the S&P 500 file is mostly the previous Close before 2006).
        window: input days per sample.
        horizon: the target averages the Parkinson variance over the next ``horizon`` days.
        batch_size: batch size of every loader.
        train_end: last target date of the training split.
        val_end: last target date of the validation split; later target dates form the test split.
        target: the variance proxy forecast (and fed to the HAR-type baselines): ``parkinson``
            (High/Low) or ``parkinson_gap`` (the range widened to the previous Close; the same
            definition on every day of the S&P 500 file, whose early Open is the previous
            Close; see :func:`~recipes.volatility.sources.daily_series`).
        test_end: last target date of the test split (``None``: the end of the data); the
            rolling-origin evaluation tests one year at a time.
        scale_target: z-score the log target with training statistics (see ``target_affine``).
        shuffle: shuffle the training loader (the only loader ever shuffled).
        num_workers: DataLoader workers.
        seed: seed of the ``"garch_sim"`` source.
        sim_days: length of the ``"garch_sim"`` source; dates are business days ending 2018-12-31.
        variance_floor: floor (%^2) on the proxies before logs (guards log(0)).

    Raises:
        ValueError: for an unknown source or feature, a bad size or date; in ``setup`` for a window
            longer than the data or an empty split.

    Example:
        >>> dm = VolatilityDataModule("garch_sim", features=["log_parkinson"], window=5)
        >>> dm.setup()
        >>> dm.num_features, sorted(dm.split_indices)
        (1, ['test', 'train', 'val'])
    """

    def __init__(
        self,
        source: str | OHLC = "sp500",
        features: Sequence[str] = FEATURES,
        window: int = 22,
        horizon: int = 1,
        batch_size: int = 256,
        train_end: str = "2012-12-31",
        val_end: str = "2015-12-31",
        test_end: str | None = None,
        target: str = "parkinson",
        scale_target: bool = True,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        sim_days: int = 5031,
        variance_floor: float = VARIANCE_FLOOR,
    ) -> None:
        super().__init__()
        if not isinstance(source, OHLC) and source not in SOURCES:
            fail("source", source, f"one of {list(SOURCES)} or an OHLC")
        features = list(features)
        unknown = [f for f in features if f not in FEATURES]
        if unknown or not features:
            raise ValueError(
                f"features={features} is not allowed; choose a non-empty subset of {list(FEATURES)}"
            )
        for name, value in (("window", window), ("horizon", horizon), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name}={value} is not allowed; need an integer >= 1")
        if variance_floor <= 0:
            raise ValueError(f"variance_floor={variance_floor} is not allowed; need > 0")
        self.train_end = _date("train_end", train_end)
        self.val_end = _date("val_end", val_end)
        if self.val_end <= self.train_end:
            raise ValueError(f"val_end={val_end!r} must be after train_end={train_end!r}")
        check_choice("target", target, TARGETS)
        self.target = target
        self.test_end = None if test_end is None else _date("test_end", test_end)
        if self.test_end is not None and self.test_end <= self.val_end:
            raise ValueError(f"test_end={test_end!r} must be after val_end={val_end!r}")
        self.source = source
        self.features = features
        self.window = window
        self.horizon = horizon
        self.batch_size = batch_size
        self.scale_target = scale_target
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.seed = seed
        self.sim_days = sim_days
        self.variance_floor = variance_floor
        self.series: DailySeries | None = None

    @property
    def num_features(self) -> int:
        """Number of input features per day."""
        return len(self.features)

    def setup(self, stage: str | None = None) -> None:
        """Load, window, split and scale once (every stage gets the same arrays)."""
        if self.series is not None:
            return
        ohlc = self.source
        if not isinstance(ohlc, OHLC):
            ohlc = load_ohlc(ohlc, seed=self.seed, n_days=self.sim_days)
        series = daily_series(ohlc, self.variance_floor)
        self.split_indices = self._split(series.dates)
        self.raw_features = np.column_stack([self._feature(series, f) for f in self.features])
        proxy = series.parkinson if self.target == "parkinson" else series.parkinson_gap
        self.log_target = log_targets(proxy, self.horizon)
        train = self.split_indices["train"]
        rows = self.raw_features[train[0] - self.window + 1 : train[-1] + 1]  # all a window sees
        std = rows.std(axis=0)
        self.scaler = ScalerStats(
            feature_mean=rows.mean(axis=0),
            feature_std=np.where(std > 0, std, 1.0),  # a constant feature stays constant
            target_mean=float(self.log_target[train].mean()),
            target_std=float(self.log_target[train].std()),
        )
        loc, scale = self.target_affine
        scaled = (self.raw_features - self.scaler.feature_mean) / self.scaler.feature_std
        self._features = torch.as_tensor(scaled, dtype=torch.float32)
        self._targets = torch.as_tensor((self.log_target - loc) / scale, dtype=torch.float32)
        self.series = series

    def _split(self, dates: np.ndarray) -> dict[str, np.ndarray]:
        """Origins per split, by the first and last day of each sample's target window."""
        n_days = len(dates)
        if self.window + self.horizon > n_days:
            raise ValueError(
                f"window={self.window} is longer than the data allows: {n_days} days with "
                f"horizon={self.horizon} allow window <= {n_days - self.horizon}"
            )
        origins = np.arange(self.window - 1, n_days - self.horizon)
        first, last = dates[origins + 1], dates[origins + self.horizon]
        masks = {
            "train": (last <= self.train_end, f"<= {self.train_end}"),
            "val": (
                (first > self.train_end) & (last <= self.val_end),
                f"in ({self.train_end}, {self.val_end}]",
            ),
            "test": (
                (first > self.val_end)
                & (last <= (dates[-1] if self.test_end is None else self.test_end)),
                f"in ({self.val_end}, {self.test_end or dates[-1]}]",
            ),
        }
        for split, (mask, bounds) in masks.items():
            if not mask.any():
                raise ValueError(
                    f"split {split!r} is empty: no target date {bounds} with "
                    f"window={self.window}; the data spans {dates[0]} .. {dates[-1]}"
                )
        return {split: origins[mask] for split, (mask, _) in masks.items()}

    @staticmethod
    def _feature(series: DailySeries, name: str) -> np.ndarray:
        if name == "return":
            return series.returns
        if name == "log_parkinson":
            return np.log(series.parkinson)
        return np.log(series.garman_klass)

    @property
    def target_affine(self) -> tuple[float, float]:
        """``(loc, scale)`` with ``log target = loc + scale * batch target``."""
        if self.scale_target:
            return self.scaler.target_mean, self.scaler.target_std
        return 0.0, 1.0

    @property
    def proxy(self) -> np.ndarray:
        """Raw daily target proxy (%^2; Parkinson or gap-widened Parkinson, see ``target``)."""
        series = self._series()
        return series.parkinson if self.target == "parkinson" else series.parkinson_gap

    @property
    def garman_klass(self) -> np.ndarray:
        """Raw daily (floored) Garman–Klass variance (%^2), indexed like ``series.dates``."""
        return self._series().garman_klass

    @property
    def returns(self) -> np.ndarray:
        """Raw daily close-to-close returns (%), indexed like ``series.dates``."""
        return self._series().returns

    def _series(self) -> DailySeries:
        if self.series is None:
            raise RuntimeError("call setup() first")
        return self.series

    def _origins(self, split: str) -> np.ndarray:
        check_choice("split", split, SPLITS)
        self._series()
        return self.split_indices[split]

    def split_targets(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """Dates of the last target day and raw log targets of ``split``, in loader order."""
        origins = self._origins(split)
        return self._series().dates[origins + self.horizon], self.log_target[origins]

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """A loader over ``split`` (chronological unless ``shuffle``)."""
        dataset = WindowDataset(self._features, self._targets, self._origins(split), self.window)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")
