"""``rsi``: Wilder's RSI of confirmed bar closes (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from actors import indicators as ind
from actors.signals.base import BarSignal, BarSignalParams
from graph.operator import Params

__all__ = ["Rsi", "RsiParams"]


class RsiParams(BarSignalParams):
    """Params of ``rsi``.

    Attributes:
        seed: how the smoothed averages start (all three then follow Wilder's
            recurrence and converge: a seed's weight decays as (1 - 1/period)^n).
            ``zero`` (default): the symbol's first bar counts as a zero change and
            values start at its ``period``-th bar: the ``ta`` library's ``RSIIndicator``
            (its ``diff.where(diff > 0, 0.0)`` turns the first, undefined change into
            0, then ``ewm(alpha=1/period, adjust=False, min_periods=period)``);
            ``first``: from the first real change, values from the ``period``-th
            change on (pandas-ta's RMA); ``sma``: Wilder's 1978 original and TA-Lib's,
            the simple mean of the first ``period`` changes, values from then on.
    """

    seed: Literal["zero", "first", "sma"] = "zero"


class Rsi(BarSignal):
    """``rsi``: Wilder's Relative Strength Index of the bar closes (J. W. Wilder, 1978).

    With ``d = close - previous close``, gains ``max(d, 0)`` and losses ``max(-d, 0)``
    are smoothed with Wilder's smoothing (``avg = avg + (x - avg) / period``,
    :func:`~actors.indicators.ewm_recurrence`); ``RSI = 100 - 100 / (1 + avg_gain /
    avg_loss)``, 100 when avg_loss is 0. How the averages start and where the first
    value is depends on ``seed`` (:class:`RsiParams`). ``score = (rsi - 50) / 50``.
    """

    Params: ClassVar[type[Params]] = RsiParams
    _aux = ("changes", "avg_gain", "avg_loss")

    @classmethod
    def default_name(cls, params: RsiParams) -> str:
        """``rsi_<period>_<timeframe>`` (``rsi_14_1m``); ``_<seed>`` appended for a non-default seed."""
        return f"rsi_{params.period}_{params.timeframe}" + ("" if params.seed == "zero" else f"_{params.seed}")

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"period", "timeframe", "smoothing": "wilder", "seed"}``."""
        p = self.params
        return {"period": p.period, "timeframe": p.timeframe, "smoothing": "wilder", "seed": p.seed}

    def _recompute(self, h: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, np.ndarray]:
        period = self.params.period
        close = h["close"]
        if start == 0:  # the symbol's first bar: no change (seed zero: a zero change)
            seed = 0.0 if self.params.seed == "zero" else np.nan
            h["changes"][0], h["avg_gain"][0], h["avg_loss"][0] = 0, seed, seed
            first = 1
        else:
            first = start
        if first < len(close):
            d = close[first:] - close[first - 1 : -1]
            gain, loss = np.maximum(d, 0.0), np.maximum(-d, 0.0)
            changes = h["changes"][first - 1] + np.arange(1, len(d) + 1)
            h["changes"][first:] = changes
            prev_gain, prev_loss = h["avg_gain"][first - 1], h["avg_loss"][first - 1]
            h["avg_gain"][first:] = self._smooth(gain, changes, prev_gain)
            h["avg_loss"][first:] = self._smooth(loss, changes, prev_loss)
        changes = h["changes"][start:]
        rsi = ind.rsi_from_averages(h["avg_gain"][start:], h["avg_loss"][start:])
        needed = period - 1 if self.params.seed == "zero" else period
        rsi = np.where(changes >= needed, rsi, np.nan)
        return rsi, (rsi - 50.0) / 50.0

    def _step(self, key: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        period, alpha = self.params.period, 1.0 / self.params.period
        cols, seed = self._cols, self.params.seed
        first = position == 0
        before = np.maximum(position - 1, 0)
        change = cols["close"][key, position] - cols["close"][key, before]
        changes = np.where(first, 0.0, cols["changes"][key, before] + 1.0)
        averages = []
        for name, x in (("avg_gain", np.maximum(change, 0.0)), ("avg_loss", np.maximum(-change, 0.0))):
            previous = cols[name][key, before]
            with np.errstate(invalid="ignore"):
                smooth = (1.0 - alpha) * previous + alpha * x  # Wilder: y + (x - y) / period
                if seed == "first":
                    smooth = np.where(changes == 1, x, smooth)
                elif seed == "sma":  # running mean of the first `period` changes
                    mean = np.where(changes == 1, x, (previous * (changes - 1) + x) / np.maximum(changes, 1))
                    smooth = np.where(changes <= period, mean, smooth)
            average = np.where(first, 0.0 if seed == "zero" else np.nan, smooth)
            cols[name][key, position] = average
            averages.append(average)
        cols["changes"][key, position] = changes
        needed = period - 1 if seed == "zero" else period
        rsi = np.where(changes >= needed, ind.rsi_from_averages(*averages), np.nan)
        return rsi, (rsi - 50.0) / 50.0

    def _smooth(self, x: np.ndarray, changes: np.ndarray, previous: float) -> np.ndarray:
        """Smoothed averages after each change; ``changes`` = 1-based change count of each x."""
        period, alpha = self.params.period, 1.0 / self.params.period
        if self.params.seed == "zero":
            return ind.ewm_recurrence(x, alpha, float(previous))
        if self.params.seed == "first":
            return ind.ewm_recurrence(x, alpha, None if changes[0] == 1 else float(previous))
        # sma seed: running mean of the first `period` changes, then Wilder's recurrence
        out = np.empty(len(x))
        warm = changes <= period
        if warm.any():
            prior = 0.0 if changes[0] == 1 else float(previous) * (changes[0] - 1)
            out[warm] = (prior + np.cumsum(x[warm])) / changes[warm]
        if not warm.all():
            rest = np.flatnonzero(~warm)
            before = out[rest[0] - 1] if rest[0] > 0 else float(previous)
            out[rest] = ind.ewm_recurrence(x[rest], alpha, before)
        return out
