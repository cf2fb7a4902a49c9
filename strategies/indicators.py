"""Rolling indicators for strategies: simple moving average, rolling max/min, crossovers.

Every output element is computed by the same fixed sequence of float operations on
the window it covers (an element-wise loop over the window offsets, vectorised over
time), so a value never depends on how the series was cut into batches or how much
history precedes it: the streaming operator (one batch at a time) and the whole-series
evaluation of a sweep give the same bits. Pandas' ``rolling().mean()`` (a running sum
with compensation) agrees to ~1e-15 relative, not always to the last bit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sma", "rolling_max", "rolling_min", "crossed_above", "crossed_below"]


def _windows_reduce(x: np.ndarray, n: int, ufunc: np.ufunc) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if n < 1:
        raise ValueError(f"window must be >= 1, got {n}")
    if len(x) < n:
        return out
    acc = x[n - 1 :].astype(np.float64, copy=True)  # newest element of each window first
    for j in range(1, n):
        ufunc(acc, x[n - 1 - j : len(x) - j], out=acc)
    out[n - 1 :] = acc
    return out


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` values.

    Args:
        x: float64, shape (m,), oldest first (e.g. closes in quote currency).
        n: window length in bars, >= 1.

    Returns:
        float64, shape (m,): ``out[t] = (x[t] + x[t-1] + ... + x[t-n+1]) / n`` summed
        in that order; NaN for ``t < n - 1``.

    Raises:
        ValueError: ``n < 1``.
    """
    total = _windows_reduce(x, n, np.add)
    return total / n


def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """Highest of the last ``n`` values (``out[t] = max(x[t-n+1..t])``; NaN before ``n - 1``)."""
    return _windows_reduce(x, n, np.maximum)


def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """Lowest of the last ``n`` values (``out[t] = min(x[t-n+1..t])``; NaN before ``n - 1``)."""
    return _windows_reduce(x, n, np.minimum)


def crossed_above(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` crossed above ``b`` at t: ``a[t-1] < b[t-1] and a[t] > b[t]``.

    backtesting.py's ``lib.crossover`` definition (strict on both bars, so a bar where
    they are equal is no cross, and a cross through equality is missed). NaN compares
    False. Returns bool, shape (m,); ``out[0]`` is False.
    """
    out = np.zeros(len(a), dtype=bool)
    if len(a) > 1:
        with np.errstate(invalid="ignore"):
            out[1:] = (a[:-1] < b[:-1]) & (a[1:] > b[1:])
    return out


def crossed_below(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` crossed below ``b`` at t: :func:`crossed_above` of ``b`` over ``a``."""
    return crossed_above(b, a)
