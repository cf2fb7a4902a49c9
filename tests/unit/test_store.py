"""Unit tests of actors/store.py on temporary SQLite files, with bars built from real LOBSTER trades.

The same store runs against PostgreSQL in tests/integration/test_store_backends.py.
"""

from __future__ import annotations

import math
import sqlite3
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from actors.store import SqlStore, SqlStoreParams
from db.engine import StoreError, async_url, mask_url, upsert_sql
from db.read import read_bars, read_bars_async, read_quarantine, read_table
from db.tables import bars_ohlcv, signals
from graph.operator import OperatorContext
from tests.reference import lobster_bar_rows
from graph.schemas import BAR, QUARANTINE, SIGNAL, TICK

BAR_KEY = ["symbol", "timeframe", "ts"]
STORED = [name for name in BAR.names if name != "status"]


@cache
def lobster_bars() -> pd.DataFrame:
    """Confirmed AMZN 1m and 5m bars computed with pandas (tests/reference.py)."""
    return lobster_bar_rows(("1m", "5m"))


def bar_stream(bars: pd.DataFrame, rows_per_batch: int = 50) -> list[pa.RecordBatch]:
    """What a bar engine emits: each bar first as 'forming' (stale close), then 'confirmed'."""
    forming = bars.assign(status="forming", close=bars["open"], trade_count=1)
    interleaved = pd.concat([forming, bars]).sort_index(kind="stable")
    table = pa.Table.from_pandas(interleaved, schema=BAR, preserve_index=False)
    return table.to_batches(max_chunksize=rows_per_batch)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make(url: str, clock=None, **params) -> SqlStore:
    return SqlStore(SqlStoreParams(url=url, **params), OperatorContext(node_id="store", clock_ns=clock))


def dump(path: Path) -> list[str]:
    """Every row of both tables as SQL text (exact float repr), primary-key order."""
    with sqlite3.connect(path) as connection:
        return [
            line
            for line in connection.iterdump()
            if line.startswith(('INSERT INTO "bars_ohlcv"', 'INSERT INTO "quarantine"'))
        ]


def write(path: Path, batches: list[tuple[str, pa.RecordBatch]], **params) -> dict:
    store = make(sqlite_url(path), **params)
    try:
        for stream, batch in batches:
            store.on_batch(stream, batch)
        store.on_eof()
        return store.metrics()
    finally:
        store.close()


def quarantine_rows() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [
            dict(run_id="r1", source="normalize", position=0, row=17, symbol="AMZN", ts=1_340_285_400_190_226_476,
                 reason="bad_price", detail="price nan must be a finite number > 0", raw='{"symbol":"AMZN","price":NaN}'),
            dict(run_id="r1", source="normalize", position=1, row=17, symbol="AMZN", ts=1_340_285_400_190_226_476,
                 reason="duplicate", detail="seq 17 already seen", raw=None),
            dict(run_id="r1", source="fixtures/goog.csv", position=0, row=1204, symbol=None, ts=None, reason="bad_row",
                 detail="price -3.5 must be > 0", raw="GOOG,-3.5"),
        ],
        schema=QUARANTINE,
    )  # fmt: skip


# -- round trip and idempotence ------------------------------------------------------------


def test_confirmed_bars_are_stored_exactly_and_forming_rows_ignored(tmp_path):
    db = tmp_path / "bars.db"
    stream = bar_stream(lobster_bars())
    metrics = write(db, [("bars", batch) for batch in stream], batch_rows=100)
    expected = lobster_bars().drop(columns="status").sort_values(BAR_KEY, ignore_index=True)
    assert (expected["timeframe"] == "1m").sum() == 387  # 3 of the 390 minutes had no execution
    assert (expected["timeframe"] == "5m").sum() == 78
    stored = read_bars(sqlite_url(db))
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False, check_exact=True)
    assert stored["ts"].dtype == np.int64 and stored["trade_count"].dtype == np.int64
    assert stored["trade_count"].sum() == 2 * 11_419  # every execution once per timeframe
    assert metrics["rows_written"] == {"bars_ohlcv": 465, "bars_partial": 0, "quarantine": 0, "signals": 0, "tick_data": 0}
    assert metrics["forming_ignored"] == 465
    assert metrics["flushes"] >= 5  # batch_rows=100 split the writes
    only_5m = read_bars(sqlite_url(db), symbol="AMZN", timeframe="5m")
    assert list(only_5m["timeframe"].unique()) == ["5m"] and len(only_5m) == 78


def test_partial_bars_are_kept_apart_and_never_replace_a_final_bar(tmp_path):
    # A session stopped inside the last 5m bar, and a restarted session whose first 1m bar
    # began before it: both are partial. The final table keeps the confirmed bars only.
    db = tmp_path / "bars.db"
    bars = lobster_bars()
    last_5m = bars.index[bars["timeframe"] == "5m"][-1]
    first_1m = bars.index[bars["timeframe"] == "1m"][0]
    cut = bars.loc[[last_5m, first_1m]].assign(status="partial", volume=1.0, trade_count=1)
    confirmed = bars.drop(index=[last_5m])
    batches = [("bars", b) for b in bar_stream(confirmed)] + [("bars", pa.RecordBatch.from_pandas(cut, schema=BAR, preserve_index=False))]
    metrics = write(db, batches)
    assert metrics["rows_written"]["bars_ohlcv"] == 464 and metrics["rows_written"]["bars_partial"] == 2
    assert metrics["forming_ignored"] == 464  # partial rows are stored, not ignored
    final = read_bars(sqlite_url(db))
    expected = confirmed.drop(columns="status").sort_values(BAR_KEY, ignore_index=True)
    pd.testing.assert_frame_equal(final, expected, check_dtype=False, check_exact=True)  # the first 1m bar kept whole
    partial = read_bars(sqlite_url(db), partial=True)
    assert list(zip(partial["timeframe"], partial["ts"])) == sorted(zip(cut["timeframe"], cut["ts"]))
    assert set(partial["volume"]) == {1.0}


def test_running_the_job_twice_leaves_byte_identical_rows(tmp_path):
    batches = [("bars", b) for b in bar_stream(lobster_bars(), 64)] + [("quarantine", quarantine_rows())]
    once, twice = tmp_path / "once.db", tmp_path / "twice.db"
    write(once, batches)
    write(twice, batches)
    write(twice, batches, batch_rows=7)  # same rows, other flush boundaries
    assert dump(once) == dump(twice)
    assert len(dump(once)) == 465 + 3
    with sqlite3.connect(twice) as connection:
        assert connection.execute("SELECT count(*) FROM bars_ohlcv").fetchone() == (465,)


def test_a_bar_sent_again_with_new_values_is_updated_in_place(tmp_path):
    db = tmp_path / "bars.db"
    bars = lobster_bars().iloc[:3]
    first = pa.RecordBatch.from_pandas(bars, schema=BAR, preserve_index=False)
    corrected = bars.iloc[[1]].assign(
        high=999.0, close=998.5, volume=bars["volume"].iloc[1] + 100, trade_count=77
    )
    second = pa.RecordBatch.from_pandas(corrected, schema=BAR, preserve_index=False)
    write(db, [("bars", first)])
    write(db, [("bars", second)])
    stored = read_bars(sqlite_url(db))
    assert len(stored) == 3
    row = stored[stored["ts"] == bars["ts"].iloc[1]].iloc[0]
    assert (row["high"], row["close"], row["trade_count"]) == (999.0, 998.5, 77)
    assert row["volume"] == bars["volume"].iloc[1] + 100
    untouched = stored[stored["ts"] != bars["ts"].iloc[1]].reset_index(drop=True)
    expected = bars.drop(index=bars.index[1]).drop(columns="status").reset_index(drop=True)
    pd.testing.assert_frame_equal(untouched, expected, check_dtype=False)


def test_quarantine_rows_are_stored_with_nulls_kept(tmp_path):
    db = tmp_path / "q.db"
    metrics = write(db, [("quarantine", quarantine_rows())])
    assert metrics["rows_written"] == {"bars_ohlcv": 0, "bars_partial": 0, "quarantine": 3, "signals": 0, "tick_data": 0}
    stored = read_quarantine(sqlite_url(db))
    expected = quarantine_rows().to_pandas().sort_values(["run_id", "source", "position"], ignore_index=True)
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False)
    assert stored["symbol"].isna().sum() == 1 and stored["ts"].isna().sum() == 1
    assert len(read_quarantine(sqlite_url(db), source="normalize")) == 2


def test_a_nan_vwap_survives_sqlite(tmp_path):
    # all trades of size 0: volume 0 and VWAP 0/0; SQLite stores NaN as NULL
    db = tmp_path / "bars.db"
    bar = dict(symbol="AMZN", timeframe="1s", ts=0, open=1.0, high=1.0, low=1.0, close=1.0,
               volume=0.0, vwap=math.nan, trade_count=2, status="confirmed")  # fmt: skip
    write(db, [("bars", pa.RecordBatch.from_pylist([bar], schema=BAR))])
    stored = read_bars(sqlite_url(db))
    assert math.isnan(stored["vwap"].iloc[0]) and stored["volume"].iloc[0] == 0.0


async def test_inside_an_event_loop_store_and_async_reader_work(tmp_path):
    db = tmp_path / "bars.db"
    write(db, [("bars", b) for b in bar_stream(lobster_bars().iloc[:10])])  # blocks this loop, by design
    stored = await read_bars_async(sqlite_url(db))
    assert list(stored.columns) == STORED and len(stored) == 10


# -- flushing ---------------------------------------------------------------------------------


def stored_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]


def test_flush_on_size_on_watermark_interval_and_at_eof(tmp_path):
    db = tmp_path / "bars.db"
    now = [0]
    store = make(sqlite_url(db), clock=lambda: now[0], batch_rows=10, flush_interval_ms=1000)
    bars = pa.RecordBatch.from_pandas(lobster_bars().iloc[:25], schema=BAR, preserve_index=False)
    try:
        store.on_batch("bars", bars.slice(0, 6))
        assert stored_count(db) == 0  # 6 < batch_rows
        store.on_batch("bars", bars.slice(6, 6))  # 12 >= batch_rows: a flush starts at once
        store.wait_for_writes()  # ... in the background
        assert stored_count(db) == 12
        store.on_batch("bars", bars.slice(12, 3))
        now[0] = 999_000_000
        store.on_watermark(1)
        assert stored_count(db) == 12  # 999 ms < flush_interval_ms
        now[0] = 1_000_000_000 + 12  # the last flush was at 0 ns
        store.on_watermark(2)
        store.wait_for_writes()
        assert stored_count(db) == 15
        store.on_batch("bars", bars.slice(15, 10))  # 10 >= batch_rows
        store.wait_for_writes()
        assert stored_count(db) == 25
        assert store.metrics()["flushes"] == 3
        assert store.on_eof() == []
        assert store.metrics()["flushes"] == 3  # nothing left to flush
    finally:
        store.close()


def test_without_a_clock_every_watermark_flushes(tmp_path):
    db = tmp_path / "bars.db"
    store = make(sqlite_url(db))
    try:
        store.on_batch(
            "bars", pa.RecordBatch.from_pandas(lobster_bars().iloc[:2], schema=BAR, preserve_index=False)
        )
        assert stored_count(db) == 0
        store.on_watermark(0)
        store.wait_for_writes()
        assert stored_count(db) == 2
    finally:
        store.close()


def test_a_background_flush_overlaps_buffering_and_eof_waits_for_it(tmp_path):
    """Double buffering: on_batch returns while its flush runs; on_eof waits for all."""
    db = tmp_path / "bars.db"
    store = make(sqlite_url(db), batch_rows=10)
    bars = pa.Table.from_pandas(lobster_bars(), schema=BAR, preserve_index=False).combine_chunks().to_batches()[0]
    try:
        for start in range(0, bars.num_rows, 7):
            store.on_batch("bars", bars.slice(start, 7))
        store.on_eof()
        assert stored_count(db) == bars.num_rows
        assert store.metrics()["rows_written"]["bars_ohlcv"] == bars.num_rows
    finally:
        store.close()


def test_sqlite_runs_in_wal_mode_with_synchronous_normal(tmp_path):
    db = tmp_path / "bars.db"
    store = make(sqlite_url(db))
    try:

        async def pragmas():
            async with store._engine.connect() as connection:
                journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
                synchronous = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()
                return journal, synchronous

        assert store._run_private(pragmas()) == ("wal", 1)  # 1 = NORMAL
    finally:
        store.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persistent


def test_close_disposes_and_is_idempotent(tmp_path):
    store = make(sqlite_url(tmp_path / "bars.db"))
    store.close()
    store.close()
    assert store._loop.is_closed()


# -- errors -------------------------------------------------------------------------------------


def test_an_unknown_stream_is_named_in_the_error(tmp_path):
    store = make(sqlite_url(tmp_path / "bars.db"))
    try:
        with pytest.raises(
            ValueError,
            match=r"sql_store 'store': unknown input stream 'trades'; expected one of 'bars', 'quarantine', "
            r"'signals', 'ticks'",
        ):
            store.on_batch("trades", quarantine_rows())
        with pytest.raises(
            ValueError, match=r"batch on stream 'bars' lacks column\(s\) \['timeframe', 'open'"
        ):
            store.on_batch("bars", quarantine_rows())
    finally:
        store.close()


def test_an_unopenable_database_is_a_store_error_naming_the_url(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/bars.db"
    with pytest.raises(
        StoreError,
        match=r"sql_store 'store': creating the tables on sqlite\+aiosqlite:///.*/no/such/dir/bars\.db "
        r"failed: OperationalError",
    ):
        make(url)


SECRET = "s3cr%t!"
PG_URL = "postgresql://trader:s3cr%25t%21@127.0.0.1:1/ticks"  # password URL-quoted


def test_the_password_never_shows_in_repr_or_validation_errors():
    params = SqlStoreParams(url=PG_URL)
    assert params.url == PG_URL  # the real value is kept for connecting
    for text in (repr(params), str(params)):
        assert SECRET not in text and "s3cr%25t%21" not in text
        assert "postgresql://trader:***@127.0.0.1:1/ticks" in text
    with pytest.raises(ValidationError) as error:
        SqlStoreParams(url=PG_URL, batch_rows=0)
    assert "s3cr" not in str(error.value)
    assert "batch_rows" in str(error.value) and "must be a positive integer, was 0" in str(error.value)
    with pytest.raises(ValidationError) as error:
        SqlStoreParams(url="no url s3cr%t!")
    assert "s3cr" not in str(error.value) and "not a SQLAlchemy URL" in str(error.value)
    assert mask_url(PG_URL) == "postgresql://trader:***@127.0.0.1:1/ticks"


def test_the_password_never_shows_in_engine_errors(monkeypatch):
    # without asyncpg installed the engine cannot be built; with it, port 1 refuses the
    # connection: either way a StoreError naming the masked URL
    with pytest.raises(
        StoreError, match=r"postgresql\+asyncpg://trader:\*\*\*@127\.0\.0\.1:1/ticks"
    ) as error:
        SqlStore(SqlStoreParams(url=PG_URL), OperatorContext(node_id="store"))
    assert "s3cr" not in str(error.value)

    def leaky(url, **kwargs):  # a driver that echoes its connection string
        raise sa.exc.ArgumentError(
            f"cannot connect to {url.render_as_string(hide_password=False)} ({SECRET})"
        )

    import db.engine

    monkeypatch.setattr(db.engine, "create_async_engine", leaky)
    with pytest.raises(StoreError) as error:
        SqlStore(SqlStoreParams(url=PG_URL), OperatorContext(node_id="store"))
    assert "s3cr" not in str(error.value) and error.value.__cause__ is None
    assert "trader:***@127.0.0.1:1" in str(error.value)


def test_repr_of_the_store_masks_the_password(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/bars.db"
    store = make(url)
    try:
        assert (
            repr(store) == f"SqlStore(node_id='store', url={url!r}, batch_rows=50000, flush_interval_ms=1000)"
        )
    finally:
        store.close()


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///a.db", "sqlite+aiosqlite:///a.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite:////abs/a.db", "sqlite+aiosqlite:////abs/a.db"),
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:***@h:5432/d"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///a.db"),
    ],
)
def test_async_url(url, expected):
    assert async_url(url).render_as_string(hide_password=True) == expected


def test_a_relative_sqlite_path_resolves_against_the_working_directory(tmp_path, monkeypatch):
    """As in SQLAlchemy: relative to the cwd where the graph is loaded, made absolute there."""
    monkeypatch.chdir(tmp_path)
    graph_dir = tmp_path / "config"
    graph_dir.mkdir()
    params = SqlStoreParams(url="sqlite:///out.db")
    assert params.url == f"sqlite:///{tmp_path / 'out.db'}"
    monkeypatch.chdir(graph_dir)  # a worker with another cwd writes to the same file
    store = SqlStore(params, OperatorContext(node_id="store", base_dir=graph_dir))
    store.close()
    assert (tmp_path / "out.db").is_file() and not (graph_dir / "out.db").exists()
    assert SqlStoreParams(url="sqlite:///:memory:").url == "sqlite:///:memory:"


def test_an_in_memory_database_works():
    store = make("sqlite://")
    try:
        store.on_batch(
            "bars", pa.RecordBatch.from_pandas(lobster_bars().iloc[:5], schema=BAR, preserve_index=False)
        )
        store.on_eof()
        assert store.metrics()["rows_written"]["bars_ohlcv"] == 5
    finally:
        store.close()


def test_the_upsert_compiles_for_postgresql():
    from sqlalchemy.dialects import postgresql

    sql = upsert_sql(bars_ohlcv, postgresql.asyncpg.dialect())
    assert sql.startswith("INSERT INTO bars_ohlcv (symbol, timeframe, ts, open,")
    assert "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = excluded.open" in sql
    assert "IS DISTINCT FROM" in sql


# -- corrected bars, signals, ticks ------------------------------------------------------------------


def test_a_corrected_bar_is_stored_and_replaces_the_confirmed_row(tmp_path):
    db = tmp_path / "bars.db"
    bars = lobster_bars().iloc[:3]
    corrected = bars.iloc[[2]].assign(status="corrected", close=bars["close"].iloc[2] + 0.5, trade_count=99)
    stream = [("bars", pa.RecordBatch.from_pandas(frame, schema=BAR, preserve_index=False)) for frame in (bars, corrected)]
    metrics = write(db, stream)
    stored = read_bars(sqlite_url(db))
    assert len(stored) == 3 and metrics["forming_ignored"] == 0
    assert stored["close"].iloc[2] == bars["close"].iloc[2] + 0.5 and stored["trade_count"].iloc[2] == 99


def signal_rows(value_offset: float = 0.0) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [
            dict(provider="lobster", symbol="AMZN", ts=1_340_285_400_017_459_617, name="spread_bps",
                 value=34.44188491042792 + value_offset, score=None, metadata='{"unit":"bps"}'),
            dict(provider="lobster", symbol="AMZN", ts=1_340_285_400_017_459_617, name="vwap_deviation_bps",
                 value=0.0, score=None, metadata=None),
            dict(provider="tickgraph", symbol="AMZN", ts=1_340_286_180_000_000_000, name="rsi_14_1m",
                 value=71.25, score=0.425, metadata='{"period":14}'),
        ],
        schema=SIGNAL,
    )  # fmt: skip


def write_signals(db: Path, batch: pa.RecordBatch, now_ns: int, **params) -> dict:
    store = make(sqlite_url(db), clock=lambda: now_ns, **params)
    try:
        store.on_batch("signals", batch)
        store.on_eof()
        return store.metrics()
    finally:
        store.close()


def test_signals_get_created_at_on_first_insert_only(tmp_path):
    db = tmp_path / "signals.db"
    assert write_signals(db, signal_rows(), now_ns=111)["rows_written"]["signals"] == 3
    first = read_table(sqlite_url(db), signals)
    assert first.column("created_at").to_pylist() == [111, 111, 111]
    assert first.drop_columns("created_at").equals(
        pa.Table.from_batches([signal_rows()]).sort_by([("provider", "ascending"), ("symbol", "ascending"),
                                                        ("ts", "ascending"), ("name", "ascending")])
    )  # fmt: skip
    write_signals(db, signal_rows(), now_ns=222)  # a re-run: identical rows, created_at kept
    assert read_table(sqlite_url(db), signals).equals(first)
    write_signals(db, signal_rows(value_offset=1.0), now_ns=333)  # a changed value: updated in place
    changed = read_table(sqlite_url(db), signals).to_pandas().set_index("name")
    assert changed.loc["spread_bps", "value"] == 35.44188491042792
    assert changed["created_at"].tolist() == [111, 111, 111]


def test_ticks_go_to_tick_data_with_their_nulls(tmp_path):
    db = tmp_path / "ticks.db"
    rows = [
        dict(symbol="AMZN", ts=1_340_285_400_017_459_617, price=223.82, size=1.0, side="buy", bid=223.18,
             ask=223.95, bid_size=100.0, ask_size=100.0, provider="lobster", seq=0, origin="replay"),
        dict(symbol="AMZN", ts=1_340_285_400_189_607_670, price=None, size=None, side=None, bid=223.81,
             ask=223.95, bid_size=21.0, ask_size=100.0, provider="lobster", seq=1, origin="replay"),
    ]  # fmt: skip
    batch = pa.RecordBatch.from_pylist(rows, schema=TICK)
    store = make(sqlite_url(db))
    try:
        store.on_batch("ticks", batch)
        store.on_batch("ticks", batch)  # replayed twice: still two rows
        store.on_eof()
        assert store.metrics()["rows_written"]["tick_data"] == 4
    finally:
        store.close()
    stored = read_table(sqlite_url(db), "tick_data")
    assert stored.equals(pa.Table.from_batches([batch]).sort_by([("provider", "ascending"), ("symbol", "ascending"),
                                                                 ("ts", "ascending"), ("seq", "ascending")]))


def test_a_large_flush_with_nans_nulls_and_repeated_keys_keeps_the_last_row(tmp_path):
    # 300 rows > one 64-row statement: the multi-row SQLite path, rows of a key in one flush
    db = tmp_path / "signals.db"
    rows = [dict(provider="p", symbol=f"S{k % 7}", ts=k // 7, name="x", value=float(k), score=None if k % 3 else 0.5,
                 metadata=None if k % 2 else "{}") for k in range(300)]  # fmt: skip
    rows[10]["value"] = math.nan
    again = [dict(row, value=-row["value"]) for row in rows[:100]]  # the same keys later in the same flush
    store = make(sqlite_url(db), clock=lambda: 5)
    try:
        store.on_batch("signals", pa.RecordBatch.from_pylist(rows, schema=SIGNAL))
        store.on_batch("signals", pa.RecordBatch.from_pylist(again, schema=SIGNAL))
        store.on_eof()
    finally:
        store.close()
    stored = read_table(sqlite_url(db), signals).to_pandas().set_index(["symbol", "ts"])
    assert len(stored) == 300
    for k, row in enumerate(rows):
        got = stored.loc[(row["symbol"], row["ts"])]
        expected = -row["value"] if k < 100 else row["value"]
        assert (math.isnan(got["value"]) and math.isnan(expected)) or got["value"] == expected, k
        assert (got["score"] == 0.5) if k % 3 == 0 else math.isnan(got["score"])
        assert (pd.isna(got["metadata"]) if k % 2 else got["metadata"] == "{}") and got["created_at"] == 5
