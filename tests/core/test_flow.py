import numpy as np
import pytest

from lightning_gradflow.core.flow import fit_depth_profile


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
