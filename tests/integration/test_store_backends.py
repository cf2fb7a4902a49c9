"""The store on every backend: SQLite always, PostgreSQL when ``TICKGRAPH_TEST_PG_URL`` is set.

``.ci/postgres.sh`` starts a throwaway PostgreSQL server and prints the URL; ``.ci/run``
exports it, so CI runs every test here twice. Without the variable only the SQLite
parameter is collected (nothing is skipped). Each PostgreSQL test starts from empty
tables (tickgraph's tables are dropped first).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.store import SqlStore, SqlStoreParams
from db.cache import BarCache
from db.engine import drop_tables
from db.export import ExportRequest, run_export
from db.jobs import read_job
from db.read import read_bars, read_table
from graph.build import build_graph
from graph.operator import OperatorContext
from graph.schemas import BAR, SIGNAL, TICK
from graph.spec import load_graph
from tests.reference import assert_bars_match, lobster_trades, reference_bars

PG_URL = os.environ.get("TICKGRAPH_TEST_PG_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]
TABLES = ("bars_ohlcv", "signals", "tick_data", "quarantine")
DAY = (1_340_236_800 * 10**9, 1_340_323_200 * 10**9)  # 2012-06-21 UTC


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    drop_tables(PG_URL)
    return PG_URL


def test_the_backend_under_test_is_the_one_named(db_url):
    assert db_url.startswith("postgresql://" if db_url == PG_URL else "sqlite:///")


#: The main job with its tick-rate streams opted into SQL as well (ticks -> tick_data, per-tick signals -> signals).
SQL_TOO = (
    "store.inputs=[bars, normalizer, signals_vwap_deviation_bps, signals_spread_bps, signals_tick_rate_zscore, "
    "signals_rsi, signals_bollinger_pctb, source.quarantine, normalizer.quarantine, bars.quarantine]"
)


def run_job(url: str, tmp_path) -> dict:
    overrides = [f"store.url={url}", f"source.job_database_url={url}", f"parquet.path={tmp_path / 'parquet'}",
                 f"catalog.path={tmp_path / 'catalog'}", SQL_TOO]  # fmt: skip
    loaded = load_graph("replay.yaml", overrides, env={})
    result = build_graph(loaded, backend="local").run()
    (store,) = [h for h in result.hosts if h["node_id"] == "store"]
    return store["operator"]["rows_written"]


def test_the_main_job_with_tick_rate_streams_opted_into_sql_stores_everything_and_a_rerun_leaves_identical_rows(db_url, tmp_path):
    written = run_job(db_url, tmp_path)
    assert written["tick_data"] == 57_515 + 9_999 and written["signals"] > 80_000
    for timeframe in ("1m", "1d"):
        expected = reference_bars(lobster_trades(), timeframe, ("America/New_York", "09:30", "16:00"))
        assert_bars_match(read_bars(db_url, symbol="AMZN", timeframe=timeframe), expected, f"AMZN {timeframe}")
    trades = lobster_trades()
    vwap = (trades["price"] * trades["size"]).cumsum() / trades["size"].cumsum()
    expected = ((trades["price"] - vwap) / vwap * 10_000).groupby(trades["ts"]).last()
    stored = read_table(db_url, "signals", where={"symbol": "AMZN", "name": "vwap_deviation_bps"}).to_pandas()
    np.testing.assert_allclose(stored["value"].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)
    before = {name: read_table(db_url, name) for name in TABLES}
    run_job(db_url, tmp_path)
    for name in TABLES:
        assert read_table(db_url, name).equals(before[name]), name


def make_store(url: str, now_ns: int = 1) -> SqlStore:
    return SqlStore(SqlStoreParams(url=url, batch_rows=2), OperatorContext(node_id="store", clock_ns=lambda: now_ns))


def feed(url: str, items: list[tuple[str, pa.RecordBatch]], now_ns: int = 1) -> None:
    store = make_store(url, now_ns)
    try:
        for stream, batch in items:
            store.on_batch(stream, batch)
        store.on_eof()
    finally:
        store.close()


BAR_ROW = dict(symbol="AMZN", timeframe="1m", ts=1_340_285_400 * 10**9, open=223.82, high=224.45, low=223.75,
               close=224.33, volume=10_821.0, vwap=224.0649671934202, trade_count=140, status="confirmed")  # fmt: skip


def test_corrections_update_bars_in_place_and_forming_rows_are_ignored(db_url):
    rows = [BAR_ROW, {**BAR_ROW, "ts": BAR_ROW["ts"] + 60 * 10**9, "vwap": math.nan, "volume": 0.0}]
    feed(db_url, [("bars", pa.RecordBatch.from_pylist(rows, schema=BAR))])
    feed(db_url, [("bars", pa.RecordBatch.from_pylist([{**BAR_ROW, "status": "forming", "close": 1.0},
                                                         {**BAR_ROW, "status": "corrected", "high": 230.0}], schema=BAR))])  # fmt: skip
    stored = read_bars(db_url)
    assert len(stored) == 2 and stored["high"].tolist()[0] == 230.0 and stored["close"].tolist()[0] == 224.33
    assert math.isnan(stored["vwap"].iloc[1])  # NaN survives (SQLite: via NULL; PostgreSQL: as NaN)


def test_signals_keep_created_at_of_their_first_insert(db_url):
    rows = [dict(provider="lobster", symbol="AMZN", ts=BAR_ROW["ts"] + k, name="spread_bps", value=3.0 + k,
                 score=None if k else 0.5, metadata='{"unit":"bps"}') for k in range(5)]  # fmt: skip
    batch = pa.RecordBatch.from_pylist(rows, schema=SIGNAL)
    feed(db_url, [("signals", batch)], now_ns=1_000)
    first = read_table(db_url, "signals")
    feed(db_url, [("signals", batch)], now_ns=2_000)  # re-run
    assert read_table(db_url, "signals").equals(first)
    changed = pa.RecordBatch.from_pylist([{**rows[2], "value": 99.0}], schema=SIGNAL)
    feed(db_url, [("signals", changed)], now_ns=3_000)
    after = read_table(db_url, "signals").to_pandas()
    assert after["value"].tolist() == [3.0, 4.0, 99.0, 6.0, 7.0]
    assert after["created_at"].tolist() == [1_000] * 5
    assert after["score"].isna().tolist() == [False, True, True, True, True]


def test_ticks_and_quarantine_round_trip_with_their_nulls(db_url):
    ticks = pa.RecordBatch.from_pylist(
        [
            dict(symbol="BTCUSDT", ts=1_582_329_602_111_000_000, price=9682.0, size=0.132, side="buy", bid=None, ask=None,
                 bid_size=None, ask_size=None, provider="binance-futures", seq=42_377_944, origin="replay"),
            dict(symbol="AMZN", ts=1_340_285_400_189_607_670, price=None, size=None, side=None, bid=223.81, ask=223.95,
                 bid_size=21.0, ask_size=100.0, provider="lobster", seq=1, origin="live"),
        ],
        schema=TICK,
    )  # fmt: skip
    feed(db_url, [("ticks", ticks), ("ticks", ticks)])
    stored = read_table(db_url, "tick_data").to_pandas().sort_values("symbol", ignore_index=True)
    expected = ticks.to_pandas().sort_values("symbol", ignore_index=True)
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False)


def test_the_bar_cache_sees_the_stores_writes(db_url):
    feed(db_url, [("bars", pa.RecordBatch.from_pylist([BAR_ROW], schema=BAR))])
    with BarCache(db_url) as cache:
        assert cache.read("AMZN", "1m", *DAY).column("high").to_pylist() == [224.45]
        feed(db_url, [("bars", pa.RecordBatch.from_pylist([{**BAR_ROW, "status": "corrected", "high": 231.0}], schema=BAR))])
        assert cache.read("AMZN", "1m", *DAY).column("high").to_pylist() == [231.0]
        assert cache.stats().invalidations == 1 and cache.stats().queries == 2


def test_an_export_from_the_backend_round_trips(db_url, tmp_path):
    feed(db_url, [("bars", pa.RecordBatch.from_pylist([BAR_ROW, {**BAR_ROW, "timeframe": "5m"}], schema=BAR))])
    output = tmp_path / "bars.parquet"
    result = run_export(ExportRequest(dataset="bars", url=db_url, symbols=["AMZN"], start_ns=DAY[0], end_ns=DAY[1],
                                      output=output, timeframe="1m"))  # fmt: skip
    table = pq.read_table(output)
    assert result.rows == 1 and table.column("ts").cast(pa.int64()).to_pylist() == [BAR_ROW["ts"]]
    assert table.drop_columns("ts").to_pylist() == [{k: v for k, v in BAR_ROW.items() if k not in ("ts", "status")}]
    job = read_job(db_url, result.job_id)
    assert job["status"] == "completed" and job["rows_written"] == 1 and job["metadata"]["output"] == str(output)


def test_one_flush_with_repeated_keys_keeps_the_last_row(db_url):
    # 200 signal rows, then the first 80 again with other values, flushed together
    rows = [dict(provider="p", symbol=f"S{k % 3}", ts=k, name="x", value=float(k), score=None, metadata=None) for k in range(200)]
    again = [dict(row, value=-row["value"] - 1) for row in rows[:80]]
    store = SqlStore(SqlStoreParams(url=db_url), OperatorContext(node_id="store", clock_ns=lambda: 7))
    try:
        store.on_batch("signals", pa.RecordBatch.from_pylist(rows, schema=SIGNAL))
        store.on_batch("signals", pa.RecordBatch.from_pylist(again, schema=SIGNAL))
        store.on_eof()
        assert store.metrics()["flushes"] == 1
    finally:
        store.close()
    stored = read_table(db_url, "signals").to_pandas().sort_values("ts")
    assert stored["value"].tolist() == [-(k + 1.0) if k < 80 else float(k) for k in range(200)]
