"""``dual_sma``: long when the fast SMA crosses above the slow one, short (or flat) when below."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from strategies.base import Bar, History, Strategy, StrategyParams
from strategies.indicators import crossed_above, crossed_below, sma

__all__ = ["DualSma", "DualSmaParams"]


class DualSmaParams(StrategyParams):
    """Params of ``dual_sma``.

    Attributes:
        fast: fast SMA window in bars, >= 1.
        slow: slow SMA window in bars, > fast.
        allow_short: on a cross below, go short (True, default) or flat (False).
    """

    fast: int = Field(default=10, ge=1, le=100_000)
    slow: int = Field(default=30, ge=2, le=100_000)
    allow_short: bool = True

    @field_validator("slow")
    @classmethod
    def _slow_above_fast(cls, value: int, info: ValidationInfo) -> int:
        fast = info.data.get("fast")
        if fast is not None and value <= fast:
            raise ValueError(f"slow ({value}) must be greater than fast ({fast})")
        return value


class DualSma(Strategy):
    """Dual simple-moving-average crossover on bar closes.

    With ``f = SMA(close, fast)`` and ``s = SMA(close, slow)``
    (:func:`strategies.indicators.sma`), at bar ``t``: a cross above
    (``f[t-1] < s[t-1]`` and ``f[t] > s[t]``, backtesting.py's ``crossover``) sets the
    target to +1; a cross below sets it to -1 (0 with ``allow_short: false``); any
    other bar keeps the previous target (NaN). The first possible decision is at the
    ``slow + 1``-th bar (``warmup_bars``), where both SMAs exist on two bars: the bar
    backtesting.py first calls ``next()`` on.
    """

    Params: ClassVar[type[StrategyParams]] = DualSmaParams

    @property
    def warmup_bars(self) -> int:
        """``slow + 1``."""
        return self.params.slow + 1

    def on_bar(self, bar: Bar, history: History) -> float | None:
        """+1 / -1 (or 0) on a cross of the last two bars, else None."""
        close = history.close[-(self.params.slow + 1) :]
        fast, slow = sma(close, self.params.fast)[-2:], sma(close, self.params.slow)[-2:]
        if fast[0] < slow[0] and fast[1] > slow[1]:
            return 1.0
        if fast[0] > slow[0] and fast[1] < slow[1]:
            return -1.0 if self.params.allow_short else 0.0
        return None

    def decide(self, history: History, first: int) -> np.ndarray:
        """Vectorised :meth:`on_bar` for bars ``first..``: NaN except at crosses."""
        fast, slow = sma(history.close, self.params.fast), sma(history.close, self.params.slow)
        return _targets(fast, slow, self.params.allow_short)[first:]

    @classmethod
    def decide_grid(cls, history: History, grid: Sequence[DualSmaParams]) -> np.ndarray:
        """Targets of many parameter sets in one pass: float64, shape (len(grid), len(history)).

        Each distinct window's SMA is computed once for the whole grid (a 10 x 10 grid
        needs 20 SMAs, not 200); row ``k`` equals ``DualSma(grid[k]).decide(history, 0)``.
        """
        cache: dict[int, np.ndarray] = {}

        def mean(n: int) -> np.ndarray:
            if n not in cache:
                cache[n] = sma(history.close, n)
            return cache[n]

        out = np.empty((len(grid), len(history)))
        for k, p in enumerate(grid):
            out[k] = _targets(mean(p.fast), mean(p.slow), p.allow_short)
        return out


def _targets(fast: np.ndarray, slow: np.ndarray, allow_short: bool) -> np.ndarray:
    out = np.full(len(fast), np.nan)
    out[crossed_above(fast, slow)] = 1.0
    out[crossed_below(fast, slow)] = -1.0 if allow_short else 0.0
    return out
