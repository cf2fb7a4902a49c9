"""Canonical row encoding, the hash chain, and the hashing order of ``parity/``.

Expectations are written out independently: literal JSON bytes, the chain formula
of parity/canonical.py's docstring re-implemented with hashlib, and for sharded bars
the sorted set of confirmed rows.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.bars import BarEngine, BarParams
from graph.operator import OperatorContext
from graph.runtime import END_OF_STREAM, Data, Watermark, HostConfig, LocalTransport, NodeHost, partition_batch
from graph.schemas import BAR, TICK
from parity.canonical import (
    canonical_fields,
    canonical_float,
    encode_rows,
    round_significand,
    StreamHasher,
)
from parity.ordering import DAILY_BOUND_NS, OrderedStream, bar_release_bounds
from tests.reference import reference_bars, tardis_trades

T0 = 1_340_285_400_000_000_000  # 2012-06-21 13:30:00 UTC
MINUTE = 60_000_000_000


def bar_row(symbol="AMZN", timeframe="1m", ts=T0, close=223.75, status="confirmed", volume=100.0) -> dict:
    return {"symbol": symbol, "timeframe": timeframe, "ts": ts, "open": 223.5, "high": 224.0, "low": 223.25,
            "close": close, "volume": volume, "vwap": 223.5, "trade_count": 3, "status": status}  # fmt: skip


def bars(*rows: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(list(rows), schema=BAR)


def tick_batch(frame, symbols=None) -> pa.RecordBatch:
    """Real trades (ts, price, size) as a TICK batch, whatever optional columns TICK has."""
    n = len(frame)
    columns = {
        "symbol": symbols if symbols is not None else ["BTCUSDT"] * n,
        "ts": frame["ts"].to_numpy(),
        "price": frame["price"].to_numpy(),
        "size": frame["size"].to_numpy(),
        "provider": ["tardis"] * n,
        "seq": np.arange(n),
        "origin": ["replay"] * n,
    }
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in TICK]
    return pa.RecordBatch.from_arrays(arrays, schema=TICK)


def chain_by_hand(stream: str, fields, rows: list[bytes], bits: int = 53) -> str:
    """The chain of parity/canonical.py's docstring, written out with hashlib."""
    h = hashlib.sha256(f"tickgraph-parity/2\n{stream}\n".encode() + orjson.dumps(list(fields)) + f"\n{bits}".encode()).digest()
    for row in rows:
        h = hashlib.sha256(h + row).digest()
    return h.hex()


@pytest.fixture(scope="module")
def trades():
    return tardis_trades()


# ------------------------------------------------------------------ canonical encoding
def test_a_bar_row_encodes_in_the_schemas_field_order():
    # Values exactly representable in 32 significant bits are written unchanged.
    assert encode_rows(bars(bar_row()), canonical_fields(BAR)) == [
        b'["AMZN","1m",1340285400000000000,223.5,224.0,223.25,223.75,100.0,223.5,3]'
    ]


def test_a_bars_status_is_not_hashed_its_values_are():
    # A bar confirmed in one batching is corrected in another, and partial in a live
    # session that started inside it: the same bar. A different volume is a different bar.
    fields = canonical_fields(BAR)
    rows = [encode_rows(bars(bar_row(status=status)), fields) for status in ("confirmed", "corrected", "partial")]
    assert rows[0] == rows[1] == rows[2]
    assert encode_rows(bars(bar_row(volume=101.0)), fields) != rows[0]


def test_column_order_and_extra_columns_do_not_change_the_encoding():
    batch = bars(bar_row(), bar_row(ts=T0 + MINUTE, close=224.0))
    shuffled = batch.select(list(reversed(batch.schema.names))).append_column("note", pa.array(["x", "y"]))
    fields = canonical_fields(BAR)
    assert canonical_fields(shuffled.schema) == fields
    assert encode_rows(shuffled, fields) == encode_rows(batch, fields)


def test_provenance_fields_are_not_hashed(trades):
    live = tick_batch(trades.head(5))
    replay = live.set_column(live.schema.get_field_index("origin"), "origin", pa.array(["live"] * 5))
    fields = canonical_fields(TICK)
    assert "origin" not in fields and "replay_run_id" not in fields and "advances_watermark" not in fields
    assert fields == tuple(n for n in TICK.names if n not in ("origin", "replay_run_id", "advances_watermark"))
    assert encode_rows(live, fields) == encode_rows(replay, fields)
    received = live.set_column(live.schema.get_field_index("advances_watermark"), "advances_watermark", pa.array([False] * 5))
    assert encode_rows(received, fields) == encode_rows(live, fields)
    # A tick batch without the optional provenance column is still a tick stream.
    bare = live.drop_columns([n for n in ("replay_run_id",) if n in live.schema.names])
    assert canonical_fields(bare.schema) == fields


def test_floats_nan_infinity_null_and_negative_zero_have_one_form_each():
    batch = pa.RecordBatch.from_pydict({"x": pa.array([float("nan"), float("inf"), float("-inf"), None, -0.0, 1.5])})
    assert encode_rows(batch, ["x"]) == [b'["NaN"]', b'["Infinity"]', b'["-Infinity"]', b"[null]", b"[0.0]", b"[1.5]"]


def test_floats_are_hashed_at_full_precision_and_rounded_only_when_asked():
    # The two volume-weighted prices of one real bar from two batchings of the old float sums:
    # distinct values hash distinctly now; float_bits=32 still lumps them together on request.
    assert canonical_float(9666.257696875004) != canonical_float(9666.257696875)
    assert canonical_float(9666.257696875004, 32) == canonical_float(9666.257696875, 32)
    assert canonical_float(0.1 + 0.2, 32) == canonical_float(0.3, 32)


def test_a_one_lot_difference_changes_the_bar_hash(trades):
    # The real BTCUSDT 1d bar, and the same bar with 0.001 BTC (one lot), 3e-5 BTC or a
    # 1e-12 relative more volume: each hashes differently (the old 32-bit rounding did not
    # tell the last one apart).
    day = reference_bars(trades, "1d").iloc[0]
    base = {**bar_row(symbol="BTCUSDT", timeframe="1d", ts=int(day.name), close=float(day["close"])),
            "open": float(day["open"]), "high": float(day["high"]), "low": float(day["low"]),
            "vwap": float(day["vwap"]), "trade_count": int(day["trade_count"])}  # fmt: skip
    fields = canonical_fields(BAR)

    def digest(volume: float, bits: int = 53) -> str:
        hasher = StreamHasher("bars", fields, float_bits=bits)
        hasher.update(encode_rows(bars({**base, "volume": volume}), fields, bits))
        return hasher.hexdigest

    assert digest(day["volume"] + 0.001) != digest(day["volume"])
    assert digest(day["volume"] + 3e-5) != digest(day["volume"])
    tiny = day["volume"] * 1e-12  # far below 2**-32 relative: the old rounding hashed it equal
    assert digest(day["volume"] + tiny) != digest(day["volume"])
    assert digest(day["volume"] + tiny, bits=32) == digest(day["volume"], bits=32)


@given(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False, min_value=-1e300, max_value=1e300))
def test_rounding_keeps_the_asked_bits_and_is_idempotent(x):
    rounded = canonical_float(x, 32)
    assert abs(rounded - x) <= abs(x) * 2.0**-32
    assert canonical_float(rounded, 32) == rounded
    assert canonical_float(x) == x or x == 0.0  # the default keeps every bit
    assert round_significand(np.array([x]), 53)[0] == x or x == 0.0


def test_the_chain_is_the_documented_formula(trades):
    batch = tick_batch(trades.head(50))
    fields = canonical_fields(TICK)
    hasher = StreamHasher("ticks", fields, checkpoint_every=20)
    hasher.update(encode_rows(batch, fields))
    rows = encode_rows(batch, fields)
    assert hasher.hexdigest == chain_by_hand("ticks", fields, rows)
    assert hasher.checkpoints == [(20, chain_by_hand("ticks", fields, rows[:20])), (40, chain_by_hand("ticks", fields, rows[:40]))]
    assert StreamHasher("ticks", fields).hexdigest == chain_by_hand("ticks", fields, [])  # empty stream: h_0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12), every=st.integers(1, 250))
def test_rebatching_rows_never_changes_the_hash_or_the_checkpoints(trades, cuts, every):
    batch = tick_batch(trades.head(600))
    whole = OrderedStream("ticks", batch.schema, checkpoint_every=every)
    whole.add(batch)
    pieces = OrderedStream("ticks", batch.schema, checkpoint_every=every)
    bounds = [0, *sorted(cuts), 600]
    for start, end in zip(bounds, bounds[1:]):
        pieces.add(batch.slice(start, end - start))
    assert pieces.hasher.hexdigest == whole.hasher.hexdigest
    assert pieces.hasher.checkpoints == whole.hasher.checkpoints
    assert [n for n, _ in whole.hasher.checkpoints] == list(range(every, 601, every))


# ------------------------------------------------------------------ hashing order of bars
def test_release_bounds_are_bar_ends_and_26_hours_for_daily_bars():
    ts = np.array([T0, T0, T0, T0], dtype=np.int64)
    assert bar_release_bounds(ts, ["1s", "1m", "1h", "1d"]).tolist() == [
        T0 + 1_000_000_000, T0 + MINUTE, T0 + 60 * MINUTE, T0 + 26 * 60 * MINUTE
    ]  # fmt: skip
    assert DAILY_BOUND_NS == 26 * 3600 * 10**9
    with pytest.raises(ValueError, match="'7q' is not a timeframe"):
        bar_release_bounds(ts[:1], ["7q"])


def test_bars_are_hashed_in_bar_end_order_whatever_the_arrival_order():
    #   shard 0:  AMZN 1m [T0, T0+1m) confirmed ......... wm T0+1m
    #   shard 1:  .......... BTC 1m [T0, T0+1m) .......... wm T0+1m   (arrives first)
    #   hashed:   AMZN [T0), BTC [T0) (same end: by symbol), then AMZN [T0+1m)
    #   forming rows are skipped.
    a, b = bar_row("AMZN"), bar_row("BTCUSDT")
    later = bar_row("AMZN", ts=T0 + MINUTE)
    one = OrderedStream("bars", BAR, checkpoint_every=2)
    one.add(bars(b, bar_row("AMZN", ts=T0 + MINUTE, status="forming")))
    one.add(bars(a))
    assert one.release(T0 + MINUTE) == 2
    one.add(bars(later))
    one.finish()
    fields = canonical_fields(BAR)
    assert one.hasher.hexdigest == chain_by_hand("bars", fields, encode_rows(bars(a, b, later), fields))
    assert (one.forming_skipped, one.out_of_order, one.pending) == (1, 0, 0)


def test_under_amend_a_bar_is_hashed_once_with_its_last_correction():
    #   wm:        T0+1m            T0+2m              T0+1m+window
    #   AMZN [T0): confirmed ...... corrected, corrected ... released: the last correction
    window = 10 * MINUTE
    stream = OrderedStream("bars", BAR, amend_window_ns=window)
    stream.add(bars(bar_row("AMZN")))
    assert stream.release(T0 + MINUTE) == 0  # kept for corrections
    stream.add(bars(bar_row("AMZN", close=225.0, status="corrected")))
    stream.add(bars(bar_row("AMZN", close=226.0, status="corrected")))
    assert stream.release(T0 + MINUTE + window) == 1
    stream.finish()
    fields = canonical_fields(BAR)
    final = encode_rows(bars(bar_row("AMZN", close=226.0, status="corrected")), fields)
    assert stream.hasher.hexdigest == chain_by_hand("bars", fields, final)
    assert (stream.hasher.messages, stream.corrections) == (1, 2)


def test_a_row_behind_an_earlier_release_is_counted_out_of_order():
    stream = OrderedStream("bars", BAR)
    stream.add(bars(bar_row("BTCUSDT", ts=T0 + MINUTE)))
    stream.release(T0 + 2 * MINUTE)
    stream.add(bars(bar_row("AMZN")))  # its bound T0+1m is behind the released T0+2m
    stream.finish()
    assert stream.out_of_order == 1 and stream.hasher.messages == 2


def test_bar_end_order_needs_bar_rows():
    with pytest.raises(ValueError, match="order 'bar_end' needs BAR rows"):
        OrderedStream("ticks", TICK, order="bar_end")


def _shard_channels(ticks: pa.RecordBatch, batch_rows: int, num_shards: int) -> list[list[tuple]]:
    """Run real bar engines per shard; each shard's output channel as wire messages."""
    params = BarParams(timeframes=["1s", "1m", "5m", "1d"])
    engines = [BarEngine(params, OperatorContext("bars", shard=i, num_shards=num_shards)) for i in range(num_shards)]
    channels: list[list[tuple]] = [[] for _ in range(num_shards)]

    def send(shard, emits):
        channels[shard].extend(Data(stream, batch) for stream, batch in emits if stream == "bars")

    for start in range(0, ticks.num_rows, batch_rows):
        batch = ticks.slice(start, batch_rows)
        for shard, part in partition_batch(batch, "symbol", num_shards):
            send(shard, engines[shard].on_batch("ticks", part))
        watermark = int(batch.column("ts")[-1].as_py())
        for shard in range(num_shards):
            send(shard, engines[shard].on_watermark(watermark))
            channels[shard].append(Watermark(watermark))
    for shard in range(num_shards):
        send(shard, engines[shard].on_eof())
        channels[shard].append(END_OF_STREAM)
    return channels


def _hash_interleaved(channels: list[list[tuple]], rng: random.Random) -> tuple[str, dict]:
    """Deliver the shards' messages to a parity host in a random interleaving."""
    names = [f"bars#{i}" for i in range(len(channels))]
    host = NodeHost(HostConfig(node_id="parity", kind="parity", params={"checkpoint_every": 100}, inputs=names))
    host.start()
    host.connect([], LocalTransport({}))
    queues = [list(c) for c in channels]
    while any(queues):
        shard = rng.choice([i for i, q in enumerate(queues) if q])
        take = rng.randint(1, 3)
        host.push(names[shard], queues[shard][:take])
        del queues[shard][:take]
    stream = host.op.metrics()
    return stream["parity"]["bars"]["hash"], stream["ordering"]["bars"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(num_shards=st.integers(1, 4), seed=st.integers(0, 2**32 - 1), batch_rows=st.sampled_from([97, 500, 3000]))
def test_sharded_arrival_order_never_changes_the_bars_hash(trades, num_shards, seed, batch_rows):
    # Real Binance trades, spread over five symbols so that the shards all have work.
    frame = trades.head(3000)
    ticks = tick_batch(frame, [f"BTC{i % 5}" for i in range(len(frame))])
    single = _shard_channels(ticks, batch_rows, 1)
    reference, _ = _hash_interleaved(single, random.Random(0))
    sharded = _shard_channels(ticks, batch_rows, num_shards)
    got, counters = _hash_interleaved(sharded, random.Random(seed))
    assert got == reference
    assert counters["out_of_order"] == 0 and counters["pending"] == 0
    # Independently: the chain over the SET of confirmed rows sorted by (bar end, symbol, timeframe, ts).
    rows = pa.Table.from_batches([m.batch for c in sharded for m in c if isinstance(m, Data)]).to_pandas()
    rows = rows[rows["status"] == "confirmed"].copy()
    length = {"1s": 10**9, "1m": MINUTE, "5m": 5 * MINUTE, "1d": 26 * 60 * MINUTE}
    rank = {"1s": 0, "1m": 1, "5m": 2, "1d": 5}
    rows["end"] = rows["ts"] + rows["timeframe"].map(length)
    rows["rank"] = rows["timeframe"].map(rank)
    rows = rows.sort_values(["end", "symbol", "rank", "ts"])
    table = pa.RecordBatch.from_pandas(rows[BAR.names], schema=BAR, preserve_index=False)
    assert got == chain_by_hand("bars", canonical_fields(BAR), encode_rows(table, canonical_fields(BAR)))


def test_event_time_order_sorts_rows_of_interleaved_shards_by_ts():
    #   shard 0: s(T0+2)          s(T0+5)   wm T0+5
    #   shard 1:        s(T0+1)             wm T0+5     -> hashed by ts: T0+1, T0+2, T0+5
    from graph.schemas import SIGNAL

    def signal(symbol, ts):
        return pa.RecordBatch.from_pylist([{"provider": "p", "symbol": symbol, "ts": ts, "name": "spread_bps",
                                            "value": 1.25, "score": None, "metadata": "{}"}], schema=SIGNAL)  # fmt: skip

    arrivals = [signal("A", T0 + 2), signal("B", T0 + 1), signal("A", T0 + 5)]
    stream = OrderedStream("signals", SIGNAL, order="event_time")
    for batch in arrivals:
        stream.add(batch)
    assert stream.release(T0 + 2) == 2
    stream.finish()
    fields = canonical_fields(SIGNAL)
    in_ts_order = [encode_rows(arrivals[i], fields)[0] for i in (1, 0, 2)]
    assert stream.hasher.hexdigest == chain_by_hand("signals", fields, in_ts_order)
