import numpy as np
import pytest

from lightning_gradflow.core.flow import fit_depth_profile, fit_line


def test_straight_line_on_log_axis_gives_per_layer_factor():
    gamma = 0.25
    norms = gamma ** np.arange(10)[::-1]  # output layer 1, each layer back multiplies by 0.25
    fit = fit_depth_profile(norms)
    assert fit.gamma == pytest.approx(gamma)
    assert fit.first_last_ratio == pytest.approx(gamma**9)
    assert fit.num_layers == 10


def test_growth_towards_input_gives_gamma_above_one():
    fit = fit_depth_profile(np.array([1e3, 1e2, 1e1, 1.0]))
    assert fit.gamma == pytest.approx(10.0)


def test_unusable_layers_are_left_out():
    fit = fit_depth_profile(np.array([np.nan, 0.0, 1.0, np.inf, 10.0]))
    assert fit.num_layers == 2
    assert fit_depth_profile(np.array([1.0, np.nan])) is None


def test_every_field_of_a_fit_over_the_usable_layers():
    fit = fit_depth_profile(np.array([np.nan, 1e-3, 0.0, 1e-2, np.inf, 1e-1, np.nan]))
    # usable: index 1, 3, 5 at log10 -3, -2, -1: half a decade per layer
    assert (fit.num_layers, fit.first, fit.last) == (3, 1, 5)
    assert fit.slope == pytest.approx(0.5)
    assert fit.gamma == pytest.approx(10**-0.5)
    assert fit.first_last_ratio == pytest.approx(1e-2)
    assert fit.fitted_ratio == pytest.approx(1e-2)


def test_the_fitted_ratio_follows_the_line_not_one_odd_layer():
    # log10 norms -4, -2, -3, 0 at 0..3: least-squares slope 5.5 / 5 = 1.1 (by hand)
    fit = fit_depth_profile(np.array([1e-4, 1e-2, 1e-3, 1.0]))
    assert fit.slope == pytest.approx(1.1)
    assert fit.gamma == pytest.approx(10**-1.1)
    assert fit.first_last_ratio == pytest.approx(1e-4)
    assert fit.fitted_ratio == pytest.approx(10**-3.3)


def test_two_usable_layers_are_enough_and_one_is_not():
    fit = fit_depth_profile(np.array([4.0, 2.0]))
    assert fit.num_layers == 2 and fit.first_last_ratio == 2.0 and fit.gamma == pytest.approx(2.0)
    assert fit_depth_profile(np.array([0.0, 2.0])) is None
    assert fit_depth_profile(np.array([])) is None


def test_fit_line_equals_numpys_least_squares():
    rng = np.random.default_rng(3)
    for n in (2, 3, 40):
        x = np.sort(rng.choice(100, size=n, replace=False)).astype(np.float64)
        y = rng.normal(-3.0, 2.0, size=n)
        np.testing.assert_allclose(fit_line(x, y), np.polyfit(x, y, 1), rtol=1e-10, atol=1e-12)
