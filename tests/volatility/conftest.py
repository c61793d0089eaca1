"""Shared fixtures: set-up data modules on the real S&P 500 file and on the GARCH simulator."""

from __future__ import annotations

import pytest

from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.sources import OHLC


@pytest.fixture(scope="session")
def sp500() -> VolatilityDataModule:
    """S&P 500, defaults (window 22, horizon 1, train <= 2012, val 2013–2015, test 2016–2018)."""
    pytest.importorskip("arch")
    dm = VolatilityDataModule("sp500")
    dm.setup()
    return dm


@pytest.fixture(scope="session")
def sp500_ohlc() -> OHLC:
    """The raw S&P 500 prices as an OHLC."""
    pytest.importorskip("arch")
    from arch.data import sp500

    return OHLC.from_frame(sp500.load())


@pytest.fixture(scope="session")
def sim() -> VolatilityDataModule:
    """The seeded GARCH simulator with the default calendar."""
    dm = VolatilityDataModule("garch_sim", batch_size=64)
    dm.setup()
    return dm
