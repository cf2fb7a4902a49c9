"""Reconnects, silence detection, malformed frames, backoff, gaps and backfill, stop semantics.

All against the local frame server with recorded frames (malformed frames are real
frames with one field broken).
"""

from __future__ import annotations

import json
import logging
import random
import time

import pytest

from actors.live.base import Backoff, FatalSourceError
from actors.live.binance import BinanceSource
from actors.live.coinbase import CoinbaseSource
from actors.live.finnhub import FinnhubSource
from graph.operator import IDLE, Watermark
from tests.live.conftest import context, drain, frames, make_source
from tests.live.expected import binance_ticks, coinbase_ticks, finnhub_ticks
from tests.live.server import Drop, Expect, Feed, Hold, Play, Reject, Silent, wait_for

COINBASE_PRODUCTS = ["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR", "SKL-GBP"]


def _count(drained):
    return sum(batch.num_rows for batch in drained.ticks)


def test_dropped_connection_reconnects_resubscribes_and_loses_nothing(server):
    lines = frames("coinbase_exchange_capture_2021-04-17")
    feed = Feed(lines)
    # connection 0: 80 frames, then the TCP connection ends without a close frame;
    # connection 1 waits for the resubscription, pauses, then sends the rest.
    server.route("/feed", [Expect(1), Play(feed, count=80), Drop()], [Expect(1), Silent(0.5), Play(feed), Hold()])
    # a linger far longer than the test: only the drop itself can flush the first rows
    source = make_source(CoinbaseSource, url=server.url("/feed"), symbols=COINBASE_PRODUCTS, linger_ms=600_000, batch_rows=100_000)
    first_trades, first_quotes = coinbase_ticks(lines[:80])
    events = source.events()
    seen = 0
    deadline = time.monotonic() + 10
    while seen < len(first_trades) + len(first_quotes):  # rows of connection 0, flushed at the drop
        event = next(events)
        if isinstance(event, tuple) and event[0] == "ticks":
            seen += event[1].num_rows
        assert time.monotonic() < deadline, source.metrics()
    assert seen == len(first_trades) + len(first_quotes) and feed.position == 80
    parsed = lambda: source.metrics()["trades"] + source.metrics()["quotes"]  # noqa: E731
    rest = drain(source, lambda d: feed.done and parsed() == 214)  # the rest lingers until stop() flushes it
    rows = rest.rows()
    trades, quotes = coinbase_ticks(lines)
    assert seen + len(rows) == len(trades) + len(quotes) == 214  # nothing lost, nothing twice
    assert [r["seq"] for r in rows if r["price"] is not None] == [t["seq"] for t in trades[len(first_trades):]]
    connections = server.connections("/feed")
    assert len(connections) == 2
    assert connections[0].received == connections[1].received  # resubscribed, same request
    metrics = source.metrics()
    assert (metrics["reconnects"], metrics["drops"], metrics["connections"]) == (1, 1, 2)


def test_silent_connection_is_detected_and_reconnected(server):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed, count=120), Silent(20)], [Expect(1), Play(feed), Hold()])
    source = make_source(
        BinanceSource, url=server.url("/stream"), symbols=["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"],
        channels=["aggTrade", "bookTicker"], silence_timeout_s=0.3,
    )  # fmt: skip
    started = time.monotonic()
    out = drain(source, lambda d: feed.done and _count(d) >= 86, timeout_s=15)
    assert time.monotonic() - started < 10  # far less than the 20 s of silence
    trades, quotes = binance_ticks(lines)
    assert _count(out) == len(trades) + len(quotes)
    metrics = source.metrics()
    assert metrics["silent_disconnects"] == 1 and metrics["reconnects"] == 1
    assert len(server.connections("/stream")) == 2 and len(server.connections("/stream")[1].received) == 1


def _broken(line: str, **changes) -> str:
    message = json.loads(line)
    payload = message["data"]
    for key, value in changes.items():
        if value is _DELETE:
            del payload[key]
        else:
            payload[key] = value
    return json.dumps(message)


_DELETE = object()


def test_malformed_frames_are_quarantined_with_a_reason(server):
    trade, book, agg = frames("binance_spot_nautilus_fixtures")
    bad = [
        ("not_json", trade[:40]),
        ("bad_frame", "[1, 2, 3]"),
        ("missing_field", _broken(trade, p=_DELETE)),
        ("bad_number", _broken(trade, q="abc")),
        ("bad_number", _broken(trade, p="NaN")),
        ("bad_timestamp", _broken(trade, T="2021-12-12")),
        ("bad_frame", _broken(trade, m="yes")),
        ("unknown_message", json.dumps({"stream": "x", "data": {"hello": 1}})),
        ("bad_number", _broken(book, b=None) .replace('"b": null', '"b": true')),
    ]
    feed = Feed([trade, *(line for _, line in bad), book, agg])
    server.route("/stream", [Expect(1), Play(feed), Hold()])
    source = make_source(BinanceSource, url=server.url("/stream"), symbols=["ETHUSDT"], channels=["trade", "bookTicker"])
    out = drain(source, lambda d: feed.done and _count(d) >= 3 and sum(b.num_rows for b in d.quarantine) >= len(bad))
    assert _count(out) == 3  # the good frames around the bad ones all pass
    rows = out.quarantined()
    assert [r["reason"] for r in rows] == [reason for reason, _ in bad]
    assert [r["raw"] for r in rows] == [line for _, line in bad]
    assert all(r["source"] == "source/binance" for r in rows)
    assert len({(r["source"], r["row"], r["reason"]) for r in rows}) == len(rows)  # the table's primary key
    details = [r["detail"] for r in rows]
    assert details[0] == "frame is not valid JSON"
    assert details[2] == "trade has no field 'p'"
    assert details[3] == "q 'abc' is not a number"
    assert details[4] == "p 'NaN' is not a finite number"
    assert details[5] == "T '2021-12-12' is not a time in ms since the epoch"
    counts = source.metrics()["quarantined"]
    assert counts == {"not_json": 1, "bad_frame": 2, "missing_field": 1, "bad_number": 3, "bad_timestamp": 1, "unknown_message": 1}


def test_one_bad_item_of_a_finnhub_batch_is_quarantined_alone(server, monkeypatch):
    monkeypatch.setenv("FINNHUB_API_KEY", "k")
    line = frames("finnhub_trades")[2]  # the captured 9-trade frame
    message = json.loads(line)
    message["data"][4]["p"] = "oops"
    feed = Feed([json.dumps(message)])
    server.route("/f", [Expect(2), Play(feed), Hold()])
    source = make_source(FinnhubSource, url=server.url("/f"), symbols=["TSLA", "AAPL"])
    out = drain(source, lambda d: _count(d) >= 8 and d.quarantine)
    expected = finnhub_ticks([line])
    del expected[4]
    assert [{k: r[k] for k in ("symbol", "ts", "price", "size")} for r in out.rows()] == [
        {k: t[k] for k in ("symbol", "ts", "price", "size")} for t in expected
    ]
    (row,) = out.quarantined()
    assert (row["reason"], row["symbol"], row["detail"]) == ("bad_number", "TSLA", "p 'oops' is not a number")
    assert json.loads(row["raw"]) == message["data"][4]


def test_backoff_is_exponential_capped_and_jittered_reproducibly():
    backoff = Backoff(initial_s=0.5, max_s=4.0, multiplier=2.0, jitter=0.5, rng=random.Random(3))
    delays = [backoff.delay(attempt) for attempt in range(6)]
    rng = random.Random(3)
    expected = [base * (1 - 0.5 * rng.random()) for base in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0)]
    assert delays == expected
    assert all(base / 2 <= d <= base for d, base in zip(delays, (0.5, 1.0, 2.0, 4.0, 4.0, 4.0)))
    plain = Backoff(initial_s=0.5, max_s=4.0, multiplier=2.0, jitter=0.0, rng=random.Random(0))
    assert [plain.delay(a) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_failed_connects_back_off_then_give_up_after_max_reconnects(server):
    server.route("/stream", [Reject(503)])
    source = make_source(BinanceSource, url=server.url("/stream"), max_reconnects=2, reconnect_initial_s=0.05, reconnect_jitter=0)
    started = time.monotonic()
    with pytest.raises(FatalSourceError, match="3 consecutive connections to ws://127.0.0.1:\\d+/stream failed \\(max_reconnects 2\\)"):
        drain(source, lambda d: False, timeout_s=10)
    assert len(server.connections("/stream")) == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # waited 0.05 s then 0.1 s between attempts


def test_refused_handshake_is_fatal_without_retry(server):
    server.route("/stream", [Reject(403)])
    source = make_source(BinanceSource, url=server.url("/stream"))
    with pytest.raises(FatalSourceError, match="binance: ws://127.0.0.1:\\d+/stream refused the websocket handshake with HTTP 403"):
        drain(source, lambda d: False, timeout_s=10)
    assert len(server.connections("/stream")) == 1


def test_coinbase_gap_is_counted_logged_and_backfilled_over_rest(server, caplog):
    lines = frames("coinbase_exchange_capture_2021-04-17")
    missing_ids = {1568280, 1568281, 1568282}
    messages = [json.loads(line) for line in lines]
    removed = [m for m in messages if m.get("type") == "match" and m.get("trade_id") in missing_ids]
    assert len(removed) == 3 and {m["product_id"] for m in removed} == {"SKL-USD"}
    feed = Feed([line for line, m in zip(lines, messages) if m not in removed])
    server.route("/feed", [Expect(1), Play(feed), Hold()])
    rest = [{"time": m["time"], "trade_id": m["trade_id"], "price": m["price"], "size": m["size"], "side": m["side"]} for m in removed]
    server.rest("/products/SKL-USD/trades", lambda query: sorted(rest, key=lambda t: -t["trade_id"]))
    source = make_source(
        CoinbaseSource, url=server.url("/feed"), symbols=COINBASE_PRODUCTS, channels=["matches", "ticker"],
        backfill=True, rest_url=server.url("", "http"),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="tickgraph.live.coinbase"):
        out = drain(source, lambda d: feed.done and _count(d) >= 214 and source.metrics()["backfilled"] == 3)
    trades, _ = coinbase_ticks(lines)
    got = [r for r in out.rows() if r["price"] is not None]
    key = lambda r: (r["symbol"], r["seq"])  # noqa: E731
    assert sorted(({k: r[k] for k in ("symbol", "ts", "price", "size", "side", "seq")} for r in got), key=key) == sorted(trades, key=key)
    metrics = source.metrics()
    assert (metrics["gaps"], metrics["missing_trades"], metrics["backfilled"]) == (1, 3, 3)
    assert server.rest_requests["/products/SKL-USD/trades"] == [{"after": "1568283", "limit": "3"}]
    assert (
        f"coinbase SKL-USD trade id gap: 1568279 -> 1568283 (3 missing); backfill: GET "
        f"http://127.0.0.1:{server.port}/products/SKL-USD/trades?after=1568283&limit=3"
    ) in caplog.text


def test_binance_gap_backfill_request_and_recovered_trades(server):
    trade = json.loads(frames("binance_spot_nautilus_fixtures")[0])
    ids = [705291099, 705291100, 705291104]

    def frame(trade_id: int) -> str:
        data = {**trade["data"], "t": trade_id, "T": trade["data"]["T"] + trade_id - ids[0]}
        return json.dumps({"stream": trade["stream"], "data": data})

    feed = Feed([frame(i) for i in ids])
    server.route("/stream", [Expect(1), Play(feed), Hold()])
    history = [{"id": i, "price": "4150.0", "qty": "0.5", "quoteQty": "2075.0", "time": trade["data"]["T"] + i - ids[0], "isBuyerMaker": False, "isBestMatch": True} for i in range(705291101, 705291104)]
    server.rest("/api/v3/historicalTrades", lambda query: history)
    source = make_source(BinanceSource, url=server.url("/stream"), symbols=["ETHUSDT"], channels=["trade"], backfill=True, rest_url=server.url("", "http"))
    request = source.backfill_request("ETHUSDT", 705291101, 705291103)
    assert (request.method, request.url, request.params) == (
        "GET", f"http://127.0.0.1:{server.port}/api/v3/historicalTrades", {"symbol": "ETHUSDT", "fromId": 705291101, "limit": 3},
    )  # fmt: skip
    out = drain(source, lambda d: _count(d) >= 6)
    rows = out.rows()
    assert sorted(r["seq"] for r in rows) == list(range(705291099, 705291105)) and len(rows) == 6
    recovered = [r for r in rows if 705291101 <= r["seq"] <= 705291103]
    assert all(r["side"] == "buy" and r["price"] == 4150.0 and r["size"] == 0.5 for r in recovered)
    assert server.rest_requests["/api/v3/historicalTrades"] == [{"symbol": "ETHUSDT", "fromId": "705291101", "limit": "3"}]
    assert source.metrics()["missing_trades"] == 3


def test_events_never_block_and_idle_watermark_follows_the_wall_clock(server):
    server.route("/stream", [Expect(1), Hold()])
    ctx = context(allowed_lateness_ns=100_000_000, idle_timeout_ns=200_000_000)
    source = make_source(BinanceSource, ctx=ctx, url=server.url("/stream"), poll_ms=20)
    events = source.events()
    started = time.time_ns()
    slowest, watermarks = 0.0, []
    try:
        while time.time_ns() - started < 600_000_000:
            t0 = time.perf_counter()
            event = next(events)
            slowest = max(slowest, time.perf_counter() - t0)
            if isinstance(event, Watermark):
                watermarks.append((event.ts, time.time_ns()))
            else:
                assert event is IDLE
    finally:
        source.close()
    assert slowest < 0.1  # poll_ms is 20: never near the 50 ms bound, even on a busy machine
    assert watermarks, "an empty feed is idle from the start: its watermark follows the wall clock"
    first, seen_at = watermarks[0]
    assert started + 200_000_000 - 100_000_000 <= first <= seen_at - 100_000_000
    assert [w for w, _ in watermarks] == sorted({w for w, _ in watermarks})


def test_stop_flushes_everything_received_and_events_then_ends(server):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed), Hold()])
    source = make_source(
        BinanceSource, url=server.url("/stream"), symbols=["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"],
        channels=["aggTrade", "bookTicker"], linger_ms=600_000, batch_rows=100_000,
    )  # fmt: skip
    events = source.events()
    assert next(events) is IDLE  # starts the loop thread
    wait_for(lambda: source.metrics()["trades"] + source.metrics()["quotes"] == 86 and feed.done)
    assert source.metrics()["ticks"] == 0  # parsed, still lingering in the loop thread
    source.stop()
    rest = list(events)  # the generator ends after the flush
    batches = [e[1] for e in rest if isinstance(e, tuple) and e[0] == "ticks"]
    assert sum(b.num_rows for b in batches) == 86
    source.close()


def test_full_outbox_stops_reading_until_drained(server):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed), Hold()])
    source = make_source(
        BinanceSource, url=server.url("/stream"), symbols=["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"],
        channels=["aggTrade", "bookTicker"], linger_ms=0, max_queued_batches=2,
    )  # fmt: skip
    events = source.events()
    first = next(events)  # starts the loop thread; nothing more is pulled while the outbox fills
    first_rows = first[1].num_rows if isinstance(first, tuple) else 0
    wait_for(lambda: source.metrics()["backpressure_waits"] > 0)
    assert source.metrics()["queued"] <= 3  # capacity 2 (+ one flush in progress)
    assert not feed.done or source.metrics()["frames"] < len(lines)  # reading paused
    # Draining must let reading resume to the end: wait for every frame, not just the 86 ticks
    # (the last frames are depth updates that carry no tick, so they may still be in flight).
    everything_read = lambda d: first_rows + _count(d) >= 86 and source.metrics()["frames"] == len(lines)  # noqa: E731
    out = drain(source, everything_read, timeout_s=15, events=events)
    assert first_rows + _count(out) == 86 and source.metrics()["frames"] == len(lines)
