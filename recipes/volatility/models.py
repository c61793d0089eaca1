"""Forecasting networks: each maps ``(batch, window, features)`` to a ``(batch,)`` forecast.

Layers are named submodules (``linear1`` .. ``head``; activations are real ``nn.Module``s) so
per-layer gradient norms and activation hooks are meaningful. A deep sigmoid ``MLP`` is the
textbook vanishing-gradient network; ``ResidualMLP`` is the same with skip connections.

Example:
    >>> import torch
    >>> model = MLP(input_dim=3, window=22, depth=2, width=8)
    >>> tuple(model(torch.zeros(4, 22, 3)).shape)
    (4,)
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from recipes.volatility.validation import check_choice

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
}
INITS = ("default", "xavier", "he", "normal")
NORMS = ("none", "batch", "layer")


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}={value} is not allowed; need > 0")


def _check_dense(
    input_dim: int,
    window: int,
    depth: int,
    width: int,
    activation: str,
    init: str,
    init_std: float,
    norm: str,
) -> None:
    _positive(input_dim=input_dim, window=window, depth=depth, width=width, init_std=init_std)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("init", init, INITS)
    check_choice("norm", norm, NORMS)


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


def _initialise(module: nn.Module, init: str, init_std: float) -> None:
    """Re-initialise every Linear in ``module`` (``default`` keeps PyTorch's init)."""
    if init == "default":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            if init == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            elif init == "he":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """Plain deep net on the flattened window: ``depth`` x (Linear, norm, activation), then a head.

    Args:
        input_dim: features per day.
        window: days per input window.
        depth: hidden layers.
        width: hidden units per layer.
        activation: one of ``ACTIVATIONS``.
        init: ``default`` (PyTorch), ``xavier`` (uniform), ``he`` (Kaiming normal, fan-in) or
            ``normal`` (N(0, init_std^2)); biases are zeroed unless ``default``.
        init_std: standard deviation for ``init="normal"``.
        norm: ``none``, ``batch`` or ``layer`` normalisation before each activation.

    Example:
        >>> [name for name, _ in MLP(3, 22, depth=2, width=8).layers.named_children()]
        ['flatten', 'linear1', 'act1', 'linear2', 'act2', 'head']
    """

    def __init__(
        self,
        input_dim: int,
        window: int,
        depth: int = 4,
        width: int = 64,
        activation: str = "relu",
        init: str = "default",
        init_std: float = 0.02,
        norm: str = "none",
    ) -> None:
        super().__init__()
        _check_dense(input_dim, window, depth, width, activation, init, init_std, norm)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        fan_in = input_dim * window
        for i in range(1, depth + 1):
            layers[f"linear{i}"] = nn.Linear(fan_in, width)
            if norm != "none":
                layers[f"norm{i}"] = _norm(norm, width)
            layers[f"act{i}"] = ACTIVATIONS[activation]()
            fan_in = width
        layers["head"] = nn.Linear(width, 1)
        self.layers = nn.Sequential(layers)
        _initialise(self, init, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class ResidualBlock(nn.Module):
    """Pre-activation block ``x + linear2(act(linear1(norm(x))))`` (He et al. 2016)."""

    def __init__(self, width: int, activation: str, norm: str) -> None:
        super().__init__()
        self.norm = _norm(norm, width)
        self.linear1 = nn.Linear(width, width)
        self.act = ACTIVATIONS[activation]()
        self.linear2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear2(self.act(self.linear1(self.norm(x))))


class ResidualMLP(nn.Module):
    """``MLP`` with skip connections: input projection, ``depth`` residual blocks, head.

    Takes the same arguments as :class:`MLP`; ``depth`` counts :class:`ResidualBlock`s (two Linear
    layers each, ``norm`` applied first) between an input projection and the head.

    Example:
        >>> model = ResidualMLP(3, 22, depth=20, width=16, activation="sigmoid")
        >>> len(model.blocks), model.blocks[0].act
        (20, Sigmoid())
    """

    def __init__(
        self,
        input_dim: int,
        window: int,
        depth: int = 4,
        width: int = 64,
        activation: str = "relu",
        init: str = "default",
        init_std: float = 0.02,
        norm: str = "none",
    ) -> None:
        super().__init__()
        _check_dense(input_dim, window, depth, width, activation, init, init_std, norm)
        self.flatten = nn.Flatten()
        self.input = nn.Linear(input_dim * window, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, activation, norm) for _ in range(depth))
        self.head = nn.Linear(width, 1)
        _initialise(self, init, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(self.flatten(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h).squeeze(-1)


def sinusoidal_encoding(length: int, d_model: int) -> torch.Tensor:
    """The fixed ``(length, d_model)`` sine/cosine positional encoding of Vaswani et al. (2017).

    Example:
        >>> sinusoidal_encoding(4, 6)[0].tolist()
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model))
    enc = torch.zeros(length, d_model)
    enc[:, 0::2] = torch.sin(position * freq)
    enc[:, 1::2] = torch.cos(position * freq)[:, : d_model // 2]
    return enc


class Transformer(nn.Module):
    """Encoder-only transformer over the window's days, pooled to one forecast.

    Args:
        input_dim: features per day.
        window: maximum days per input window (length of the positional encoding).
        depth: encoder blocks (``nn.TransformerEncoderLayer``, GELU, ``batch_first``).
        d_model: model width; must be divisible by ``heads``.
        heads: attention heads.
        norm_position: ``pre`` (LayerNorm inside the residual branch, plus a final LayerNorm) or
            ``post`` (original 2017 placement).
        dropout: dropout in the blocks.
        positional: ``sinusoidal`` (fixed) or ``learned``.
        pool: ``last`` token or ``mean`` over the window.
        ff_mult: feed-forward width as a multiple of ``d_model``.

    Example:
        >>> model = Transformer(3, 22, depth=1, d_model=8, heads=2)
        >>> tuple(model(torch.zeros(5, 22, 3)).shape)
        (5,)
    """

    def __init__(
        self,
        input_dim: int,
        window: int,
        depth: int = 2,
        d_model: int = 32,
        heads: int = 4,
        norm_position: str = "pre",
        dropout: float = 0.1,
        positional: str = "sinusoidal",
        pool: str = "last",
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        _positive(input_dim=input_dim, window=window, depth=depth, d_model=d_model, heads=heads)
        _positive(ff_mult=ff_mult)
        if d_model % heads:
            raise ValueError(
                f"d_model={d_model} is not allowed; it must be divisible by heads={heads}"
            )
        check_choice("norm_position", norm_position, ("pre", "post"))
        check_choice("positional", positional, ("sinusoidal", "learned"))
        check_choice("pool", pool, ("last", "mean"))
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} is not allowed; need 0 <= dropout < 1")
        self.window = window
        self.pool = pool
        self.input = nn.Linear(input_dim, d_model)
        if positional == "learned":
            self.positional = nn.Parameter(0.02 * torch.randn(window, d_model))
        else:
            self.register_buffer("positional", sinusoidal_encoding(window, d_model))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model,
                heads,
                dim_feedforward=ff_mult * d_model,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=norm_position == "pre",
            )
            for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(d_model) if norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if length > self.window:
            raise ValueError(f"input has {length} days; this model takes at most {self.window}")
        h = self.input(x) + self.positional[:length]
        for block in self.blocks:
            h = block(h)
        h = self.final_norm(h)
        pooled = h[:, -1] if self.pool == "last" else h.mean(dim=1)
        return self.head(pooled).squeeze(-1)


class LSTM(nn.Module):
    """``nn.LSTM`` over the window; the last step's hidden state feeds a linear head.

    Args:
        forget_bias: ``None`` keeps PyTorch's init (forget gate ``sigmoid(~0) ~ 0.5``: the cell
            path then halves the gradient per step at init); a number sets every layer's
            forget-gate bias to it (``bias_ih`` = ``forget_bias``, ``bias_hh`` = 0), e.g. 1.0
            (Jozefowicz et al. 2015) for a gate ``~ 0.73``.

    Example:
        >>> tuple(LSTM(3, hidden=8)(torch.zeros(2, 22, 3)).shape)
        (2,)
        >>> LSTM(3, hidden=4, forget_bias=1.0).rnn.bias_ih_l0[4:8].tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int = 32,
        layers: int = 1,
        dropout: float = 0.0,
        forget_bias: float | None = None,
    ):
        super().__init__()
        _positive(input_dim=input_dim, hidden=hidden, layers=layers)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} is not allowed; need 0 <= dropout < 1")
        if forget_bias is not None and not (
            isinstance(forget_bias, int | float) and math.isfinite(forget_bias)
        ):
            raise ValueError(f"forget_bias={forget_bias!r} is not allowed; need a finite number")
        self.rnn = nn.LSTM(input_dim, hidden, layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden, 1)
        if forget_bias is not None:  # gates are ordered input, forget, cell, output
            with torch.no_grad():
                for k in range(layers):
                    getattr(self.rnn, f"bias_ih_l{k}")[hidden : 2 * hidden] = forget_bias
                    getattr(self.rnn, f"bias_hh_l{k}")[hidden : 2 * hidden] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(-1)


RECURRENT_INITS = ("default", "orthogonal")


class VanillaRNN(nn.Module):
    """Elman ``nn.RNN``; optionally rescales each ``weight_hh_l*`` to a spectral radius at init.

    A radius well below 1 makes gradients vanish over long windows, well above 1 explode.
    PyTorch's default init (uniform in ``+-1/sqrt(hidden)``) gives a radius of about
    ``1/sqrt(3) ~ 0.58``. ``recurrent_init="orthogonal"`` starts from an orthogonal matrix (every
    eigenvalue of modulus 1, ``|W v| = |v|``), then scaled to the radius if one is given.

    Example:
        >>> rnn = VanillaRNN(3, hidden=16, recurrent_spectral_radius=0.5)
        >>> round(torch.linalg.eigvals(rnn.rnn.weight_hh_l0).abs().max().item(), 4)
        0.5
        >>> w = VanillaRNN(3, hidden=16, recurrent_init="orthogonal").rnn.weight_hh_l0
        >>> torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)
        True
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int = 32,
        layers: int = 1,
        nonlinearity: str = "tanh",
        recurrent_spectral_radius: float | None = None,
        recurrent_init: str = "default",
    ) -> None:
        super().__init__()
        _positive(input_dim=input_dim, hidden=hidden, layers=layers)
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        check_choice("recurrent_init", recurrent_init, RECURRENT_INITS)
        if recurrent_spectral_radius is not None:
            _positive(recurrent_spectral_radius=recurrent_spectral_radius)
        self.rnn = nn.RNN(input_dim, hidden, layers, nonlinearity=nonlinearity, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():
            for k in range(layers):
                weight = getattr(self.rnn, f"weight_hh_l{k}")
                if recurrent_init == "orthogonal":
                    nn.init.orthogonal_(weight)
                if recurrent_spectral_radius is not None:
                    radius = torch.linalg.eigvals(weight).abs().max()
                    weight.mul_(recurrent_spectral_radius / radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(-1)
