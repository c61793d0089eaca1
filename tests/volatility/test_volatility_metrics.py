"""Metrics and the docstring examples of the subpackage."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from recipes.volatility.metrics import (
    evaluate_forecast,
    mincer_zarnowitz_r2,
    mse_log,
    qlike,
)


def test_qlike_is_minimised_by_the_truth() -> None:
    y = np.exp(np.random.default_rng(0).normal(size=500))
    assert qlike(y, y) == 0.0
    assert qlike(y, y * 1.1) > 0 and qlike(y, y * 0.9) > 0
    assert qlike(np.array([2.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx((1 - np.log(2)) / 2)


def test_mse_log_and_mz() -> None:
    rng = np.random.default_rng(1)
    f = np.exp(rng.normal(size=1000))
    y = f * np.exp(rng.normal(scale=0.5, size=1000))
    assert mse_log(y, f) == pytest.approx(np.mean(np.log(y / f) ** 2))
    r2 = mincer_zarnowitz_r2(y, f)
    assert r2 == pytest.approx(1 / (1 + 0.25), abs=0.05)
    assert mincer_zarnowitz_r2(y, np.ones_like(y)) == 0.0


def test_every_metric_scores_the_issued_variance_forecast() -> None:
    """A log model's bias-corrected forecast ``y * 1.3`` is scored as issued on every metric."""
    y = np.array([1.0, 2.0, 4.0])
    scores = evaluate_forecast(y, y * 1.3)
    assert scores["mse_log"] == pytest.approx(np.log(1.3) ** 2)
    assert scores["qlike"] == pytest.approx(1 / 1.3 + np.log(1.3) - 1)
    assert scores["mz_r2"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y", "f"), [([1.0, 0.0], [1.0, 1.0]), ([1.0], [-1.0]), ([1.0, 2.0], [1.0]), ([], [])]
)
def test_bad_inputs(y: list, f: list) -> None:
    with pytest.raises(ValueError, match="y and f"):
        qlike(np.array(y), np.array(f))


@pytest.mark.parametrize(
    "module",
    ["_optional", "sources", "data", "models", "metrics", "baselines", "forecaster", "__init__"],
)
def test_docstring_examples(module: str) -> None:
    name = "recipes.volatility" + ("" if module == "__init__" else f".{module}")
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
