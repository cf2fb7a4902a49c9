"""The tiered bar read path (db/cache.py): LRU blocks in front of SQLite, invalidated by the store's writes.

Bars are the real LOBSTER AMZN 1m bars (pandas, tests/reference.py), written by the
real ``SqlStore``. Mostly blocks of 64 one-minute bars, on a grid aligned to the epoch
(so to UTC midnight, which is a multiple of 64 minutes); the 387 bars of the day (13:30
to 19:59 UTC, 3 minutes without trades) fall in blocks 12..18::

    block k starts at k * 64 min:  12:48 | 13:52 | 14:56 | 16:00 | 17:04 | 18:08 | 19:12 | 20:16
                                   (12)    (13)    (14)    (15)    (16)    (17)    (18)
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pyarrow as pa
import pytest

from actors.store import SqlStore, SqlStoreParams
from db.cache import BarCache, cache_key, notify_write
from db.read import read_range_async
from graph.operator import OperatorContext
from graph.schemas import BAR
from tests.reference import lobster_trades, reference_bars

MINUTE = 60 * 1_000_000_000
DAY_START = 1_340_236_800 * 1_000_000_000  # 2012-06-21 00:00 UTC
SPAN = 64 * MINUTE  # one block of 64 one-minute bars


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    frames = []
    for timeframe in ("1m", "1d"):
        session = ("America/New_York", "09:30", "16:00") if timeframe == "1d" else None
        frame = reference_bars(lobster_trades(), timeframe, session).reset_index()
        frames.append(frame.assign(symbol="AMZN", timeframe=timeframe, status="confirmed"))
    return pd.concat(frames, ignore_index=True)[BAR.names]


def store_bars(url: str, frame: pd.DataFrame) -> None:
    store = SqlStore(SqlStoreParams(url=url), OperatorContext(node_id="store"))
    try:
        for batch in pa.Table.from_pandas(frame, schema=BAR, preserve_index=False).to_batches():
            store.on_batch("bars", batch)
        store.on_eof()
    finally:
        store.close()


@pytest.fixture
def url(tmp_path, bars) -> str:
    url = f"sqlite:///{tmp_path / 'bars.db'}"
    store_bars(url, bars)
    return url


class CountingLoader:
    """The database tier, counting the ranges it is asked for."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[tuple[str, str, int, int]] = []
        self.during_load = None

    async def __call__(self, symbol: str, timeframe: str, start_ns: int, end_ns: int) -> pa.Table:
        self.calls.append((symbol, timeframe, start_ns, end_ns))
        table = await read_range_async(self.url, "bars_ohlcv", symbols=[symbol], start_ns=start_ns, end_ns=end_ns,
                                       where={"timeframe": timeframe})  # fmt: skip
        if self.during_load is not None:
            self.during_load()
        return table.sort_by("ts")


def expected(bars: pd.DataFrame, timeframe: str, start: int, end: int) -> pd.DataFrame:
    rows = bars[(bars["timeframe"] == timeframe) & (bars["ts"] >= start) & (bars["ts"] < end)]
    return rows.drop(columns="status").reset_index(drop=True)


def test_a_read_returns_exactly_the_stored_bars_and_the_second_read_hits(url, bars):
    loader = CountingLoader(url)
    start, end = DAY_START + 14 * 60 * MINUTE, DAY_START + 17 * 60 * MINUTE  # 14:00 to 17:00
    with BarCache(url, block_bars=64, loader=loader) as cache:
        first = cache.read("AMZN", "1m", start, end)
        pd.testing.assert_frame_equal(first.to_pandas(), expected(bars, "1m", start, end), check_dtype=False)
        assert first.schema.names == [n for n in BAR.names if n != "status"]
        # 14:00..17:00 touches blocks 13:52.. 14:56.. 16:00..: one query for the run of three
        assert len(loader.calls) == 1 and cache.stats().misses == 3 and cache.stats().hits == 0
        again = cache.read("AMZN", "1m", start, end)
        assert again.equals(first) and len(loader.calls) == 1
        assert cache.stats().hits == 3
        # a wider range loads only the blocks it does not have, one query per run
        wider = cache.read("AMZN", "1m", DAY_START, DAY_START + 24 * 60 * MINUTE)
        pd.testing.assert_frame_equal(wider.to_pandas(), expected(bars, "1m", DAY_START, DAY_START + 1440 * MINUTE), check_dtype=False)
        assert len(wider) == 387 and len(loader.calls) == 3  # blocks before 13:52 and after 17:04


def test_the_database_tier_by_default_and_daily_bars(url, bars):
    with BarCache(url) as cache:
        daily = cache.read("AMZN", "1d", DAY_START, DAY_START + 86_400 * 1_000_000_000)
        assert daily.num_rows == 1 and daily.column("volume")[0].as_py() == 810_755
        assert cache.read("NOPE", "1m", DAY_START, DAY_START + MINUTE).num_rows == 0
        assert cache.stats().queries == 2


def test_least_recently_used_blocks_are_evicted_first(url, bars):
    loader = CountingLoader(url)
    block = lambda k: (DAY_START // SPAN + k) * SPAN  # noqa: E731  (start of the k-th block after midnight's)
    with BarCache(url, block_bars=64, capacity_bars=130, loader=loader) as cache:
        cache.read("AMZN", "1m", block(14), block(15))  # 64 bars
        cache.read("AMZN", "1m", block(15), block(16))  # 64 bars: 128 <= 130
        cache.read("AMZN", "1m", block(14), block(15))  # hit: block 14 is now the most recent
        cache.read("AMZN", "1m", block(16), block(17))  # 192 > 130: evicts block 15 (least recent)
        stats = cache.stats()
        held = len(expected(bars, "1m", block(14), block(15))) + len(expected(bars, "1m", block(16), block(17)))
        assert stats.evictions == 1 and stats.cached_blocks == 2 and stats.cached_bars == held
        loader.calls.clear()
        cache.read("AMZN", "1m", block(14), block(15))
        assert loader.calls == []  # still cached
        cache.read("AMZN", "1m", block(15), block(16))
        assert [c[2] for c in loader.calls] == [block(15)]  # evicted: reloaded


def test_a_store_write_invalidates_the_blocks_it_touches(url, bars):
    loader = CountingLoader(url)
    with BarCache(url, block_bars=64, loader=loader) as cache:
        day = (DAY_START, DAY_START + 1440 * MINUTE)
        before = cache.read("AMZN", "1m", *day).to_pandas()
        cache.read("AMZN", "1d", *day)
        queries = len(loader.calls)
        # a late-tick correction of the 15:00 bar, written through the store in this process
        row = bars[(bars["timeframe"] == "1m") & (bars["ts"] == DAY_START + 15 * 60 * MINUTE)]
        store_bars(url, row.assign(status="corrected", high=row["high"] + 1.0, trade_count=row["trade_count"] + 1))
        stats = cache.stats()
        assert stats.invalidations == 1  # the one 1m block holding 15:00; the 1d block untouched
        after = cache.read("AMZN", "1m", *day).to_pandas()
        assert len(loader.calls) == queries + 1  # only the invalidated block was reloaded
        changed = after["ts"] == DAY_START + 15 * 60 * MINUTE
        assert after.loc[changed, "high"].item() == before.loc[changed, "high"].item() + 1.0
        pd.testing.assert_frame_equal(after[~changed], before[~changed])
        cache.read("AMZN", "1d", *day)
        assert len(loader.calls) == queries + 1


def test_a_relative_sqlite_url_is_the_same_database(tmp_path, monkeypatch, bars):
    monkeypatch.chdir(tmp_path)
    absolute = f"sqlite:///{tmp_path / 'rel.db'}"
    assert cache_key("sqlite:///rel.db") == cache_key(absolute) == f"sqlite+aiosqlite:///{tmp_path / 'rel.db'}"
    store_bars(absolute, bars.iloc[:3])
    with BarCache("sqlite:///rel.db") as cache:
        assert cache.read("AMZN", "1m", DAY_START, DAY_START + 1440 * MINUTE).num_rows == 3
        store_bars("sqlite:///rel.db", bars.iloc[3:5])
        assert cache.stats().invalidations == 1
        assert cache.read("AMZN", "1m", DAY_START, DAY_START + 1440 * MINUTE).num_rows == 5


def test_blocks_expire_after_the_ttl(url):
    now = [0.0]
    loader = CountingLoader(url)
    with BarCache(url, block_bars=1440, ttl_s=5.0, clock=lambda: now[0], loader=loader) as cache:
        cache.read("AMZN", "1m", DAY_START, DAY_START + MINUTE * 1440)
        now[0] = 5.0
        cache.read("AMZN", "1m", DAY_START, DAY_START + MINUTE * 1440)
        assert len(loader.calls) == 1  # 5 s old: still fresh
        now[0] = 5.5
        cache.read("AMZN", "1m", DAY_START, DAY_START + MINUTE * 1440)
        assert len(loader.calls) == 2 and cache.stats().expired == 1


def test_a_write_racing_a_load_keeps_the_loaded_block_out_of_the_cache(url):
    loader = CountingLoader(url)
    with BarCache(url, block_bars=64, loader=loader) as cache:
        written = pa.RecordBatch.from_pylist([{"symbol": "AMZN", "timeframe": "1m", "ts": DAY_START + 900 * MINUTE}])
        loader.during_load = lambda: notify_write(cache_key(url), [written])  # a commit lands mid-load
        cache.read("AMZN", "1m", DAY_START + 840 * MINUTE, DAY_START + 960 * MINUTE)
        assert cache.stats().cached_blocks == 0  # may predate the write: not cached
        loader.during_load = None
        cache.read("AMZN", "1m", DAY_START + 840 * MINUTE, DAY_START + 960 * MINUTE)
        assert len(loader.calls) == 2 and cache.stats().cached_blocks == 2  # blocks 13:52 and 14:56


def test_a_closed_cache_no_longer_hears_writes_and_bad_reads_are_named(url, bars):
    cache = BarCache(url)
    cache.read("AMZN", "1m", DAY_START, DAY_START + MINUTE * 1440)
    cache.close()
    assert cache.stats().cached_blocks == 0
    store_bars(url, bars.iloc[:1])
    assert cache.stats().invalidations == 0
    with pytest.raises(ValueError, match="'7q' is not a timeframe"):
        cache.read("AMZN", "7q", 0, 1)
    with pytest.raises(ValueError, match=r"end_ns \(5\) must be after start_ns \(5\)"):
        cache.read("AMZN", "1m", 5, 5)
    with pytest.raises(ValueError, match="capacity_bars and block_bars must be >= 1"):
        BarCache(url, capacity_bars=0)


async def test_reads_from_async_code(url):
    with BarCache(url) as cache:
        first, second = await asyncio.gather(
            cache.read_async("AMZN", "1m", DAY_START, DAY_START + MINUTE * 1440),
            cache.read_async("AMZN", "1d", DAY_START, DAY_START + MINUTE * 1440),
        )
        assert (first.num_rows, second.num_rows) == (387, 1)
