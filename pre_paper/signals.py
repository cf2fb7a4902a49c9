"""A symbol's input signal rows, kept so a fresh strategy start sees the values the backtest saw.

The ``strategy`` node reads, per bar, the last value of its ``signal`` and ``spread``
inputs with event time before the bar's end (``actors/strategy.py``). When a pre-paper
runner seeds the strategy node after a NO-SIGNALS period, it feeds these rows with the
window's bars; rows older than the window are dropped except the last one per name (the
value carried into the window's first bar).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from graph.schemas import SIGNAL

__all__ = ["SignalRows"]


class SignalRows:
    """The strategy's input signal rows of one symbol (``signal`` and ``spread``), for re-seeding.

    Args:
        names: ``signals.name`` -> ``"signal"`` or ``"spread"`` (the strategy node's inputs).
    """

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names  # signals.name -> "signal" | "spread"
        self.rows: list[tuple[int, str, float]] = []  # (ts, name, value), arrival order

    def add(self, ts: np.ndarray, names: np.ndarray, values: np.ndarray) -> None:
        """Keep the rows (int64 ns UTC ``ts``, ``signals.name``, float64 value) of the tracked names."""
        keep = np.isin(names, list(self.names))
        self.rows += list(zip(ts[keep].tolist(), names[keep].tolist(), values[keep].tolist()))

    def prune(self, oldest_end: int) -> None:
        """Forget rows no window bar needs: keep per name the last row before ``oldest_end`` and all later."""
        last: dict[str, tuple[int, str, float]] = {}
        later = []
        for row in sorted(self.rows, key=lambda r: r[0]):
            if row[0] < oldest_end:
                last[row[1]] = row
            else:
                later.append(row)
        self.rows = sorted(last.values(), key=lambda r: r[0]) + later

    def batch(self, symbol: str) -> pa.RecordBatch | None:
        """The kept rows as a SIGNAL batch of ``symbol`` (None: none)."""
        if not self.rows:
            return None
        ts, names, values = zip(*self.rows)
        n = len(ts)
        return pa.RecordBatch.from_arrays(
            [pa.array(["pre_paper"] * n), pa.array([symbol] * n), pa.array(ts, pa.int64()), pa.array(names),
             pa.array(values, pa.float64()), pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())], schema=SIGNAL,
        )  # fmt: skip
