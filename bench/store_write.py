"""Store write throughput: bar and signal rows per second into SQLite (and PostgreSQL).

    python bench/store_write.py [--rows 1000000] [--batch-rows 65536] [--pg-url URL]

Rows are realistic: bars are 50 symbols x six timeframes of consecutive bars, signals
50 symbols of ``spread_bps`` rows 1 ms apart (the shapes the graph emits). Each case
feeds ``SqlStore.on_batch`` with batches of ``--batch-rows`` as the graph would (the
store flushes every 50,000 rows in the background) and ends with ``on_eof``, which
waits for every write: the time is end to end, from the first batch to the committed
last row. A second pass re-sends the same rows (an idempotent re-run). Target
(issue 4): >= 200,000 bar or signal rows/s to SQLite.

SQLite's own pace, for comparison: the same rows, flushed in the same 50,000-row
transactions (sorted by primary key, as the store does), with the store's upsert
statement (64 rows per ``VALUES``) and pragmas, through a bare stdlib ``sqlite3``
``executemany`` on one thread: no graph, no event loop, no aiosqlite. The ratio
store/bare says how much of SQLite's single-writer throughput the store reaches.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import itertools
import sqlite3

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.store import SqlStore, SqlStoreParams  # noqa: E402
from db.engine import drop_tables, sqlite_pragmas, upsert_sql  # noqa: E402
from db.tables import bars_ohlcv, metadata, signals  # noqa: E402
from graph.operator import OperatorContext  # noqa: E402
from graph.schemas import BAR, SIGNAL  # noqa: E402
from graph.timeframes import INTRADAY_NS  # noqa: E402

SYMBOLS = [f"S{k:03d}" for k in range(50)]
START_NS = 1_340_285_400_000_000_000  # 2012-06-21 13:30 UTC


def bar_batches(rows: int, batch_rows: int) -> list[pa.RecordBatch]:
    """``rows`` confirmed bars: per timeframe, consecutive bars for each of 50 symbols."""
    frames = list(INTRADAY_NS.items()) + [("1d", 86_400 * 10**9)]
    per = rows // (len(frames) * len(SYMBOLS))
    rng = np.random.default_rng(7)
    parts = []
    for timeframe, length in frames:
        ts = START_NS // length * length + np.arange(per, dtype=np.int64) * length
        for symbol in SYMBOLS:
            close = 100 + np.cumsum(rng.normal(0, 0.05, per))
            parts.append(pa.table({
                "symbol": pa.array([symbol] * per), "timeframe": pa.array([timeframe] * per), "ts": ts,
                "open": close - 0.01, "high": close + 0.02, "low": close - 0.03, "close": close,
                "volume": rng.integers(1, 1000, per).astype(float), "vwap": close - 0.005,
                "trade_count": rng.integers(1, 50, per), "status": pa.array(["confirmed"] * per),
            }, schema=BAR))  # fmt: skip
    table = pa.concat_tables(parts).sort_by("ts")  # emitted in time order, symbols interleaved
    return table.combine_chunks().to_batches(max_chunksize=batch_rows)


def signal_batches(rows: int, batch_rows: int) -> list[pa.RecordBatch]:
    """``rows`` spread_bps signals: 50 symbols, one row per symbol per ms."""
    per = rows // len(SYMBOLS)
    n = per * len(SYMBOLS)
    ts = START_NS + np.repeat(np.arange(per, dtype=np.int64) * 1_000_000, len(SYMBOLS))
    symbol = pa.array(SYMBOLS * per)
    value = np.random.default_rng(3).gamma(2.0, 3.0, n)
    table = pa.table({
        "provider": pa.array(["bench"] * n), "symbol": symbol, "ts": ts, "name": pa.array(["spread_bps"] * n),
        "value": value, "score": pa.nulls(n, pa.float64()),
        "metadata": pa.array(['{"mid":"(bid+ask)/2","unit":"bps"}'] * n),
    }, schema=SIGNAL)  # fmt: skip
    return table.to_batches(max_chunksize=batch_rows)


def write(url: str, stream: str, batches: list[pa.RecordBatch]) -> float:
    """Seconds to store ``batches`` end to end (first on_batch to committed on_eof)."""
    store = SqlStore(SqlStoreParams(url=url), OperatorContext(node_id="store"))
    try:
        started = time.perf_counter()
        for batch in batches:
            store.on_batch(stream, batch)
        store.on_eof()
        return time.perf_counter() - started
    finally:
        store.close()


def bare_sqlite(path: Path, stream: str, batches: list[pa.RecordBatch], flush_rows: int = 50_000) -> float:
    """Seconds for a bare ``sqlite3`` loop to upsert ``batches`` (see the module docstring)."""
    table = {"bars": bars_ohlcv, "signals": signals}[stream]
    sa_engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(sa_engine)
    sa_engine.dispose()
    rows_per_statement = 64
    multi = upsert_sql(table, sa.dialects.sqlite.dialect(), rows=rows_per_statement)
    single = upsert_sql(table, sa.dialects.sqlite.dialect())
    names = [column.name for column in table.columns]
    key = [(column.name, "ascending") for column in table.primary_key.columns]
    width = rows_per_statement * len(names)
    connection = sqlite3.connect(path, isolation_level=None)
    sqlite_pragmas(connection, None)
    try:
        started = time.perf_counter()
        pending: list[pa.RecordBatch] = []
        for i, batch in enumerate(batches):
            pending.append(batch)
            if sum(b.num_rows for b in pending) < flush_rows and i + 1 < len(batches):
                continue
            rows = pa.Table.from_batches(pending).sort_by(key)
            pending = []
            if table is signals:
                rows = rows.append_column("created_at", pa.array(np.full(rows.num_rows, time.time_ns())))
            tuples = list(zip(*(rows.column(name).to_pylist() for name in names)))
            full = len(tuples) // rows_per_statement * rows_per_statement
            flat = list(itertools.chain.from_iterable(tuples[:full]))
            connection.execute("BEGIN")
            connection.executemany(multi, [flat[j : j + width] for j in range(0, len(flat), width)])
            connection.executemany(single, tuples[full:])
            connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()


def main() -> None:
    """Run every case and print rows/s (first write and idempotent re-run) per database and stream."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--pg-url", default=os.environ.get("TICKGRAPH_TEST_PG_URL"), help="also bench PostgreSQL")
    args = parser.parse_args()

    cases = {"bars": bar_batches(args.rows, args.batch_rows), "signals": signal_batches(args.rows, args.batch_rows)}
    print(f"{'database':<14}{'stream':<10}{'rows':>11}{'first write rows/s':>20}{'re-run rows/s':>16}")
    bare = {}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", lambda stream: f"sqlite:///{Path(tmp) / f'{stream}.db'}")]
        if args.pg_url:
            targets.append(("postgresql", lambda stream: args.pg_url))
        for database, url_of in targets:
            for stream, batches in cases.items():
                url = url_of(stream)
                if database == "postgresql":
                    drop_tables(url)
                rows = sum(b.num_rows for b in batches)
                first = rows / write(url, stream, batches)
                again = rows / write(url, stream, batches)
                results[(database, stream)] = first
                print(f"{database:<14}{stream:<10}{rows:>11,}{first:>20,.0f}{again:>16,.0f}")
        for stream, batches in cases.items():
            rows = sum(b.num_rows for b in batches)
            bare[stream] = rows / bare_sqlite(Path(tmp) / f"bare_{stream}.db", stream, batches)
            print(f"{'bare sqlite3':<14}{stream:<10}{rows:>11,}{bare[stream]:>20,.0f}")
    for stream in cases:
        rate = results[("sqlite", stream)]
        print(f"sqlite {stream}: {rate:,.0f} rows/s ({'meets' if rate >= 200_000 else 'BELOW'} the 200,000 rows/s target); "
              f"{rate / bare[stream]:.2f}x a bare sqlite3 loop's {bare[stream]:,.0f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
