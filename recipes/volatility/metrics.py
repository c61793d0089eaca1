"""Forecast-evaluation losses for variance forecasts (pure numpy).

``y`` is the realised variance proxy and ``f`` the variance forecast, both > 0, on the same
scale. QLIKE and MSE of log variance are robust to a noisy proxy (Patton 2011). Every model is
scored on the one variance forecast it issues (for models fit on logs, the bias-corrected
``exp(yhat + s^2/2)``): QLIKE on ``f``, MSE-log and Mincer–Zarnowitz R² on ``ln f``, so log and
level models are compared on like scales.

Example:
    >>> y = np.array([1.0, 2.0, 4.0])
    >>> round(qlike(y, y), 6), round(mse_log(y, y), 6)
    (0.0, 0.0)
"""

from __future__ import annotations

import numpy as np


def _positive_pair(y: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    if y.shape != f.shape or y.size == 0:
        raise ValueError(f"y and f need the same non-empty shape; got {y.shape} and {f.shape}")
    if not (np.all(y > 0) and np.all(f > 0)):
        raise ValueError("y and f must be strictly positive variances")
    return y, f


def qlike_losses(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-observation QLIKE ``y/f - ln(y/f) - 1`` (the series Diebold–Mariano tests compare).

    Example:
        >>> qlike_losses(np.array([1.0, 2.0]), np.array([1.0, 1.0])).round(4).tolist()
        [0.0, 0.3069]
    """
    y, f = _positive_pair(y, f)
    ratio = y / f
    return ratio - np.log(ratio) - 1


def qlike(y: np.ndarray, f: np.ndarray) -> float:
    """Mean QLIKE loss ``y/f - ln(y/f) - 1`` (0 for a perfect forecast).

    Example:
        >>> round(qlike(np.array([2.0]), np.array([1.0])), 4)  # 2 - ln 2 - 1
        0.3069
    """
    return float(np.mean(qlike_losses(y, f)))


def mse_log(y: np.ndarray, f: np.ndarray) -> float:
    """Mean squared error of log variances, ``mean((ln y - ln f)^2)``.

    Example:
        >>> round(mse_log(np.array([np.e]), np.array([1.0])), 4)
        1.0
    """
    y, f = _positive_pair(y, f)
    return float(np.mean((np.log(y) - np.log(f)) ** 2))


def mincer_zarnowitz_r2(y: np.ndarray, f: np.ndarray) -> float:
    """R^2 of the OLS regression ``ln y = a + b ln f`` (0 for a constant forecast).

    Example:
        >>> f = np.array([1.0, 2.0, 4.0])
        >>> round(mincer_zarnowitz_r2(3 * f**2, f), 6)  # ln y is affine in ln f
        1.0
    """
    y, f = _positive_pair(y, f)
    x, z = np.log(f), np.log(y)
    if np.ptp(x) == 0 or np.ptp(z) == 0:
        return 0.0
    return float(np.corrcoef(x, z)[0, 1] ** 2)


def evaluate_forecast(y: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """QLIKE of the variance forecast ``f``; MSE-log and MZ R^2 of ``ln f`` (like scales).

    Args:
        y: realised variance proxy.
        f: variance forecast (bias-corrected for models fit on logs).

    Example:
        >>> y = np.array([1.0, 2.0])
        >>> evaluate_forecast(y, y)["qlike"]
        0.0
    """
    return {"qlike": qlike(y, f), "mse_log": mse_log(y, f), "mz_r2": mincer_zarnowitz_r2(y, f)}
