"""Shared helpers of the backtest tests: run configs on the fixtures, synthetic series.

Nothing here computes an expected value: these build inputs (configs, the fixtures'
bars through the real graph) for the tests to compare against independent references.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from backtest.config import RunConfig, parse_run_config
from backtest.engine import Series
from strategies.base import History
from tests.conftest import FIXTURES, LOBSTER, TRADES

NS = 1_000_000_000
MINUTE = 60 * NS
#: The fixtures' ranges: the LOBSTER AMZN day and the Tardis BTCUSDT window.
START, END = "2012-06-21T00:00:00Z", "2020-02-23T00:00:00Z"
SESSIONS = {"AMZN": {"tz": "America/New_York", "open": "09:30", "close": "16:00"}}


def tick_files() -> list[dict[str, Any]]:
    """The main job's two tick files as a run config's ``data.files`` (absolute paths)."""
    lobster = {**LOBSTER, "message_file": str(FIXTURES / LOBSTER["message_file"]), "orderbook_file": str(FIXTURES / LOBSTER["orderbook_file"])}
    return [lobster, {**TRADES, "path": str(FIXTURES / TRADES["path"])}]


def config_doc(symbols: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A run config document: dual_sma 10/30 on the fixtures' ticks, 95 % sizing, no fees."""
    doc: dict[str, Any] = {
        "symbols": symbols or ["AMZN", "BTCUSDT"],
        "timeframe": "1m",
        "start": START,
        "end": END,
        "data": {"source": "ticks", "files": tick_files(), "sessions": SESSIONS},
        "strategy": {"name": "dual_sma", "params": {"fast": 10, "slow": 30}},
        "risk": {"model": "fixed_fraction", "fraction": 0.95},
        "execution": {"fee_bps": 0.0},
        "seed": 1,
        "initial_cash": 100_000.0,
        "bars_per_year": 98_280.0,
    }
    for key, value in overrides.items():
        doc[key] = value
    return doc


def config(symbols: list[str] | None = None, **overrides: Any) -> RunConfig:
    """:func:`config_doc` validated."""
    return parse_run_config(config_doc(symbols, **overrides))


def synthetic_series(closes: np.ndarray, symbol: str = "X", volume: float = 1_000.0, spread_bps: float = np.nan,
                     signal: np.ndarray | None = None, t0: int = 1_600_000_000 * NS) -> Series:  # fmt: skip
    """A 1m series from closes: open = previous close (the first: its own close), high/low the max/min of the two."""
    closes = np.asarray(closes, dtype=float)
    opens = np.r_[closes[0], closes[:-1]]
    n = len(closes)
    columns = {
        "ts": t0 + MINUTE * np.arange(n), "open": opens, "high": np.maximum(opens, closes), "low": np.minimum(opens, closes),
        "close": closes, "volume": np.full(n, volume), "signal": np.full(n, np.nan) if signal is None else signal,
    }  # fmt: skip
    return Series(symbol, History.from_columns(columns), np.full(n, spread_bps))


def decision_rows(series: Series, targets: np.ndarray) -> dict[str, np.ndarray]:
    """A sleeve's input columns for ``series`` with ``targets``."""
    h = series.history
    return {"ts": h.ts, "open": h.open, "close": h.close, "volume": h.volume, "target": np.asarray(targets, float), "spread_bps": series.spread_bps}


def bar_batch(series: Series, lo: int = 0, hi: int | None = None, status: str = "confirmed", timeframe: str = "1m") -> pa.RecordBatch:
    """BAR rows ``lo..hi`` of ``series``."""
    from graph.schemas import BAR

    h = series.history
    hi = len(h) if hi is None else hi
    rows = [
        {"symbol": series.symbol, "timeframe": timeframe, "ts": int(h.ts[i]), "open": float(h.open[i]), "high": float(h.high[i]),
         "low": float(h.low[i]), "close": float(h.close[i]), "volume": float(h.volume[i]), "vwap": float(h.vwap[i]),
         "trade_count": 1, "status": status}
        for i in range(lo, hi)
    ]  # fmt: skip
    return pa.RecordBatch.from_pylist(rows, schema=BAR)


def artifacts_equal(a: Path, b: Path, names: tuple[str, ...]) -> list[str]:
    """The names whose bytes differ between run directories ``a`` and ``b``."""
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]
