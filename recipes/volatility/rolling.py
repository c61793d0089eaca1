"""Rolling-origin (expanding-window) evaluation: re-estimate every year, test the next.

For each test year ``Y`` the splits are: train = targets through ``Y - 1 - val_years``,
validation = the ``val_years`` years before ``Y`` (early stopping), test = year ``Y``. Baselines
are fit on train + validation, i.e. on everything before ``Y``; networks are trained afresh.
Per-year results are pooled by concatenating the test years' forecasts: pooled QLIKE, ratios,
Diebold–Mariano and the MCS are computed on the pooled series (every test day counts once).

Example:
    >>> [o.test_year for o in rolling_origins([2016, 2017])]
    [2016, 2017]
    >>> rolling_origins([2016])[0].overrides()
    {'train_end': '2014-12-31', 'val_end': '2015-12-31', 'test_end': '2016-12-31'}
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from recipes.volatility.baselines import Forecast, evaluate_forecasts
from recipes.volatility.significance import significance


class RollingOrigin(NamedTuple):
    """One re-estimation: the split dates of test year ``test_year``."""

    test_year: int
    val_years: int = 1

    def overrides(self) -> dict[str, str]:
        """``train_end``, ``val_end``, ``test_end`` for ``VolatilityDataModule``."""
        y, v = self.test_year, self.val_years
        return {
            "train_end": f"{y - 1 - v}-12-31",
            "val_end": f"{y - 1}-12-31",
            "test_end": f"{y}-12-31",
        }


def rolling_origins(test_years: Sequence[int], val_years: int = 1) -> list[RollingOrigin]:
    """One origin per test year (strictly increasing years, ``val_years >= 1``).

    Raises:
        ValueError: for no years, unsorted or repeated years, or ``val_years < 1``.
    """
    years = [int(y) for y in test_years]
    if not years or any(b <= a for a, b in itertools.pairwise(years)):
        raise ValueError(f"test_years={list(test_years)} must be non-empty and increasing")
    if val_years < 1:
        raise ValueError(f"val_years={val_years} is not allowed; need >= 1")
    return [RollingOrigin(y, val_years) for y in years]


class YearResult(NamedTuple):
    """The test year's realised proxy and every forecast of it (network and baselines)."""

    test_year: int
    realised: np.ndarray
    forecasts: Mapping[str, Forecast]


def pool(
    years: Sequence[YearResult],
    models: Sequence[str] = (),
    *,
    horizon: int = 1,
    seed: int = 0,
    mcs_reps: int = 1000,
) -> dict[str, Any]:
    """Per-year table rows and pooled rows, DM of ``models`` and the MCS on the pooled series.

    Only forecasts present in every year are pooled.

    Returns:
        ``{"per_year": [{"test_year", "rows"}], "pooled": rows, "significance": ...}``.
    """
    if not years:
        raise ValueError("pool needs at least one year")
    names = [n for n in years[0].forecasts if all(n in y.forecasts for y in years)]
    per_year = [
        {
            "test_year": y.test_year,
            "rows": evaluate_forecasts(y.realised, {n: y.forecasts[n] for n in names}),
        }
        for y in years
    ]
    realised = np.concatenate([y.realised for y in years])
    pooled = {n: Forecast(np.concatenate([y.forecasts[n].variance for y in years])) for n in names}
    rows = evaluate_forecasts(realised, pooled)
    tests = significance(
        realised,
        {n: f.variance for n, f in pooled.items()},
        models=[m for m in models if m in pooled],
        horizon=horizon,
        seed=seed,
        mcs_reps=mcs_reps,
    )
    return {"per_year": per_year, "pooled": rows, "significance": tests}
