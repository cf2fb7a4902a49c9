"""Each connector, against the local server, turns recorded frames into the right canonical ticks.

Expectations come from ``tests/live/expected.py`` (the frames parsed independently);
every field of every tick is compared.
"""

from __future__ import annotations

import json
import time

import pytest

from actors.live.alpaca import AlpacaSource
from actors.live.base import FatalSourceError
from actors.live.binance import BinanceSource
from actors.live.coinbase import CoinbaseSource
from actors.live.finnhub import FinnhubSource
from graph.schemas import TICK
from tests.live.conftest import drain, frames, make_source
from tests.live.expected import alpaca_ticks, binance_ticks, coinbase_ticks, finnhub_ticks
from tests.live.server import Expect, Feed, Hold, Play, Send

TRADE_FIELDS = ("symbol", "ts", "price", "size", "side")
QUOTE_FIELDS = ("symbol", "bid", "ask", "bid_size", "ask_size")


def _trades(rows):
    return [row for row in rows if row["price"] is not None]


def _quotes(rows):
    return [row for row in rows if row["price"] is None]


def _assert_common(rows, provider):
    for row in rows:
        assert row["provider"] == provider and row["origin"] == "live"


def _all_read(source, lines):
    """True once the source has read every frame the server played (not only those carrying ticks)."""
    return source.metrics()["frames"] == len(lines)


def _played(feed, server, path):
    return lambda _: feed.done and server.connections(path)


def test_binance_combined_capture_aggtrade_and_book_ticker(server):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed), Hold()])
    symbols = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
    source = make_source(BinanceSource, url=server.url("/stream"), symbols=symbols, channels=["aggTrade", "bookTicker"])
    before = time.time_ns()
    out = drain(source, lambda d: _all_read(source, lines) and sum(b.num_rows for b in d.ticks) >= 86)
    after = time.time_ns()
    rows = out.rows()
    assert out.table().schema == TICK
    _assert_common(rows, "binance")
    trades, quotes = binance_ticks(lines)
    assert len(trades) == 2 and len(quotes) == 84
    got = _trades(rows)
    assert [{k: r[k] for k in TRADE_FIELDS} | {"seq": r["seq"]} for r in got] == trades
    got_quotes = _quotes(rows)
    assert [{k: r[k] for k in QUOTE_FIELDS} | {"seq": r["seq"]} for r in got_quotes] == [
        {k: q[k] for k in QUOTE_FIELDS} | {"seq": q["seq"]} for q in quotes
    ]
    # spot bookTicker has no timestamp: ts is the receive time, strictly increasing
    stamps = [r["ts"] for r in got_quotes]
    assert all(before <= ts <= after for ts in stamps) and stamps == sorted(set(stamps))
    # the subscription named every stream; depth and kline frames were ignored, not quarantined
    sent = json.loads(server.connections("/stream")[0].received[0])
    assert sent["method"] == "SUBSCRIBE" and sorted(sent["params"]) == sorted(
        f"{s.lower()}@{c}" for s in symbols for c in ("aggTrade", "bookTicker")
    )
    metrics = source.metrics()
    assert metrics["ignored"] == {"depthUpdate": 177, "kline": 2} and metrics["quarantined"] == {}
    # only exchange times move the watermark: the last aggTrade's T (no lateness configured)
    assert out.watermarks[-1] == trades[-1]["ts"]


def test_binance_nautilus_combined_fixture_sides_and_exchange_time(server):
    lines = frames("binance_spot_nautilus_fixtures")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed), Hold()])
    source = make_source(BinanceSource, url=server.url("/stream"), symbols=["ETHUSDT"], channels=["trade", "bookTicker"])
    rows = drain(source, lambda d: sum(b.num_rows for b in d.ticks) >= 3).rows()
    trades, quotes = binance_ticks(lines)
    assert [{k: r[k] for k in TRADE_FIELDS} | {"seq": r["seq"]} for r in _trades(rows)] == trades
    assert trades[0]["side"] == "sell" and trades[1]["side"] == "buy"  # m:true -> seller aggressor
    (quote,) = _quotes(rows)
    assert quote["ts"] == quotes[0]["ts"] == 1646199228121 * 1_000_000  # this frame carries T
    assert (quote["bid"], quote["ask"], quote["seq"]) == (4507.24, 4507.25, 12711621188)


def test_binance_raw_stream_docs_examples(server):
    lines = frames("binance_spot_docs_examples")
    feed = Feed(lines)
    server.route("/ws", [Expect(1), Play(feed), Hold()])
    source = make_source(BinanceSource, url=server.url("/ws"), symbols=["BNBBTC", "BNBUSDT"], channels=["trade", "bookTicker"])
    rows = drain(source, lambda d: sum(b.num_rows for b in d.ticks) >= 3).rows()
    trades, quotes = binance_ticks(lines)
    assert [{k: r[k] for k in TRADE_FIELDS} | {"seq": r["seq"]} for r in _trades(rows)] == trades
    assert [{k: r[k] for k in QUOTE_FIELDS} for r in _quotes(rows)] == [{k: q[k] for k in QUOTE_FIELDS} for q in quotes]


def test_coinbase_capture_matches_and_ticker(server):
    lines = frames("coinbase_exchange_capture_2021-04-17")
    feed = Feed(lines)
    server.route("/feed", [Expect(1), Play(feed), Hold()])
    products = ["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR", "SKL-GBP"]
    source = make_source(CoinbaseSource, url=server.url("/feed"), symbols=products, channels=["matches", "ticker"])
    out = drain(source, lambda d: _all_read(source, lines) and sum(b.num_rows for b in d.ticks) >= 214)
    rows = out.rows()
    _assert_common(rows, "coinbase")
    trades, quotes = coinbase_ticks(lines)
    assert (len(trades), len(quotes)) == (107, 107)
    # one trade per trade_id although every ticker repeats its match: sides are the maker's opposite
    assert [{k: r[k] for k in TRADE_FIELDS} | {"seq": r["seq"]} for r in _trades(rows)] == trades
    assert [{k: r[k] for k in (*QUOTE_FIELDS, "ts")} | {"seq": r["seq"]} for r in _quotes(rows)] == [
        {k: q[k] for k in (*QUOTE_FIELDS, "ts")} | {"seq": q["seq"]} for q in quotes
    ]
    # the ticker's side (taker) equals the tick side of the same trade
    taker = {(m["product_id"], m["trade_id"]): m["side"] for m in map(json.loads, lines) if m["type"] == "ticker"}
    assert all(taker[(r["symbol"], r["seq"])] == r["side"] for r in _trades(rows))
    sent = json.loads(server.connections("/feed")[0].received[0])
    assert sent == {"type": "subscribe", "product_ids": products, "channels": ["matches", "ticker"]}
    assert source.metrics()["ignored"] == {"subscriptions": 3}


def test_coinbase_ticker_only_emits_each_trade_once_with_taker_side(server):
    lines = frames("coinbase_exchange_capture_2021-04-17")
    feed = Feed([line for line in lines if json.loads(line)["type"] in ("ticker", "subscriptions")])
    server.route("/feed", [Expect(1), Play(feed), Hold()])
    source = make_source(CoinbaseSource, url=server.url("/feed"), symbols=["SKL-USD"], channels=["ticker"])
    rows = drain(source, lambda d: feed.done and sum(b.num_rows for b in d.ticks) >= 214).rows()
    trades, _ = coinbase_ticks(lines)
    assert [{k: r[k] for k in TRADE_FIELDS} | {"seq": r["seq"]} for r in _trades(rows)] == trades


def test_coinbase_docs_heartbeat_and_match(server):
    lines = frames("coinbase_exchange_docs_examples")
    feed = Feed(lines)
    server.route("/feed", [Expect(1), Play(feed), Hold()])
    source = make_source(CoinbaseSource, url=server.url("/feed"), symbols=["BTC-USD"])
    rows = drain(source, lambda d: _all_read(source, lines) and sum(b.num_rows for b in d.ticks) >= 1).rows()
    trades, _ = coinbase_ticks(lines)
    assert [{k: r[k] for k in TRADE_FIELDS} | {"seq": r["seq"]} for r in rows] == trades
    assert rows[0]["side"] == "buy" and rows[0]["ts"] == 1415348367028459000  # maker sold -> buyer aggressor
    assert source.metrics()["ignored"] == {"heartbeat": 1}


def test_finnhub_trades_ping_pong_and_error(server, monkeypatch):
    monkeypatch.setenv("FINNHUB_API_KEY", "test-finnhub-key")
    lines = frames("finnhub_trades")
    feed = Feed(lines)
    server.route("/finnhub", [Expect(2), Play(feed), Hold()])
    source = make_source(FinnhubSource, url=server.url("/finnhub"), symbols=["TSLA", "AAPL"])
    rows = drain(source, lambda d: _all_read(source, lines) and sum(b.num_rows for b in d.ticks) >= 10 and len(server.connections("/finnhub")[0].received) >= 3).rows()
    assert [{k: r[k] for k in TRADE_FIELDS} for r in rows] == finnhub_ticks(lines)
    assert [r["seq"] for r in rows] == list(range(10))  # per-source counter
    conn = server.connections("/finnhub")[0]
    assert conn.query == {"token": "test-finnhub-key"}
    assert [json.loads(m) for m in conn.received] == [
        {"type": "subscribe", "symbol": "TSLA"},
        {"type": "subscribe", "symbol": "AAPL"},
        {"type": "pong"},  # the answer to {"type":"ping"}
    ]
    metrics = source.metrics()
    assert metrics["provider_errors"] == 1 and metrics["ignored"] == {"ping": 1, "error": 1}


def _alpaca_script(lines):
    """connected -> (auth) -> authenticated -> (subscribe) -> subscription + data, as Alpaca does."""
    return [Send(lines[0]), Expect(1), Send(lines[1]), Expect(2), Send(lines[2]), Play(Feed(lines[3:])), Hold()]


@pytest.mark.parametrize("name", ["alpaca_stocks_v2_docs_2021", "alpaca_stocks_v2_docs_2023"])
def test_alpaca_handshake_trades_and_quotes(server, monkeypatch, name):
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key-id")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")
    lines = [line for line in frames(name) if '"error"' not in line]
    server.route("/v2/iex", _alpaca_script(lines))
    trades, quotes = alpaca_ticks(lines)
    source = make_source(AlpacaSource, url=server.url("/v2/iex"), symbols=["AAPL", "AMD"])
    rows = drain(source, lambda d: sum(b.num_rows for b in d.ticks) >= len(trades) + len(quotes)).rows()
    assert [{k: r[k] for k in TRADE_FIELDS} for r in _trades(rows)] == trades
    assert [{k: r[k] for k in (*QUOTE_FIELDS, "ts")} for r in _quotes(rows)] == quotes
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    received = [json.loads(m) for m in server.connections("/v2/iex")[0].received]
    assert received == [
        {"action": "auth", "key": "test-key-id", "secret": "test-secret"},
        {"action": "subscribe", "trades": ["AAPL", "AMD"], "quotes": ["AAPL", "AMD"]},
    ]


def test_alpaca_auth_failure_is_fatal_and_names_the_variables(server, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key-id")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "wrong-secret")
    lines = frames("alpaca_stocks_v2_docs_2021")
    server.route("/v2/iex", [Send(lines[0]), Expect(1), Send(lines[5]), Hold()])  # [{"T":"error","code":402,...}]
    source = make_source(AlpacaSource, url=server.url("/v2/iex"), symbols=["AAPL"])
    with pytest.raises(FatalSourceError, match="alpaca error 402 \\(auth failed\\): check APCA_API_KEY_ID") as info:
        drain(source, lambda d: False, timeout_s=10)
    assert "wrong-secret" not in str(info.value) and "test-key-id" not in str(info.value)
    assert len(server.connections("/v2/iex")) == 1  # not retried


def test_alpaca_connection_limit_reconnects(server, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key-id")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")
    lines = frames("alpaca_stocks_v2_docs_2021")
    data = [line for line in lines if '"error"' not in line]
    server.route("/v2/iex", [Send(lines[0]), Expect(1), Send(lines[7]), Hold()], _alpaca_script(data))  # 406 first
    source = make_source(AlpacaSource, url=server.url("/v2/iex"), symbols=["AAPL", "AMD"])
    rows = drain(source, lambda d: sum(b.num_rows for b in d.ticks) >= 4).rows()
    assert len(rows) == 4 and len(server.connections("/v2/iex")) == 2
    assert source.metrics()["reconnects"] == 1
