"""Source shards and the catalog's read path, in-process (no Ray), on real ticks.

* ``file_replay`` with ``parallelism`` N (``actors/source_shards.py``): the shards' ticks
  together are the unsharded replay's, each symbol from one shard in the same order.
* The catalog written by the ``catalog`` sink, read back through ``catalog/reader.py``
  (what ``run.py export`` and the ``replay`` source use) and queried with DuckDB
  (``run.py query``): compared with the replay's own ticks and with pandas.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from actors.catalog_sink import CatalogParams, CatalogSink
from actors.file_replay import FileReplay
from catalog.query import run_query
from catalog.reader import StoreReader
from graph.operator import OperatorContext, Watermark
from graph.schemas import TICK
from tests.conftest import FIXTURES, LOBSTER, TRADES


def replay(num_shards: int = 1, shard: int = 0, partition: str = "symbols") -> list:
    data = {"files": [LOBSTER, TRADES], "batch_rows": 4096, "partition": partition}
    params = FileReplay.Params.model_validate(data, context={"base_dir": FIXTURES})
    source = FileReplay(params, OperatorContext("replay", base_dir=FIXTURES, shard=shard, num_shards=num_shards))
    events = [e if isinstance(e, Watermark) else e[1] for e in source.events() if isinstance(e, Watermark) or e[0] == "ticks"]
    source.close()
    return events


def ticks_of(events: list) -> pa.Table:
    return pa.Table.from_batches([e for e in events if not isinstance(e, Watermark)], schema=TICK)


@pytest.fixture(scope="module")
def whole() -> list:
    return replay()


@pytest.mark.parametrize("partition", ["symbols", "files"])
def test_source_shards_together_replay_the_unsharded_stream_per_symbol(whole, partition):
    expected = ticks_of(whole)
    parts = [ticks_of(replay(2, k, partition)) for k in range(2)]
    assert sum(p.num_rows for p in parts) == expected.num_rows
    owners = {}
    for k, part in enumerate(parts):
        for symbol in set(part["symbol"].to_pylist()):
            assert owners.setdefault(symbol, k) == k, f"{symbol} came from two shards"
            mine = part.filter(pc.equal(part["symbol"], symbol))
            theirs = expected.filter(pc.equal(expected["symbol"], symbol))
            assert mine.equals(theirs), f"{symbol}: shard {k} differs from the unsharded replay"
    assert set(owners) == {"AMZN", "BTCUSDT"}


@pytest.fixture(scope="module")
def catalog(whole, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    sink = CatalogSink(CatalogParams(path=root, file_span_s=900), OperatorContext("catalog"))
    for event in whole:
        sink.on_watermark(event.ts) if isinstance(event, Watermark) else sink.on_batch("ticks", event)
    sink.on_eof(), sink.close()
    return root


def test_the_read_path_gives_back_the_replayed_ticks_exactly(whole, catalog):
    expected = ticks_of(whole)
    got = StoreReader(catalog).ticks(None, None, None)
    for symbol in ("AMZN", "BTCUSDT"):
        mine = got.filter(pc.equal(got["symbol"], symbol)).select(TICK.names)
        theirs = expected.filter(pc.equal(expected["symbol"], symbol))
        assert mine.schema.types == theirs.schema.types
        assert mine.to_pydict() == theirs.to_pydict()  # values and order; ties none (seq increases)


def test_a_user_query_over_the_catalog_equals_pandas(whole, catalog):
    frame = ticks_of(whole).to_pandas()
    trades = frame[frame["price"].notna()]
    want = (
        trades.assign(notional=trades["price"] * trades["size"])
        .groupby("symbol")
        .agg(trades=("price", "count"), volume=("size", "sum"), notional=("notional", "sum"), last_ts=("ts", "max"))
        .reset_index()
    )
    sql = (
        "SELECT symbol, count(*) AS trades, sum(size) AS volume, sum(price * size) AS notional, "
        "max(epoch_ns(ts)) AS last_ts FROM ticks WHERE price IS NOT NULL GROUP BY symbol ORDER BY symbol"
    )
    connection, relation = run_query(StoreReader(catalog), sql)
    got = relation.df()
    connection.close()
    assert got["symbol"].tolist() == want["symbol"].tolist()
    assert got["trades"].tolist() == want["trades"].tolist()
    assert got["last_ts"].tolist() == want["last_ts"].tolist()
    pd.testing.assert_series_equal(got["volume"], want["volume"], check_names=False, rtol=1e-12)
    pd.testing.assert_series_equal(got["notional"], want["notional"], check_names=False, rtol=1e-12)
