"""Unit tests of actors/normalizer.py, on real LOBSTER ticks and hand-worked batches."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.normalizer import REASONS, Normalizer, NormalizerParams
from graph.operator import OperatorContext
from tests.conftest import FIXTURES
from graph.schemas import QUARANTINE_ROW, TICK

LOBSTER = FIXTURES / "lobster_amzn_l1"
MESSAGES = LOBSTER / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
BOOK = LOBSTER / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"


@cache
def lobster_messages() -> pd.DataFrame:
    """The raw LOBSTER message file, ``time`` kept as the decimal text it is written as."""
    return pd.read_csv(
        MESSAGES,
        header=None,
        names=["time", "type", "order_id", "size", "price", "direction"],
        dtype={"time": str},
    )


@cache
def lobster_ticks() -> pd.DataFrame:
    """Every LOBSTER event as a TICK row: executions (types 4, 5) are trades carrying the
    book after the event, every other event is a quote; ``seq`` = 0-based file row."""
    messages = lobster_messages()
    book = pd.read_csv(BOOK, header=None, names=["ask", "ask_size", "bid", "bid_size"])
    seconds, _, fraction = messages["time"].str.partition(".").to_numpy().T
    ns_after_midnight = (
        seconds.astype(np.int64) * 10**9 + pd.Series(fraction).str.ljust(9, "0").astype(np.int64).to_numpy()
    )
    midnight_ns = pd.Timestamp("2012-06-21", tz="America/New_York").value  # EDT midnight, ns UTC
    trade = messages["type"].isin([4, 5]).to_numpy()
    return pd.DataFrame(
        {
            "symbol": "AMZN",
            "ts": midnight_ns + ns_after_midnight,
            "price": np.where(trade, messages["price"] / 10_000, np.nan),
            "size": np.where(trade, messages["size"].astype(float), np.nan),
            "side": np.where(trade, np.where(messages["direction"] == -1, "buy", "sell"), None),
            "bid": book["bid"] / 10_000,
            "ask": book["ask"] / 10_000,
            "bid_size": book["bid_size"].astype(float),
            "ask_size": book["ask_size"].astype(float),
            "provider": "lobster",
            "seq": np.arange(len(messages), dtype=np.int64),
            "origin": "replay",
            "advances_watermark": None,
        }
    )


def to_table(frame: pd.DataFrame) -> pa.Table:
    """TICK table; NaN in ``price``/``size`` of quote rows becomes null (pandas' default);
    ``advances_watermark`` null (every tick may move the watermark) unless the frame has it."""
    if "advances_watermark" not in frame:
        frame = frame.assign(advances_watermark=None)
    return pa.Table.from_pandas(frame, schema=TICK, preserve_index=False)


T0 = 1_340_285_400_000_000_000  # 2012-06-21T13:30:00Z: hand-written times are offsets from it


def tick(**values) -> dict:
    """One hand-written tick (a valid AMZN trade unless overridden)."""
    row = dict(
        symbol="AMZN", ts=1_340_285_400_000_000_000, price=223.82, size=100.0, side="buy",
        bid=223.81, ask=223.83, bid_size=100.0, ask_size=200.0, provider="lobster", seq=0, origin="replay",
        advances_watermark=None,
    )  # fmt: skip
    row.update(values)
    return row


def batch_of(*rows: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(list(rows), schema=TICK)


def make(symbols: list[str] | None = None, dedup: bool = True) -> Normalizer:
    return Normalizer(NormalizerParams(symbols=symbols, dedup=dedup), OperatorContext(node_id="normalize"))


def run(normalizer: Normalizer, batches) -> tuple[pa.Table, pa.Table]:
    """Feed ``batches``; return (accepted ticks, quarantine rows) concatenated."""
    out = {"ticks": [], "quarantine": []}
    for batch in batches:
        for stream, emitted in normalizer.on_batch("ticks", batch):
            out[stream].append(emitted)
    return (
        pa.Table.from_batches(out["ticks"], schema=TICK),
        pa.Table.from_batches(out["quarantine"], schema=QUARANTINE_ROW),
    )


def assert_conserved(normalizer: Normalizer) -> None:
    m = normalizer.metrics()
    assert m["accepted"] + sum(m["quarantined"].values()) == m["received"]


# -- real data --------------------------------------------------------------------------


def test_a_real_lobster_day_is_accepted_whole():
    ticks = to_table(lobster_ticks())
    normalizer = make(symbols=["AMZN"])
    accepted, quarantined = run(normalizer, ticks.to_batches(max_chunksize=4096))
    assert quarantined.num_rows == 0
    assert accepted.equals(ticks)
    assert normalizer.metrics()["received"] == normalizer.metrics()["accepted"] == 57_515
    assert_conserved(normalizer)


def test_the_48_identical_hidden_executions_are_all_accepted():
    messages = lobster_messages()
    repeated = messages.duplicated(keep=False)  # every member of a group of identical rows
    assert messages.duplicated().sum() == 48  # as documented in the data README
    assert set(messages.loc[repeated, "type"]) == {5}
    trades = lobster_ticks()[repeated.to_numpy()]
    normalizer = make(symbols=["AMZN"])
    accepted, quarantined = run(normalizer, [to_table(trades).combine_chunks().to_batches()[0]])
    assert quarantined.num_rows == 0
    assert accepted.num_rows == int(repeated.sum()) == 89
    # and the same rows amid the whole day, split across batches
    normalizer = make(symbols=["AMZN"])
    accepted, _ = run(normalizer, to_table(lobster_ticks()).to_batches(max_chunksize=1000))
    assert set(trades["seq"]) <= set(accepted["seq"].to_pylist())


def faulty_slice() -> tuple[pa.Table, dict[int, str]]:
    """1,001 real ticks with one fault of each kind injected; returns (ticks, {seq: reason})."""
    frame = lobster_ticks().iloc[:1000].copy()  # index == seq == position here
    trades = frame.index[frame["price"].notna()]
    quotes = frame.index[frame["price"].isna()]
    expected = {
        int(trades[3]): "bad_price",
        int(trades[7]): "bad_size",
        int(quotes[5]): "crossed_quote",
        int(quotes[9]): "unknown_symbol",
    }
    frame.loc[trades[7], "size"] = -100.0
    frame.loc[quotes[5], "bid"] = frame.loc[quotes[5], "ask"] + 0.05
    frame.loc[quotes[9], "symbol"] = "MSFT"
    resent = int(trades[20]) + 1  # a source row delivered twice, the copy right after it (not late)
    frame = pd.concat([frame.iloc[:resent], frame.loc[[trades[20]]], frame.iloc[resent:]])
    table = to_table(frame).combine_chunks()
    # a NaN price (null would make the row a quote) has to be set at the Arrow level
    price = table["price"].chunk(0)
    values = price.to_numpy(zero_copy_only=False).copy()
    null = price.is_null().to_numpy(zero_copy_only=False).copy()
    values[trades[3]], null[trades[3]] = np.nan, False
    table = table.set_column(TICK.get_field_index("price"), TICK.field("price"), pa.array(values, mask=null))
    return table, expected


def test_each_injected_fault_is_quarantined_with_its_reason_and_nothing_else_is_lost():
    table, expected = faulty_slice()
    normalizer = make(symbols=["AMZN"])
    accepted, quarantined = run(normalizer, table.to_batches(max_chunksize=256))

    copy = int(pd.Series(table["seq"].to_numpy()).duplicated().to_numpy().argmax())  # position of the copy
    replayed_seq = table["seq"][copy].as_py()
    assert replayed_seq not in expected
    reasons = list(zip(quarantined["row"].to_pylist(), quarantined["reason"].to_pylist()))
    assert sorted(reasons) == sorted([*expected.items(), (replayed_seq, "duplicate")])
    # accepted = the first 1,000 real rows minus the 4 corrupted ones, in order, untouched
    clean = to_table(lobster_ticks().iloc[:1000].drop(index=list(expected)))
    assert accepted.equals(clean)
    assert accepted.num_rows + quarantined.num_rows == table.num_rows == 1001
    m = normalizer.metrics()
    assert m["received"] == 1001 and m["accepted"] == 996
    assert m["quarantined"] == {
        "unknown_symbol": 1, "bad_timestamp": 0, "bad_price": 1, "bad_size": 1, "bad_quote": 0,
        "crossed_quote": 1, "late": 0, "duplicate": 1,
    }  # fmt: skip
    # source = node/provider/symbol, so (source, row=seq, reason) is unique across symbols
    for source, symbol in zip(quarantined["source"].to_pylist(), quarantined["symbol"].to_pylist()):
        assert source == f"normalize/lobster/{symbol}"
    nan_row = quarantined.filter(pc.equal(quarantined["reason"], "bad_price")).to_pylist()[0]
    assert nan_row["detail"] == "price nan must be a finite number > 0"


# -- hand-worked rows --------------------------------------------------------------------


def test_quarantine_row_names_field_value_and_keeps_the_raw_tick():
    normalizer = make()
    bad = tick(seq=42, price=math.nan)
    ((stream, rows),) = normalizer.on_batch("ticks", batch_of(bad))
    assert stream == "quarantine" and rows.schema.equals(QUARANTINE_ROW)
    row = rows.to_pylist()[0]
    assert row["source"] == "normalize/lobster/AMZN" and row["row"] == 42
    assert row["symbol"] == "AMZN" and row["ts"] == bad["ts"]
    assert row["reason"] == "bad_price"
    assert row["detail"] == "price nan must be a finite number > 0"
    raw = json.loads(row["raw"])
    assert list(raw) == TICK.names
    assert math.isnan(raw.pop("price"))
    assert raw == {k: v for k, v in bad.items() if k != "price"}
    assert " " not in row["raw"].replace('"', "")  # compact


@pytest.mark.parametrize(
    ("row", "reason", "detail"),
    [
        (tick(price=0.0), "bad_price", "price 0.0 must be a finite number > 0"),
        (tick(price=-3.5), "bad_price", "price -3.5 must be a finite number > 0"),
        (tick(price=math.inf), "bad_price", "price inf must be a finite number > 0"),
        (tick(size=None), "bad_size", "size null must be a finite number >= 0"),
        (tick(size=math.nan), "bad_size", "size nan must be a finite number >= 0"),
        (tick(size=-math.inf), "bad_size", "size -inf must be a finite number >= 0"),
        (tick(size=-1.0), "bad_size", "size -1.0 must be a finite number >= 0"),
        (tick(price=None, size=None, bid=0.0), "bad_quote", "bid 0.0 must be a finite number > 0"),
        (tick(price=None, size=None, ask=-1.0), "bad_quote", "ask -1.0 must be a finite number > 0"),
        (
            tick(price=None, size=None, bid=None, ask=math.inf),
            "bad_quote",
            "ask inf must be a finite number > 0",
        ),
        (tick(price=None, size=None, bid=math.nan), "bad_quote", "bid nan must be a finite number > 0"),
        (
            tick(price=None, size=None, bid=None, ask=None),
            "bad_quote",
            "quote has neither price nor bid/ask; bid or ask must be set",
        ),
        (
            tick(price=None, size=None, bid=10.5, ask=10.25),
            "crossed_quote",
            "bid 10.5 > ask 10.25: crossed quote (bid must be <= ask)",
        ),
        (
            tick(symbol="MSFT"),
            "unknown_symbol",
            "symbol 'MSFT' is not one of the configured symbols (AMZN, GOOG)",
        ),
    ],
)
def test_each_check(row, reason, detail):
    normalizer = make(symbols=["GOOG", "AMZN"])
    accepted, quarantined = run(normalizer, [batch_of(row)])
    assert accepted.num_rows == 0
    assert quarantined["reason"].to_pylist() == [reason]
    assert quarantined["detail"].to_pylist() == [detail]


@pytest.mark.parametrize(
    "row",
    [
        tick(size=0.0),  # a zero-size trade print
        tick(price=None, size=None, bid=10.0, ask=10.0),  # locked quote
        tick(price=None, size=None, ask=None, ask_size=None),  # one-sided quote, bid only
        tick(price=None, size=None, bid=None, bid_size=None),  # one-sided quote, ask only
        tick(bid=None, ask=None, bid_size=None, ask_size=None),  # trade without a book
        tick(bid=10.0, ask=9.0),  # quote checks apply to quote rows only
        tick(side=None),
    ],
)
def test_valid_edge_cases_are_accepted(row):
    accepted, quarantined = run(make(symbols=["AMZN"]), [batch_of(row)])
    assert quarantined.num_rows == 0
    assert accepted.to_pylist() == [row]


def test_a_row_failing_several_checks_reports_the_first():
    rows = [
        tick(seq=1, symbol="MSFT", price=math.nan, size=-1.0),  # unknown_symbol beats bad_price
        tick(seq=2, price=-1.0, size=math.nan),  # bad_price beats bad_size
        tick(seq=3, price=None, size=None, bid=-1.0, ask=-2.0),  # bad_quote beats crossed_quote
        tick(seq=4, price=-1.0),  # a replay of seq 4 (below) that is also bad: bad_price
        tick(seq=4),
        tick(seq=4, price=-1.0),
    ]
    _, quarantined = run(make(symbols=["AMZN"]), [batch_of(*rows)])
    assert list(zip(quarantined["row"].to_pylist(), quarantined["reason"].to_pylist())) == [
        (1, "unknown_symbol"), (2, "bad_price"), (3, "bad_quote"), (4, "bad_price"), (4, "bad_price"),
    ]  # fmt: skip


def test_without_a_symbol_list_every_symbol_is_known():
    accepted, quarantined = run(
        make(symbols=None), [batch_of(tick(symbol="ANY"), tick(symbol="OTHER", seq=1))]
    )
    assert accepted.num_rows == 2 and quarantined.num_rows == 0


# -- de-duplication ----------------------------------------------------------------------


def test_only_the_same_provider_symbol_kind_and_seq_is_a_duplicate():
    quote = dict(price=None, size=None)
    first = [
        tick(seq=7),
        tick(seq=7, **quote),  # same seq, other kind
        tick(seq=7, symbol="GOOG"),  # other symbol
        tick(seq=7, provider="tardis"),  # other provider
        tick(seq=8, price=1.0, size=1.0),
    ]
    replays = [
        tick(seq=7, price=999.0),  # same key, other content: still the same source row
        tick(seq=7, **quote),
        tick(seq=8, price=1.0, size=1.0),  # within the batch: first occurrence wins
    ]
    normalizer = make()
    accepted, quarantined = run(normalizer, [batch_of(*first), batch_of(*replays, tick(seq=9), tick(seq=9))])
    assert accepted.to_pylist() == [*first, tick(seq=9)]
    assert quarantined["reason"].to_pylist() == ["duplicate"] * 4
    assert quarantined["row"].to_pylist() == [7, 7, 8, 9]
    assert quarantined["detail"].to_pylist()[1] == (
        "seq 7 already seen for provider 'lobster', symbol 'AMZN', quote: replayed tick"
    )
    assert_conserved(normalizer)


def test_dedup_off_accepts_replays():
    accepted, quarantined = run(make(dedup=False), [batch_of(tick(), tick())])
    assert accepted.num_rows == 2 and quarantined.num_rows == 0


def test_a_rejected_tick_does_not_block_its_corrected_resend():
    accepted, quarantined = run(make(), [batch_of(tick(seq=5, price=-1.0)), batch_of(tick(seq=5))])
    assert accepted.to_pylist() == [tick(seq=5)]
    assert quarantined["reason"].to_pylist() == ["bad_price"]


@pytest.mark.parametrize("policy", ["drop", "amend"])
def test_the_watermark_bounds_the_dedup_memory(policy):
    #   ts:       100   200   300
    #   ticks:   s=1   s=2   s=3
    #   watermark 250 ------------|      forget s=1 and s=2 (ts < 250), keep s=3
    #   replays: s=1 (under drop a late tick, quarantined as late; under amend still
    #            remembered for the amend window: a duplicate, never a second amendment),
    #            s=3 (duplicate)
    normalizer = Normalizer(NormalizerParams(), OperatorContext(node_id="normalize", late_policy=policy))
    run(normalizer, [batch_of(tick(seq=1, ts=T0 + 100), tick(seq=2, ts=T0 + 200), tick(seq=3, ts=T0 + 300))])
    assert normalizer.metrics()["dedup_keys"] == 3
    assert normalizer.on_watermark(T0 + 250) == []
    assert normalizer.metrics()["dedup_keys"] == (1 if policy == "drop" else 3)
    accepted, quarantined = run(normalizer, [batch_of(tick(seq=1, ts=T0 + 100), tick(seq=3, ts=T0 + 300))])
    if policy == "drop":
        assert accepted.num_rows == 0
        assert quarantined["row"].to_pylist() == [1, 3]
        assert quarantined["reason"].to_pylist() == ["late", "duplicate"]
    else:
        assert accepted.num_rows == 0
        assert quarantined["row"].to_pylist() == [1, 3]
        assert quarantined["reason"].to_pylist() == ["duplicate", "duplicate"]
        assert normalizer.metrics()["late_accepted"] == 0
    normalizer.on_watermark(T0 + 10**13)  # past the 1 h amend window too
    assert normalizer.metrics()["dedup_keys"] == 0


def test_a_tick_older_than_the_watermark_is_late_and_a_tick_at_it_is_not():
    #   watermark T0 + 1_000 (ns)
    #   ticks: ts 999 (trade, late), 999 (quote, late), 1_000 (on time), 1_001 (on time)
    normalizer = make()
    normalizer.on_watermark(T0 + 1_000)
    late_quote = tick(seq=2, ts=T0 + 999, price=None, size=None, side=None)
    ticks = batch_of(tick(seq=1, ts=T0 + 999), late_quote, tick(seq=3, ts=T0 + 1_000), tick(seq=4, ts=T0 + 1_001))
    accepted, quarantined = run(normalizer, [ticks])
    assert accepted["seq"].to_pylist() == [3, 4]
    assert quarantined["row"].to_pylist() == [1, 2] and set(quarantined["reason"].to_pylist()) == {"late"}
    detail = quarantined["detail"][0].as_py()
    assert detail == (
        f"ts {T0 + 999} (2012-06-21T13:30:00.000000999Z) is older than its watermark {T0 + 1000} "
        "(2012-06-21T13:30:00.000001Z; newest earlier event time minus allowed lateness): "
        "late tick; late_policy drop: not applied"
    )
    m = normalizer.metrics()
    assert m["received"] == m["accepted"] + sum(m["quarantined"].values()) == 4
    assert m["quarantined"]["late"] == 2


def test_a_bad_late_tick_is_reported_by_its_defect_first():
    normalizer = make()
    normalizer.on_watermark(T0 + 1_000)
    _, quarantined = run(normalizer, [batch_of(tick(seq=1, ts=T0 + 5, price=-1.0))])
    assert quarantined["reason"].to_pylist() == ["bad_price"]


def test_late_state_survives_snapshot_and_restore():
    first = make()
    first.on_watermark(T0 + 1_000)
    second = make()
    second.restore(first.snapshot())
    _, quarantined = run(second, [batch_of(tick(seq=1, ts=T0 + 999))])
    assert quarantined["reason"].to_pylist() == ["late"]


def test_a_cast_batch_keeps_its_schema_metadata():
    frame = to_table(pd.DataFrame([tick(seq=k) for k in range(3)])).to_pandas()
    loose = pa.RecordBatch.from_pandas(frame[list(reversed(TICK.names))], preserve_index=False)
    loose = loose.replace_schema_metadata({"tickgraph.replay_run_id": "run-1"})
    ((stream, out),) = make().on_batch("ticks", loose)
    assert out.schema.equals(TICK) and out.schema.metadata == {b"tickgraph.replay_run_id": b"run-1"}


def test_dedup_state_survives_snapshot_and_restore():
    first = make()
    run(first, [batch_of(tick(seq=1), tick(seq=2, price=None, size=None))])
    second = make()
    second.restore(first.snapshot())
    accepted, quarantined = run(
        second, [batch_of(tick(seq=1), tick(seq=2, price=None, size=None), tick(seq=3))]
    )
    assert accepted["seq"].to_pylist() == [3]
    assert quarantined["reason"].to_pylist() == ["duplicate", "duplicate"]
    assert second.metrics()["received"] == 5


def test_seen_keys_many_batches_against_a_python_set():
    # the log-structured key set, checked against a plain set over many merges
    rng = np.random.default_rng(7)
    normalizer = make()
    seen: set[int] = set()
    for _ in range(60):
        seqs = rng.integers(0, 3000, size=int(rng.integers(1, 120)))
        rows = [tick(seq=int(s)) for s in seqs]
        accepted, quarantined = run(normalizer, [batch_of(*rows)])
        expected_accepted = []
        for s in seqs.tolist():
            if s not in seen:
                seen.add(s)
                expected_accepted.append(s)
        assert accepted["seq"].to_pylist() == expected_accepted
        assert quarantined.num_rows == len(seqs) - len(expected_accepted)
    assert normalizer.metrics()["dedup_keys"] == len(seen)


# -- batching ----------------------------------------------------------------------------


@cache
def faulty_table() -> pa.Table:
    """600 real ticks with faults and replays, for the re-batching property."""
    table, _ = faulty_slice()
    parts = [table.slice(0, 500), table.slice(100, 50), table.slice(1000, 1), table.slice(490, 50)]
    return pa.concat_tables(parts).combine_chunks()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=600), min_size=0, max_size=12))
def test_rebatching_never_changes_the_outputs(cuts):
    table = faulty_table()
    whole_accepted, whole_quarantined = run(make(symbols=["AMZN"]), table.to_batches())
    bounds = sorted({0, table.num_rows, *(c for c in cuts if c < table.num_rows)})
    pieces = [table.slice(a, b - a).combine_chunks().to_batches()[0] for a, b in zip(bounds, bounds[1:])]
    accepted, quarantined = run(make(symbols=["AMZN"]), pieces)
    assert accepted.equals(whole_accepted)
    assert quarantined.equals(whole_quarantined)
    assert whole_accepted.num_rows + whole_quarantined.num_rows == table.num_rows


# -- input checking ------------------------------------------------------------------------


def test_a_batch_in_another_column_order_or_nullability_is_conformed():
    frame = lobster_ticks().iloc[:50]
    loose = pa.RecordBatch.from_pandas(frame[list(reversed(TICK.names))], preserve_index=False)
    assert not loose.schema.equals(TICK)
    ((stream, out),) = make().on_batch("ticks", loose)
    assert stream == "ticks" and out.schema.equals(TICK) and out.num_rows == 50


def test_a_batch_missing_a_column_is_an_error():
    batch = batch_of(tick()).drop_columns(["seq"])
    with pytest.raises(
        ValueError, match=r"normalizer 'normalize': batch on stream 'ticks'.*missing columns: \['seq'\]"
    ):
        make().on_batch("ticks", batch)


def test_a_null_in_a_non_nullable_column_is_an_error():
    loose = pa.RecordBatch.from_pylist(
        [tick(), tick(seq=None)], schema=pa.schema([f.with_nullable(True) for f in TICK])
    )
    with pytest.raises(
        ValueError, match=r"'ticks' cannot be cast to the TICK schema: .*'seq' with null values"
    ):
        make().on_batch("ticks", loose)
    strict = pa.RecordBatch.from_arrays(loose.columns, schema=TICK)  # Arrow does not check here
    with pytest.raises(ValueError, match=r"has nulls in non-nullable TICK column\(s\) \['seq'\]"):
        make().on_batch("ticks", strict)


def test_empty_batch_emits_nothing_and_metrics_have_every_reason():
    normalizer = make()
    assert normalizer.on_batch("ticks", batch_of()) == []
    assert normalizer.on_eof() == []
    m = normalizer.metrics()
    assert m == {
        "received": 0, "accepted": 0, "quarantined": dict.fromkeys(REASONS, 0), "late_accepted": 0, "dedup_keys": 0,
    }  # fmt: skip
    json.dumps(m)
