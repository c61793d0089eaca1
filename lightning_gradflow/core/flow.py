"""The shape of gradient flow over depth: log10 norm against layer index.

Backpropagation multiplies one Jacobian per layer, so when every layer scales the gradient by a
similar factor γ the per-layer norms lie on a straight line on a log axis: ``log10 ||g_l||`` is
linear in ``l`` with slope ``log10 γ``. Fitting that line summarises a whole picture in two
numbers: γ (< 1 means the gradient shrinks towards the input, > 1 that it grows) and the
first/last ratio.

Example:
    >>> import numpy as np
    >>> fit = fit_depth_profile(np.array([1e-6, 1e-4, 1e-2, 1.0]))
    >>> round(fit.gamma, 3), fit.first_last_ratio
    (0.01, 1e-06)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DepthFit:
    """Least-squares fit of log10 gradient norm against layer index.

    Attributes:
        slope: change of log10 norm per layer, from input (index 0) to output.
        gamma: ``10 ** -slope``, the factor by which each layer multiplies the gradient on its
            way back from output to input (< 1: vanishing towards the input; > 1: growing).
        first_last_ratio: norm of the first layer divided by norm of the last.
        num_layers: layers that entered the fit (finite, positive norms).
        first: index of the first layer that entered the fit.
        last: index of the last layer that entered the fit.
        fitted_ratio: the first/last ratio the fitted line predicts, ``10 ** -(slope *
            (last - first))``: unlike ``first_last_ratio``, not set by one odd layer.
    """

    slope: float
    gamma: float
    first_last_ratio: float
    num_layers: int
    first: int
    last: int
    fitted_ratio: float


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``y`` against ``x`` (at least two distinct ``x``).

    The closed form: a few times faster than ``np.polyfit(x, y, 1)``, which the detectors
    would otherwise call several times for every judged step.

    Example:
        >>> fit_line(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
        (2.0, 1.0)
    """
    x_mean = x.mean()
    centred = x - x_mean  # sums to zero, so centring y too would change nothing
    slope = float(centred @ y / (centred @ centred))
    return slope, float(y.mean() - slope * x_mean)


def fit_depth_profile(norms: np.ndarray) -> DepthFit | None:
    """Fit ``log10 norms`` against layer index; ``None`` with fewer than two usable layers.

    Layers whose norm is zero, missing (NaN) or infinite are left out of the fit.

    Example:
        >>> import numpy as np
        >>> fit_depth_profile(np.array([1.0, 1.0, 1.0])).gamma
        1.0
    """
    norms = np.asarray(norms, dtype=np.float64)
    depth = np.flatnonzero(np.isfinite(norms) & (norms > 0))
    if depth.size < 2:
        return None
    logs = np.log10(norms[depth])
    slope = fit_line(depth.astype(np.float64), logs)[0]
    return DepthFit(
        slope=slope,
        gamma=float(10.0 ** (-slope)),
        first_last_ratio=float(norms[depth[0]] / norms[depth[-1]]),
        num_layers=int(depth.size),
        first=int(depth[0]),
        last=int(depth[-1]),
        fitted_ratio=float(10.0 ** (-slope * float(depth[-1] - depth[0]))),
    )
