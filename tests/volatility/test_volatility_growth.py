"""The RNN gradient-growth measurement against what the algebra says it must give."""

from __future__ import annotations

import pytest
import torch

from recipes.volatility.growth import gradient_growth, spectral_radius
from recipes.volatility.models import LSTM, MLP, VanillaRNN

LENGTHS = (10, 20, 40, 60)


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(16, 60, 3)


def _rnn(rho: float | None, **kwargs) -> VanillaRNN:
    torch.manual_seed(1)
    return VanillaRNN(3, hidden=16, recurrent_spectral_radius=rho, **kwargs)


@pytest.mark.parametrize("rho", [0.5, 1.0, 3.0])
def test_linear_rnn_changes_by_rho_per_step(rho, x):
    growth = gradient_growth(_rnn(rho), x, LENGTHS, linear=True)
    assert growth.rate == pytest.approx(rho, rel=0.02)
    assert growth.spectral_radius == pytest.approx(rho, rel=1e-6)
    assert growth.deriv_mean == 1.0
    span = growth.log10_at(60) - growth.log10_at(10)
    assert span == pytest.approx(50 * torch.log10(torch.tensor(rho)).item(), abs=0.6)


def test_rho_half_vanishes_and_rho_three_explodes(x):
    small = gradient_growth(_rnn(0.5), x, LENGTHS, linear=True)
    big = gradient_growth(_rnn(3.0), x, LENGTHS, linear=True)
    assert small.log10_at(60) < small.log10_at(10) - 14  # 0.5^50 ~ 1e-15
    assert big.log10_at(60) > big.log10_at(10) + 23  # 3^50 ~ 7e23


def test_tanh_damps_the_rate_below_rho(x):
    for rho in (0.5, 0.9):  # unsaturated: the rate is rho * E[tanh']
        growth = gradient_growth(_rnn(rho), x, LENGTHS)
        assert growth.deriv_mean < 1
        assert growth.rate == pytest.approx(rho * growth.deriv_mean, rel=0.05)
    saturated = gradient_growth(_rnn(3.0), x, LENGTHS)
    assert saturated.rate < 0.6 * 3.0  # far below rho = 3 ...
    # ... and between rho * mean(tanh') and rho * rms(tanh'), not at rho * mean(tanh')
    assert 3.0 * saturated.deriv_mean < saturated.rate < 3.0 * saturated.deriv_rms * 1.02


def test_orthogonal_init_keeps_the_linear_norm(x):
    rnn = _rnn(None, recurrent_init="orthogonal")
    growth = gradient_growth(rnn, x, LENGTHS, linear=True)
    assert growth.rate == pytest.approx(1.0, abs=1e-6)
    assert spectral_radius(rnn.rnn.weight_hh_l0) == pytest.approx(1.0, abs=1e-5)


def test_the_unrolled_rnn_is_the_model(x):
    """The measurement's step-by-step recurrence gives the model's own forecast."""
    from recipes.volatility.growth import _unroll_rnn

    rnn = _rnn(0.9).double()
    h0 = torch.zeros(len(x), 16, dtype=torch.float64)
    forecast, _ = _unroll_rnn(rnn, x.double(), h0, linear=False)
    torch.testing.assert_close(forecast, rnn(x.double()))


def test_lstm_forget_gate_sets_its_rate(x):
    torch.manual_seed(2)
    default = gradient_growth(LSTM(3, hidden=16), x, LENGTHS)
    torch.manual_seed(2)
    opened = gradient_growth(LSTM(3, hidden=16, forget_bias=3.0), x, LENGTHS)
    assert default.forget_mean == pytest.approx(0.5, abs=0.05) and default.rate < 0.8
    assert opened.forget_mean > 0.9 and opened.rate > default.rate + 0.1
    assert default.spectral_radius is None and default.deriv_mean is None


def test_bad_arguments(x):
    with pytest.raises(ValueError, match="two or more"):
        gradient_growth(_rnn(0.5), x, [10])
    with pytest.raises(ValueError, match="need"):
        gradient_growth(_rnn(0.5), x, [10, 80])
    with pytest.raises(ValueError, match="VanillaRNN or LSTM"):
        gradient_growth(MLP(3, window=60, depth=2, width=4), x, LENGTHS)
    with pytest.raises(ValueError, match="linear=True"):
        gradient_growth(LSTM(3, hidden=4), x, LENGTHS, linear=True)
