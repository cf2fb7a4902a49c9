"""``mean_reversion``: fade large deviations of the price from the session VWAP."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from strategies.base import Bar, History, Strategy, StrategyParams

__all__ = ["MeanReversion", "MeanReversionParams"]


class MeanReversionParams(StrategyParams):
    """Params of ``mean_reversion``.

    Attributes:
        entry_bps: enter when ``|vwap_deviation_bps| >= entry_bps`` (> 0).
        exit_bps: go flat when ``|vwap_deviation_bps| <= exit_bps`` (>= 0, < entry_bps).
        allow_short: fade rises above the VWAP with a short (True) or only buy dips.
    """

    entry_bps: float = Field(default=20.0, gt=0)
    exit_bps: float = Field(default=5.0, ge=0)
    allow_short: bool = True

    @field_validator("exit_bps")
    @classmethod
    def _exit_inside_entry(cls, value: float, info: ValidationInfo) -> float:
        entry = info.data.get("entry_bps")
        if entry is not None and value >= entry:
            raise ValueError(f"exit_bps ({value}) must be below entry_bps ({entry})")
        return value


class MeanReversion(Strategy):
    """Mean reversion on ``vwap_deviation_bps`` = (price - session VWAP) / VWAP x 10,000.

    ``d`` is the signal's last value before the bar's end (the last trade's deviation
    from the session VWAP, ``actors/signals/vwap_deviation_bps.py``). ``d <= -entry_bps``
    (price well below VWAP): target +1; ``d >= entry_bps``: -1 (0 without shorts);
    ``|d| <= exit_bps``: 0 (back at the VWAP: flat); otherwise, or with no signal yet
    (NaN), the previous target stands. Needs the ``vwap_deviation_bps`` indicator.
    """

    Params: ClassVar[type[StrategyParams]] = MeanReversionParams
    signal: ClassVar[str | None] = "vwap_deviation_bps"

    @property
    def warmup_bars(self) -> int:
        """1: the decision needs only the bar's own signal value."""
        return 1

    def on_bar(self, bar: Bar, history: History) -> float | None:
        """+1 / -1 beyond the entry band, 0 inside the exit band, else None."""
        d, p = bar.signal, self.params
        if d != d:
            return None
        if d <= -p.entry_bps:
            return 1.0
        if d >= p.entry_bps:
            return -1.0 if p.allow_short else 0.0
        if abs(d) <= p.exit_bps:
            return 0.0
        return None

    def decide(self, history: History, first: int) -> np.ndarray:
        """Vectorised :meth:`on_bar` for bars ``first..``."""
        d, p = history.signal[first:], self.params
        out = np.full(len(d), np.nan)
        with np.errstate(invalid="ignore"):
            out[np.abs(d) <= p.exit_bps] = 0.0
            out[d <= -p.entry_bps] = 1.0
            out[d >= p.entry_bps] = -1.0 if p.allow_short else 0.0
        return out
