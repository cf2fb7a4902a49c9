"""``bollinger_pctb``: Bollinger %b of confirmed bar closes (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from actors import indicators as ind
from actors.signals.base import BarSignal, BarSignalParams
from graph.operator import Params

__all__ = ["BollingerPctB", "BollingerParams"]


class BollingerParams(BarSignalParams):
    """Params of ``bollinger_pctb``.

    Attributes:
        period: bars in the moving window (default 20).
        num_std: band half-width in standard deviations (default 2).
    """

    period: int = Field(default=20, ge=2, le=100_000)
    num_std: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class BollingerPctB(BarSignal):
    """``bollinger_pctb``: where the close sits within the Bollinger Bands (J. Bollinger, 2001).

    Over the last ``period`` closes (this one included): mean ``m`` and population sd
    ``s``; bands ``m +/- num_std * s``; ``%b = (close - lower) / (upper - lower)`` (0 at
    the lower band, 1 at the upper, outside [0, 1] beyond them). The first value is at
    the symbol's ``period``-th bar; no value while ``s == 0`` (``undefined``).
    ``score = 2 * %b - 1``.
    """

    Params: ClassVar[type[Params]] = BollingerParams

    @classmethod
    def default_name(cls, params: BollingerParams) -> str:
        """``bollinger_pctb_<period>_<num_std>_<timeframe>`` (``bollinger_pctb_20_2_1m``)."""
        return f"bollinger_pctb_{params.period}_{params.num_std:g}_{params.timeframe}"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"period", "num_std", "timeframe", "ddof": 0}``."""
        p = self.params
        return {"period": p.period, "num_std": p.num_std, "timeframe": p.timeframe, "ddof": 0}

    def _min_restart(self) -> int:
        return self.params.period - 1  # the window before the corrected bar must be kept

    def _step(self, key: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        period = self.params.period
        value = np.full(len(key), np.nan)
        full = position >= period - 1  # a whole window of closes is kept
        if full.any():
            k, p = key[full], position[full]
            windows = self._cols["close"][k[:, None], p[:, None] + np.arange(1 - period, 1)]
            value[full] = ind.pctb_of_windows(windows, self.params.num_std)
        return value, 2.0 * value - 1.0

    def _recompute(self, h: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, np.ndarray]:
        period = self.params.period
        close = h["close"]
        n_new = len(close) - start
        value = np.full(n_new, np.nan)
        first = max(start, period - 1)  # first position with a full window
        if first < len(close):
            value[first - start :] = ind.bollinger_pctb(close[first - period + 1 :], period, self.params.num_std)
        return value, 2.0 * value - 1.0
