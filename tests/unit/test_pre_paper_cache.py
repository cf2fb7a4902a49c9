"""The history cache: the seed's ``bars`` table, one row per (symbol, tf, ts), monotonic reads,
source precedence, and two processes writing it at once."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from pre_paper.cache import HistoryCache

MINUTE = 60 * 10**9
T0 = 1_709_650_000 * 10**9 // MINUTE * MINUTE


def bars(start: int, n: int, price: float) -> dict[str, np.ndarray]:
    ts = T0 + MINUTE * np.arange(start, start + n)
    p = np.full(n, price)
    return {"ts": ts, "open": p, "high": p + 1, "low": p - 1, "close": p, "volume": np.full(n, 10.0), "vwap": p}


def test_the_seeds_table_with_its_key_and_index(tmp_path):
    HistoryCache(tmp_path / "c.db").close()
    db = sqlite3.connect(tmp_path / "c.db")
    columns = [(r[1], r[2], bool(r[3]), r[5]) for r in db.execute("PRAGMA table_info(bars)")]
    assert columns == [
        ("symbol", "TEXT", True, 1), ("tf", "TEXT", True, 2), ("ts", "INTEGER", True, 3), ("market_tz", "TEXT", True, 0),
        ("open", "REAL", True, 0), ("high", "REAL", True, 0), ("low", "REAL", True, 0), ("close", "REAL", True, 0),
        ("volume", "REAL", True, 0), ("vwap", "REAL", False, 0), ("source", "TEXT", False, 0), ("inserted_at", "INTEGER", True, 0),
    ]  # fmt: skip
    assert [r[1] for r in db.execute("PRAGMA index_list(bars)")].count("idx_bars_range") == 1


def test_no_duplicates_monotonic_reads_and_websocket_precedence(tmp_path):
    cache = HistoryCache(tmp_path / "c.db")
    cache.append("X", "1m", "UTC", bars(10, 5, 100.0), "historical", 1)
    cache.append("X", "1m", "UTC", bars(0, 12, 200.0), "backfill", 2)  # overlaps 10, 11: the first answer stands
    cache.append("X", "1m", "UTC", bars(13, 3, 300.0), "websocket", 3)  # the live bars replace 13, 14
    got = cache.read("X", "1m")
    assert got.ts.tolist() == (T0 + MINUTE * np.arange(16)).tolist()  # ascending, each once
    assert got.close.tolist() == [200.0] * 10 + [100.0] * 3 + [300.0] * 3
    assert got.source.tolist() == ["backfill"] * 10 + ["historical"] * 3 + ["websocket"] * 3
    assert cache.last("X", "1m", int(T0 + 12 * MINUTE), 3).ts.tolist() == (T0 + MINUTE * np.arange(9, 12)).tolist()
    assert cache.span("X", "1m") == (T0, T0 + 15 * MINUTE, 16) and cache.span("Y", "1m") is None
    with pytest.raises(ValueError, match="non-finite OHLCV"):
        cache.append("X", "1m", "UTC", {**bars(20, 1, 1.0), "close": np.array([np.nan])}, "websocket", 4)
    with pytest.raises(ValueError, match="cache source must be one of"):
        cache.append("X", "1m", "UTC", bars(20, 1, 1.0), "live", 4)
    assert sqlite3.connect(tmp_path / "c.db").execute("select count(*), count(distinct ts) from bars").fetchone() == (16, 16)


def _writer(path: str, symbol: str, offset: int) -> None:
    cache = HistoryCache(path)
    for i in range(50):
        cache.append(symbol, "1m", "UTC", bars(offset + i, 1, float(i)), "websocket", i)
    cache.close()


def test_two_shards_write_at_once(tmp_path):
    """Two connections (as two shard processes have) appending concurrently, in threads."""
    path = str(tmp_path / "c.db")
    HistoryCache(path).close()
    errors = []

    def run(symbol):
        try:
            _writer(path, symbol, 0)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    cache = HistoryCache(path)
    assert len(cache.read("A", "1m")) == len(cache.read("B", "1m")) == 50
