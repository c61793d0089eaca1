"""Baselines on the real S&P 500 reproduce hand-written computations and the reference QLIKEs."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.volatility.baselines import (
    BASELINES,
    Forecast,
    baseline_forecasts,
    evaluate_baselines,
    evaluate_forecasts,
    ewma,
    format_table,
    garch,
    har,
    har_x,
    lhar,
    log_har,
)
from recipes.volatility.data import VolatilityDataModule
from recipes.volatility.metrics import qlike


def fit_and_test(dm: VolatilityDataModule) -> tuple[np.ndarray, np.ndarray]:
    fit = np.concatenate([dm.split_indices["train"], dm.split_indices["val"]])
    return fit, dm.split_indices["test"]


def har_by_hand(x: np.ndarray, fit: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HAR written out: regressors by explicit slices, OLS by lstsq -> (test fit, residuals)."""

    def row(t: int) -> list[float]:
        return [1.0, x[t], x[t - 4 : t + 1].mean(), x[t - 21 : t + 1].mean()]

    design = np.array([row(t) for t in fit])
    coef, *_ = np.linalg.lstsq(design, x[fit + 1], rcond=None)
    return np.array([row(t) for t in test]) @ coef, x[fit + 1] - design @ coef


def test_har_matches_hand_computation(sp500: VolatilityDataModule) -> None:
    fit, test = fit_and_test(sp500)
    expected, _ = har_by_hand(sp500.proxy, fit, test)
    np.testing.assert_allclose(har(sp500.proxy, fit, test).variance, expected, rtol=1e-8)


def test_log_har_matches_hand_computation(sp500: VolatilityDataModule) -> None:
    fit, test = fit_and_test(sp500)
    log_fc, residuals = har_by_hand(np.log(sp500.proxy), fit, test)
    fc = log_har(sp500.proxy, fit, test)
    np.testing.assert_allclose(fc.log, log_fc, rtol=1e-8)
    np.testing.assert_allclose(fc.variance, np.exp(log_fc + residuals.var() / 2), rtol=1e-8)


def _cascade_by_hand(x: np.ndarray, t: int) -> list[float]:
    return [x[t], x[t - 4 : t + 1].mean(), x[t - 21 : t + 1].mean()]


@pytest.mark.parametrize("name", ["lhar", "har_x"])
def test_lhar_and_har_x_match_hand_computation(sp500: VolatilityDataModule, name: str) -> None:
    """Log OLS on the HAR cascades of ln P, min(r, 0) (and r, ln GK), then exp(yhat + s^2/2)."""
    fit, test = fit_and_test(sp500)
    lp, r = np.log(sp500.proxy), sp500.returns
    inputs = [lp, np.minimum(r, 0)]
    if name == "har_x":
        inputs += [r, np.log(sp500.garman_klass)]

    def row(t: int) -> list[float]:
        return [1.0] + [v for x in inputs for v in _cascade_by_hand(x, t)]

    design = np.array([row(t) for t in fit])
    coef, *_ = np.linalg.lstsq(design, lp[fit + 1], rcond=None)
    s2 = np.var(lp[fit + 1] - design @ coef)
    expected = np.array([row(t) for t in test]) @ coef
    if name == "lhar":
        fc = lhar(sp500.proxy, r, fit, test)
    else:
        fc = har_x(sp500.proxy, r, sp500.garman_klass, fit, test)
    np.testing.assert_allclose(fc.log, expected, rtol=1e-8)
    np.testing.assert_allclose(fc.variance, np.exp(expected + s2 / 2), rtol=1e-8)
    assert (
        name == "har_x" or coef[4] < 0
    )  # a fall today raises tomorrow's volatility (the leverage effect)


def test_har_x_needs_garman_klass(sp500: VolatilityDataModule) -> None:
    fit, test = fit_and_test(sp500)
    with pytest.raises(ValueError, match="garman_klass"):
        baseline_forecasts(sp500.returns, sp500.proxy, fit, test, names=["har_x"])


def test_garch_forecast_is_aligned_to_the_day_it_predicts(sp500: VolatilityDataModule) -> None:
    arch = pytest.importorskip("arch")
    fit, test = fit_and_test(sp500)
    r, proxy = sp500.returns, sp500.proxy
    last = fit.max() + 1
    params = arch.arch_model(r, vol="GARCH", p=1, q=1).fit(last_obs=last + 1, disp="off").params
    mu, omega, alpha, beta = params[["mu", "omega", "alpha[1]", "beta[1]"]]
    # conditional variance of day t+1 from day-t information, filtered from the start of the data
    eps2 = (r - mu) ** 2
    var = np.empty(len(r) + 1)
    var[0] = eps2[: last + 1].mean()  # arch's backcast is close to this; its effect dies out
    for t in range(len(r)):
        var[t + 1] = omega + alpha * eps2[t] + beta * var[t]
    ratio = proxy[: last + 1].mean() / np.mean(r[: last + 1] ** 2)
    expected = var[test + 1] * ratio  # var[test] (the off-by-one) is ~3x off on some days
    np.testing.assert_allclose(garch(r, proxy, fit, test).variance, expected, rtol=1e-6)


def test_ewma_matches_hand_recursion(sp500: VolatilityDataModule) -> None:
    fit, test = fit_and_test(sp500)
    r, proxy = sp500.returns, sp500.proxy
    level = np.mean(r[:22] ** 2)
    out = {}
    for t in range(test.max() + 1):
        level = 0.94 * level + 0.06 * r[t] ** 2
        out[t] = level
    ratio = proxy[: fit.max() + 2].mean() / np.mean(r[: fit.max() + 2] ** 2)
    expected = np.array([out[t] for t in test]) * ratio
    np.testing.assert_allclose(ewma(r, proxy, fit, test).variance, expected, rtol=1e-10)


def test_reference_qlikes_on_sp500(sp500: VolatilityDataModule) -> None:
    rows = {row["model"]: row for row in evaluate_baselines(sp500)}
    assert list(rows) == list(BASELINES)
    assert rows["har"]["qlike"] == pytest.approx(0.49, abs=0.02)
    assert 0.9 < rows["log_har"]["ratio_har"] < 1.0
    assert rows["lhar"]["ratio_har"] == pytest.approx(0.906, abs=0.005)  # the audit's number
    assert rows["lhar"]["ratio_lhar"] == 1.0 and rows["har"]["ratio_lhar"] > 1.05
    for name in ("garch", "ewma"):
        assert 1.03 < rows[name]["ratio_har"] < 1.2
    assert rows["train_mean"]["mz_r2"] == 0.0 and rows["train_mean"]["ratio_har"] > 2
    assert all(row["n"] == 754 for row in rows.values())


def test_floors(sp500: VolatilityDataModule) -> None:
    fit, test = fit_and_test(sp500)
    p = sp500.proxy
    fcs = baseline_forecasts(sp500.returns, p, fit, test, names=["yesterday", "mean_5", "mean_22"])
    np.testing.assert_allclose(fcs["yesterday"].variance, p[test])
    np.testing.assert_allclose(fcs["mean_5"].variance, [p[t - 4 : t + 1].mean() for t in test])
    np.testing.assert_allclose(fcs["mean_22"].variance, [p[t - 21 : t + 1].mean() for t in test])


def test_five_day_horizon(sp500_ohlc) -> None:
    dm = VolatilityDataModule(sp500_ohlc, horizon=5)
    dm.setup()
    rows = {row["model"]: row for row in evaluate_baselines(dm, names=["har", "log_har"])}
    assert rows["har"]["qlike"] < 0.49  # averaging five days is easier than one


def test_fit_must_end_before_evaluation(sp500: VolatilityDataModule) -> None:
    train, test = sp500.split_indices["train"], sp500.split_indices["test"]
    with pytest.raises(ValueError, match="last fit target"):
        har(sp500.proxy, test, train)
    with pytest.raises(ValueError, match="unknown baselines"):
        baseline_forecasts(sp500.returns, sp500.proxy, train, test, names=["arima"])


def test_table_with_extra_forecast() -> None:
    y = np.array([1.0, 2.0, 4.0])
    rows = evaluate_forecasts(y, {"har": Forecast(y * 1.5), "net": Forecast(y * 1.2)})
    assert rows[1]["ratio_har"] == pytest.approx(qlike(y, y * 1.2) / qlike(y, y * 1.5))
    table = format_table(rows, columns=["model", "qlike", "ratio_har"])
    assert table.splitlines()[0] == "| model | qlike | ratio_har |"
    assert len(table.splitlines()) == 4
