"""How far back a recurrent forecaster's gradient reaches: ``|d yhat / d h_0|`` against the window.

For a vanilla RNN ``h_t = phi(W_ih x_t + W_hh h_(t-1) + b)`` the gradient of the forecast with
respect to the state ``T`` steps back is ``J_1^T ... J_T^T grad_h_T`` with
``J_t = diag(phi'(a_t)) W_hh``. With ``phi`` the identity it is ``(W_hh^T)^T grad_h_T``, whose norm
changes by the spectral radius ``rho`` per step once ``T`` is large: the seed fact "gradient
~ rho^T". With ``tanh`` every step also multiplies by ``tanh'(a_t) = 1 - h_t^2 <= 1``, so the rate
is damped below ``rho``: about ``rho * E[tanh']`` while the units are unsaturated, and between
``rho * mean(tanh')`` and ``rho * rms(tanh')`` once many are saturated (the gradient then runs
through the units that are not). For an LSTM the cell path multiplies by the forget gate ``f_t``
per step; PyTorch's init gives ``f ~ sigmoid(0) = 0.5``.

:func:`gradient_growth` measures it on real input windows: for each ``T`` the forecast is made
from the last ``T`` days of each window with a zero initial state ``h_0`` (and ``c_0``) that
requires grad; the per-window norms are averaged in logs (a geometric mean), and the per-step
rate is ``exp`` of the least-squares slope of ``ln |g|`` on ``T``. Everything runs in float64
(``0.5^160`` and ``3^160`` are outside float32's range).

Example:
    >>> import torch
    >>> from recipes.volatility.models import VanillaRNN
    >>> _ = torch.manual_seed(0)
    >>> rnn = VanillaRNN(3, hidden=16, recurrent_spectral_radius=2.0)
    >>> g = gradient_growth(rnn, torch.randn(8, 60, 3), lengths=(20, 40, 60), linear=True)
    >>> round(g.rate, 1)
    2.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recipes.volatility.models import LSTM, VanillaRNN


@dataclass(frozen=True)
class Growth:
    """``|d yhat / d h_0|`` against the number of steps ``T`` back.

    Attributes:
        lengths: the ``T`` measured.
        log10_norm: per ``T``, the mean over windows of ``log10 |d yhat / d h_0|`` (LSTM: of the
            gradient with respect to ``(h_0, c_0)`` together).
        rate: the fitted per-step factor, ``exp`` of the slope of ``ln |g|`` on ``T``.
        spectral_radius: ``max |eig(W_hh)|`` (vanilla RNN), else ``None``.
        deriv_mean, deriv_rms: mean and root mean square of ``phi'(a_t)`` over units, steps and
            windows at the longest ``T`` (vanilla RNN; 1 for the linear one), else ``None``.
        forget_mean: mean forget gate over units, steps and windows (LSTM), else ``None``.
    """

    lengths: tuple[int, ...]
    log10_norm: tuple[float, ...]
    rate: float
    spectral_radius: float | None = None
    deriv_mean: float | None = None
    deriv_rms: float | None = None
    forget_mean: float | None = None

    def log10_at(self, length: int) -> float:
        """``log10 |g|`` at ``T = length`` (one of ``lengths``)."""
        return self.log10_norm[self.lengths.index(length)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spectral_radius(weight: torch.Tensor) -> float:
    """``max |eigenvalue|`` of a square matrix."""
    return float(torch.linalg.eigvals(weight.detach().double()).abs().max())


def _rnn_layer(model: VanillaRNN) -> nn.RNN:
    rnn = model.rnn
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError("gradient_growth measures one-layer, one-directional RNNs")
    return rnn


def _unroll_rnn(
    model: VanillaRNN, x: torch.Tensor, h0: torch.Tensor, linear: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forecast and every step's ``phi'(a_t)``, written out step by step."""
    rnn = _rnn_layer(model)
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    bias = rnn.bias_ih_l0 + rnn.bias_hh_l0 if rnn.bias else 0.0
    h, derivs = h0, []
    for t in range(x.shape[1]):
        a = x[:, t] @ w_ih.T + bias + h @ w_hh.T
        if linear:
            h = a
            derivs.append(torch.ones_like(a))
        elif rnn.nonlinearity == "tanh":
            h = torch.tanh(a)
            derivs.append(1 - h.detach() ** 2)
        else:  # relu
            h = torch.relu(a)
            derivs.append((a.detach() > 0).to(a.dtype))
    return model.head(h).squeeze(-1), torch.stack(derivs, 1)


def _lstm_forget(model: LSTM, x: torch.Tensor) -> float:
    """Mean forget gate of a one-layer LSTM over units, steps and windows."""
    rnn = model.rnn
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError("gradient_growth measures one-layer, one-directional LSTMs")
    hidden = rnn.hidden_size
    with torch.no_grad():
        out, _ = rnn(x)
        previous = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], 1)
        gates = x @ rnn.weight_ih_l0.T + previous @ rnn.weight_hh_l0.T
        gates = gates + rnn.bias_ih_l0 + rnn.bias_hh_l0
        return float(torch.sigmoid(gates[..., hidden : 2 * hidden]).mean())


def gradient_growth(
    model: nn.Module, x: torch.Tensor, lengths: Sequence[int], *, linear: bool = False
) -> Growth:
    """Measure ``|d yhat / d h_0|`` for each ``T`` in ``lengths`` on the windows ``x``.

    Args:
        model: a one-layer :class:`~recipes.volatility.models.VanillaRNN` or
            :class:`~recipes.volatility.models.LSTM` (not changed; a float64 copy is
            measured).
        x: ``(windows, days, features)`` inputs, at least ``max(lengths)`` days; the forecast
            for ``T`` reads the last ``T`` days.
        lengths: the ``T`` values, at least two.
        linear: vanilla RNN only: replace its nonlinearity by the identity (same weights).

    Raises:
        ValueError: for another model, fewer than two lengths or windows too short.
    """
    lengths = tuple(sorted({int(t) for t in lengths}))
    if len(lengths) < 2 or lengths[0] < 1:
        raise ValueError(f"lengths={list(lengths)} is not allowed; need two or more values >= 1")
    if x.ndim != 3 or x.shape[1] < lengths[-1]:
        raise ValueError(f"x has shape {tuple(x.shape)}; need (windows, >= {lengths[-1]}, feat)")
    if not isinstance(model, VanillaRNN | LSTM):
        raise ValueError(f"gradient_growth measures VanillaRNN or LSTM, not {type(model)}")
    if linear and not isinstance(model, VanillaRNN):
        raise ValueError("linear=True replaces a vanilla RNN's nonlinearity; this is an LSTM")
    model = copy.deepcopy(model).double().eval()
    x = x.detach().double()
    hidden = model.rnn.hidden_size
    logs, derivs = [], None
    for length in lengths:
        xs = x[:, -length:]
        h0 = torch.zeros(len(x), hidden, dtype=torch.float64, requires_grad=True)
        if isinstance(model, VanillaRNN):
            forecast, derivs = _unroll_rnn(model, xs, h0, linear)
            (grad,) = torch.autograd.grad(forecast.sum(), h0)
        else:
            c0 = torch.zeros_like(h0, requires_grad=True)
            out, _ = model.rnn(xs, (h0.unsqueeze(0), c0.unsqueeze(0)))
            forecast = model.head(out[:, -1]).squeeze(-1)
            grad = torch.cat(torch.autograd.grad(forecast.sum(), (h0, c0)), dim=1)
        logs.append(float(torch.log(grad.norm(dim=1)).mean()))
    slope = float(np.polyfit(lengths, logs, 1)[0])
    log10 = tuple(v / math.log(10) for v in logs)
    if isinstance(model, VanillaRNN):
        return Growth(
            lengths,
            log10,
            math.exp(slope),
            spectral_radius=spectral_radius(model.rnn.weight_hh_l0),
            deriv_mean=float(derivs.mean()),
            deriv_rms=float(derivs.pow(2).mean().sqrt()),
        )
    return Growth(lengths, log10, math.exp(slope), forget_mean=_lstm_forget(model, x))
