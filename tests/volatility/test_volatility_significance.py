"""Diebold–Mariano and the Model Confidence Set against answers known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.volatility.significance import (
    diebold_mariano,
    model_confidence_set,
    newey_west_bandwidth,
    significance,
    superior_predictive_ability,
)

pytest.importorskip("arch")


def test_dm_without_lags_is_the_plain_t_statistic() -> None:
    rng = np.random.default_rng(0)
    ref = rng.exponential(size=500)
    loss = ref + rng.normal(0.05, 1.0, size=500)
    d = loss - ref
    dm = diebold_mariano(loss, ref, bandwidth=0)
    assert dm.t == pytest.approx(d.mean() / (d.std() / np.sqrt(len(d))), rel=1e-12)
    assert dm.mean_diff == pytest.approx(d.mean()) and dm.bandwidth == 0


def test_dm_newey_west_on_an_alternating_differential() -> None:
    """``d = c + (+1, -1, ...)``: gamma0 = 1, gamma1 = -(n-1)/n; Bartlett weight 1/2 at lag 1,
    so the long-run variance is 1/n and ``t = c / sqrt(1/n^2) = c n`` exactly."""
    n, c = 100, 0.01
    ref = np.full(n, 2.0)
    loss = ref + c + np.tile([1.0, -1.0], n // 2)
    assert diebold_mariano(loss, ref, bandwidth=1).t == pytest.approx(c * n, rel=1e-9)
    # without the HAC the same series looks insignificant: t = c sqrt(n) / sd
    assert diebold_mariano(loss, ref, bandwidth=0).t == pytest.approx(c * np.sqrt(n), rel=1e-3)


def test_dm_sign_pvalue_and_symmetry() -> None:
    rng = np.random.default_rng(1)
    ref = rng.exponential(size=300)
    worse = ref + 0.3 + rng.normal(scale=0.2, size=300)
    dm = diebold_mariano(worse, ref)
    assert dm.t > 5 and dm.pvalue < 1e-6
    back = diebold_mariano(ref, worse)
    assert back.t == pytest.approx(-dm.t) and back.pvalue == pytest.approx(dm.pvalue)
    same = diebold_mariano(ref + rng.normal(scale=0.1, size=300), ref)
    assert same.pvalue > 0.01


def test_bandwidth_rule_and_bad_input() -> None:
    assert newey_west_bandwidth(100) == 4 and newey_west_bandwidth(754) == 6
    assert newey_west_bandwidth(100, horizon=10) == 9
    with pytest.raises(ValueError, match="same 1-d shape"):
        diebold_mariano(np.ones(5), np.ones(4))


def test_mcs_excludes_a_clearly_worse_model() -> None:
    rng = np.random.default_rng(2)
    base = rng.exponential(size=600)
    losses = {
        "good": base,
        "as_good": base + rng.normal(scale=0.05, size=600),
        "bad": base + 0.5 + rng.normal(scale=0.05, size=600),
    }
    mcs = model_confidence_set(losses, size=0.1, reps=300, seed=0)
    assert list(mcs) == ["good", "as_good", "bad"]
    assert mcs["good"]["in_mcs"] and mcs["as_good"]["in_mcs"]
    assert not mcs["bad"]["in_mcs"] and mcs["bad"]["pvalue"] < 0.01
    assert max(m["pvalue"] for m in mcs.values()) == 1.0
    with pytest.raises(ValueError, match="at least two"):
        model_confidence_set({"good": base})


def test_significance_tests_each_model_against_each_present_reference() -> None:
    rng = np.random.default_rng(3)
    y = np.exp(rng.normal(size=400))
    forecasts = {"har": y * 1.5, "log_har": y * 1.4, "net": y * 1.05}
    out = significance(y, forecasts, models=["net", "har"], mcs_reps=200)
    assert set(out["dm"]["net"]) == {"har", "log_har"}  # lhar absent: skipped
    assert set(out["dm"]["har"]) == {"log_har"}  # never against itself
    assert out["dm"]["net"]["har"]["t"] < -5
    assert out["mcs"]["net"]["in_mcs"] and not out["mcs"]["har"]["in_mcs"]


def test_spa_flags_the_baseline_that_beats_the_benchmark() -> None:
    rng = np.random.default_rng(4)
    net = rng.exponential(size=600)
    beaten = superior_predictive_ability(
        net, {"worse": net + 0.5, "better": net - 0.3 + rng.normal(scale=0.05, size=600)}, reps=300
    )
    assert beaten["pvalue"] < 0.01 and beaten["better"] == ["better"]
    assert beaten["pvalue_lower"] <= beaten["pvalue"] <= beaten["pvalue_upper"]
    unbeaten = superior_predictive_ability(
        net, {"worse": net + 0.5, "same": net + rng.normal(scale=0.05, size=600)}, reps=300
    )
    assert unbeaten["pvalue"] > 0.1 and unbeaten["better"] == []
    with pytest.raises(ValueError, match="at least one alternative"):
        superior_predictive_ability(net, {})


def test_significance_runs_the_spa_of_each_model_against_the_rest() -> None:
    rng = np.random.default_rng(5)
    y = np.exp(rng.normal(size=400))

    def noisy(scale: float = 1.0) -> np.ndarray:
        return y * scale * np.exp(rng.normal(scale=0.3, size=400))

    forecasts = {"har": noisy(), "log_har": noisy(1.5), "net": noisy(2.0)}
    out = significance(y, forecasts, models=["net"], mcs_reps=200)
    assert set(out["spa"]) == {"net"}
    assert out["spa"]["net"]["pvalue"] < 0.05 and "har" in out["spa"]["net"]["better"]
    good = significance(y, {**forecasts, "net": noisy()}, models=["net"], mcs_reps=200)
    assert good["spa"]["net"]["pvalue"] > 0.1 and good["spa"]["net"]["better"] == []
