"""``breakout``: Donchian channel breakout on bar closes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from strategies.base import Bar, History, Strategy, StrategyParams
from strategies.indicators import rolling_max, rolling_min

__all__ = ["Breakout", "BreakoutParams"]


class BreakoutParams(StrategyParams):
    """Params of ``breakout``.

    Attributes:
        lookback: channel length in bars (the bars *before* the decision bar), >= 1.
        allow_short: a break below the channel goes short (True) or flat (False).
    """

    lookback: int = Field(default=20, ge=1, le=100_000)
    allow_short: bool = True


class Breakout(Strategy):
    """Donchian channel breakout (R. Donchian; the "turtle" entry rule).

    The channel at bar ``t`` is the highest high and lowest low of the ``lookback``
    bars before it (``t - lookback .. t - 1``; bar ``t`` itself is excluded, or a close
    could never exceed it). A close above the upper band sets the target to +1, a close
    below the lower band to -1 (0 with ``allow_short: false``); otherwise the previous
    target stands (NaN). ``warmup_bars = lookback + 1``.
    """

    Params: ClassVar[type[StrategyParams]] = BreakoutParams

    @property
    def warmup_bars(self) -> int:
        """``lookback + 1``."""
        return self.params.lookback + 1

    def on_bar(self, bar: Bar, history: History) -> float | None:
        """+1 above the channel, -1 (or 0) below it, else None."""
        n = self.params.lookback
        upper, lower = float(np.max(history.high[-n - 1 : -1])), float(np.min(history.low[-n - 1 : -1]))
        if bar.close > upper:
            return 1.0
        if bar.close < lower:
            return -1.0 if self.params.allow_short else 0.0
        return None

    def decide(self, history: History, first: int) -> np.ndarray:
        """Vectorised :meth:`on_bar` for bars ``first..``."""
        n = self.params.lookback
        upper = np.full(len(history), np.nan)
        lower = np.full(len(history), np.nan)
        upper[1:] = rolling_max(history.high, n)[:-1]
        lower[1:] = rolling_min(history.low, n)[:-1]
        out = np.full(len(history), np.nan)
        with np.errstate(invalid="ignore"):
            out[history.close > upper] = 1.0
            out[history.close < lower] = -1.0 if self.params.allow_short else 0.0
        return out[first:]
