"""The pre-paper history cache: ``artifacts/pre_paper_cache/pre_paper_cache.db`` (SQLite).

The one place a pre-paper run writes bars. Its ``bars`` table is the seed's::

    CREATE TABLE bars (
      symbol TEXT NOT NULL, tf TEXT NOT NULL,
      ts INTEGER NOT NULL,          -- bar open time, int64 ns UTC (tickgraph's convention)
      market_tz TEXT NOT NULL,      -- the instrument's exchange time zone (America/New_York, UTC)
      open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
      volume REAL NOT NULL,
      vwap REAL,                    -- tickgraph's bars carry it; providers that lack it: NULL
      source TEXT,                  -- 'historical' | 'websocket' | 'backfill'
      inserted_at INTEGER NOT NULL, -- the runner's clock, int64 ns UTC
      PRIMARY KEY (symbol, tf, ts))
    CREATE INDEX idx_bars_range ON bars(symbol, tf, ts)

(the seed stores Unix seconds; tickgraph stores every timestamp as int64 ns UTC, which a
SQLite INTEGER holds exactly, as are REAL float64 prices). Invariants: one row per
``(symbol, tf, ts)`` (the primary key), reads ``ORDER BY ts`` (monotonic), times in UTC
with the market time zone recorded, the source of every row.

Precedence when a bar is already cached: a ``websocket`` bar (a bar this runner's own
bar engine confirmed, the bar its strategy decides on) replaces a ``historical`` or
``backfill`` one; ``historical`` and ``backfill`` bars never replace a cached bar (the
first answer stands, so a re-fetch cannot change a window under a running strategy).

Several runner shards (processes) share the file: WAL journal, a busy timeout, one
short transaction per append. SQLite is local to a host: on a multi-node cluster give
every node its own cache (the ``cache`` param).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SOURCES", "BAR_COLUMNS", "CachedBars", "HistoryCache"]

#: Values of the ``source`` column.
SOURCES = ("historical", "websocket", "backfill")
#: The OHLCV columns of a cached bar (``vwap`` NaN when unknown).
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bars (
  symbol TEXT NOT NULL,
  tf TEXT NOT NULL,
  ts INTEGER NOT NULL,
  market_tz TEXT NOT NULL,
  open REAL NOT NULL,
  high REAL NOT NULL,
  low REAL NOT NULL,
  close REAL NOT NULL,
  volume REAL NOT NULL,
  vwap REAL,
  source TEXT,
  inserted_at INTEGER NOT NULL,
  PRIMARY KEY (symbol, tf, ts)
);
CREATE INDEX IF NOT EXISTS idx_bars_range ON bars(symbol, tf, ts);
"""

_INSERT = (
    "INSERT INTO bars (symbol, tf, ts, market_tz, open, high, low, close, volume, vwap, source, inserted_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
)
_KEEP_FIRST = _INSERT + "ON CONFLICT (symbol, tf, ts) DO NOTHING"
_WEBSOCKET_WINS = _INSERT + (
    "ON CONFLICT (symbol, tf, ts) DO UPDATE SET market_tz = excluded.market_tz, open = excluded.open, "
    "high = excluded.high, low = excluded.low, close = excluded.close, volume = excluded.volume, "
    "vwap = excluded.vwap, source = excluded.source, inserted_at = excluded.inserted_at"
)


@dataclass(frozen=True)
class CachedBars:
    """Cached bars of one symbol and timeframe, ascending ``ts`` (numpy arrays of shape (n,)).

    Attributes:
        ts: bar open times, int64 ns UTC, strictly increasing.
        open, high, low, close, vwap: float64, quote currency (``vwap`` NaN: unknown).
        volume: float64, units.
        source: object array of the rows' sources.
    """

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> CachedBars:
        """No bars."""
        return cls(np.empty(0, np.int64), *(np.empty(0) for _ in BAR_COLUMNS), np.empty(0, object))


class HistoryCache:
    """The SQLite cache (see the module docstring); opens (and creates) ``path``.

    Args:
        path: the database file; its directory is created.
        timeout_s: how long a writer waits for another shard's transaction.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
    """

    def __init__(self, path: str | Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def append(
        self, symbol: str, tf: str, market_tz: str, bars: Mapping[str, np.ndarray], source: str, inserted_at: int
    ) -> int:
        """Insert one symbol's bars; see :meth:`append_many`."""
        return self.append_many([(symbol, tf, market_tz, bars)], source, inserted_at)

    def append_many(self, items: list[tuple[str, str, str, Mapping[str, np.ndarray]]], source: str, inserted_at: int) -> int:
        """Insert bars (one transaction) with the precedence of the module docstring.

        Args:
            items: ``(symbol, tf, market_tz, bars)``: the rows' key and time zone, and
                ``ts`` (int64 ns UTC) with the :data:`BAR_COLUMNS` (``vwap`` optional) as
                equal-length arrays.
            source: one of :data:`SOURCES`.
            inserted_at: the runner's clock, int64 ns UTC.

        Returns:
            Rows inserted or replaced.

        Raises:
            ValueError: unknown source, or a non-finite open/high/low/close/volume.
        """
        if source not in SOURCES:
            raise ValueError(f"cache source must be one of {', '.join(SOURCES)}, got {source!r}")
        rows: list[tuple] = []
        for symbol, tf, market_tz, bars in items:
            rows += _rows(symbol, tf, market_tz, bars, source, int(inserted_at))
        if not rows:
            return 0
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(_WEBSOCKET_WINS if source == "websocket" else _KEEP_FIRST, rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self._db.total_changes - before

    def read(self, symbol: str, tf: str, start_ns: int | None = None, end_ns: int | None = None) -> CachedBars:
        """Bars with ``start_ns <= ts < end_ns`` (None: unbounded), ascending ``ts``."""
        sql = "SELECT ts, open, high, low, close, volume, vwap, source FROM bars WHERE symbol = ? AND tf = ?"
        args: list = [symbol, tf]
        if start_ns is not None:
            sql += " AND ts >= ?"
            args.append(int(start_ns))
        if end_ns is not None:
            sql += " AND ts < ?"
            args.append(int(end_ns))
        return _bars(self._db.execute(sql + " ORDER BY ts", args).fetchall())

    def last(self, symbol: str, tf: str, before_ns: int, count: int) -> CachedBars:
        """The ``count`` newest bars with ``ts < before_ns``, ascending ``ts``."""
        rows = self._db.execute(
            "SELECT ts, open, high, low, close, volume, vwap, source FROM bars WHERE symbol = ? AND tf = ? AND ts < ? "
            "ORDER BY ts DESC LIMIT ?",
            (symbol, tf, int(before_ns), int(count)),
        ).fetchall()
        return _bars(rows[::-1])

    def span(self, symbol: str, tf: str) -> tuple[int, int, int] | None:
        """``(first ts, last ts, rows)`` of a symbol's cached bars, None if none."""
        low, high, n = self._db.execute("SELECT min(ts), max(ts), count(*) FROM bars WHERE symbol = ? AND tf = ?", (symbol, tf)).fetchone()
        return None if not n else (int(low), int(high), int(n))


def _rows(symbol: str, tf: str, market_tz: str, bars: Mapping[str, np.ndarray], source: str, inserted_at: int) -> list[tuple]:
    ts = np.asarray(bars["ts"], dtype=np.int64)
    n = len(ts)
    values = {name: np.asarray(bars.get(name, np.full(n, np.nan)), dtype=np.float64) for name in BAR_COLUMNS}
    finite = np.isfinite(np.stack([values[c] for c in BAR_COLUMNS[:5]])) if n else np.ones((5, 0), bool)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.all(axis=0))[0])
        raise ValueError(f"cache: {symbol} {tf} bar ts={int(ts[bad])} has a non-finite OHLCV value; not cached")
    vwap = [None if v != v else float(v) for v in values["vwap"].tolist()]
    return list(
        zip([symbol] * n, [tf] * n, ts.tolist(), [market_tz] * n, *(values[c].tolist() for c in BAR_COLUMNS[:5]),
            vwap, [source] * n, [inserted_at] * n)
    )  # fmt: skip


def _bars(rows: list[tuple]) -> CachedBars:
    if not rows:
        return CachedBars.empty()
    columns = list(zip(*rows))
    floats = [np.asarray([np.nan if v is None else v for v in columns[i]], dtype=np.float64) for i in range(1, 7)]
    return CachedBars(np.asarray(columns[0], dtype=np.int64), *floats, np.asarray(columns[7], dtype=object))
