"""Volatility-forecasting building blocks: data, models, a Lightning forecaster, baselines, metrics.

Imports without Hydra; ``arch`` and ``pandas`` (the ``recipes`` extra) are needed only to load the
S&P 500 / NASDAQ data and to fit GARCH.

Example:
    >>> from recipes.volatility import Transformer, VolatilityDataModule
    >>> dm = VolatilityDataModule("garch_sim")
    >>> model = Transformer(input_dim=dm.num_features, window=dm.window)
"""

from recipes.volatility.baselines import (
    BASELINES,
    Evaluation,
    Forecast,
    baseline_forecasts,
    evaluate_baselines,
    evaluate_forecasts,
    evaluate_split,
    ewma,
    format_table,
    garch,
    har,
    har_x,
    lhar,
    log_har,
)
from recipes.volatility.data import FEATURES, ScalerStats, VolatilityDataModule
from recipes.volatility.forecaster import VolatilityForecaster
from recipes.volatility.metrics import (
    evaluate_forecast,
    mincer_zarnowitz_r2,
    mse_log,
    qlike,
)
from recipes.volatility.models import (
    LSTM,
    MLP,
    ResidualMLP,
    Transformer,
    VanillaRNN,
)
from recipes.volatility.significance import (
    DMResult,
    diebold_mariano,
    model_confidence_set,
    significance,
    superior_predictive_ability,
)
from recipes.volatility.sources import (
    OHLC,
    SOURCES,
    DailySeries,
    daily_series,
    load_ohlc,
    simulate_garch_ohlc,
)

__all__ = [
    "BASELINES",
    "FEATURES",
    "LSTM",
    "MLP",
    "OHLC",
    "SOURCES",
    "DMResult",
    "DailySeries",
    "Evaluation",
    "Forecast",
    "ResidualMLP",
    "ScalerStats",
    "Transformer",
    "VanillaRNN",
    "VolatilityDataModule",
    "VolatilityForecaster",
    "baseline_forecasts",
    "daily_series",
    "diebold_mariano",
    "evaluate_baselines",
    "evaluate_forecast",
    "evaluate_forecasts",
    "evaluate_split",
    "ewma",
    "format_table",
    "garch",
    "har",
    "har_x",
    "lhar",
    "load_ohlc",
    "log_har",
    "mincer_zarnowitz_r2",
    "model_confidence_set",
    "mse_log",
    "qlike",
    "significance",
    "simulate_garch_ohlc",
    "superior_predictive_ability",
]
