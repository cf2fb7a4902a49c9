"""The historical providers: backtest / tickgraph Parquet and the store (read-only, real files
written by tickgraph's own sinks), and the Alpaca and Finnhub REST backfills against a local
HTTP server on 127.0.0.1 that answers like the vendors' documented endpoints (never the internet)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from actors.parquet_sink import ParquetSink, ParquetSinkParams
from actors.store import SqlStore, SqlStoreParams
from graph.operator import OperatorContext
from pre_paper.cache import HistoryCache
from pre_paper.history import HistoryStatus
from pre_paper.loader import ensure_history
from pre_paper.providers import ProviderError
from pre_paper.providers.alpaca import AlpacaBars, AlpacaBarsSpec
from pre_paper.providers.finnhub import FinnhubCandles, FinnhubCandlesSpec
from pre_paper.providers.parquet import ParquetProvider
from pre_paper.providers.store import StoreProvider
from tests.prepaper import bar_batch, manifest_1m, read_only, stamp, tree_digest


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


class RestServer:
    """aiohttp on 127.0.0.1 (ephemeral port, own thread): ``handle(request) -> (status, json, headers)``."""

    def __init__(self, handle: Callable[[web.Request], tuple[int, Any, dict]]) -> None:
        self.handle = handle
        self.requests: list[dict[str, Any]] = []

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers)})
        status, body, headers = self.handle(request)
        return web.json_response(body, status=status, headers=headers)

    def __enter__(self) -> RestServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", self._serve)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.SockSite(self.runner, sock).start()
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()), daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def decisions() -> pd.DataFrame:
    return pd.read_parquet(manifest_1m().parent / "decisions.parquet")


def test_backtest_parquet_returns_the_backtests_bars(tmp_path):
    provider = ParquetProvider(manifest_1m().parent / "decisions.parquet")
    frame = provider.fetch_bars("AMZN", "1m", ts("2012-06-21T10:00:00-04:00"), ts("2012-06-21T10:30:00-04:00"))
    expected = decisions().query("symbol == 'AMZN' and ts >= @stamp('2012-06-21T10:00:00-04:00') and ts < @stamp('2012-06-21T10:30:00-04:00')")
    assert frame.index.tz is not None and frame.index.name == "ts"
    np.testing.assert_array_equal(frame.index.as_unit("ns").asi8, expected["ts"].to_numpy())
    np.testing.assert_array_equal(frame["close"].to_numpy(), expected["close"].to_numpy())
    assert provider.fetch_bars("AMZN", "5m", ts("2012-06-21T10:00:00-04:00"), ts("2012-06-21T10:30:00-04:00")).empty


def test_tickgraph_bar_parquet_and_store_are_read_read_only(tmp_path):
    """Bars written by tickgraph's own parquet_sink and sql_store, then read through a
    read-only directory and a read-only SQLite connection."""
    table = pq.read_table(manifest_1m().parent / "decisions.parquet")
    amzn = table.filter(pc.equal(table["symbol"], "AMZN")).sort_by("ts")
    bars = {k: amzn[k].to_numpy() for k in ("ts", "open", "high", "low", "close", "volume")}
    bars["vwap"] = bars["close"]
    batch = bar_batch(bars, "AMZN", "1m")
    sink = ParquetSink(ParquetSinkParams.model_validate({"path": str(tmp_path / "parquet")}), OperatorContext("parquet"))
    sink.on_batch("bars", batch)
    sink.on_eof()
    sink.close()
    url = f"sqlite:///{tmp_path / 'store' / 'tickgraph.db'}"
    (tmp_path / "store").mkdir()
    store = SqlStore(SqlStoreParams.model_validate({"url": url}), OperatorContext("store"))
    store.on_batch("bars", batch)
    store.on_eof()
    store.close()
    before = {d: tree_digest(tmp_path / d) for d in ("parquet", "store")}
    start, end = ts("2012-06-21T13:00:00-04:00"), ts("2012-06-21T13:45:00-04:00")
    expected = amzn.filter(pc.and_(pc.greater_equal(amzn["ts"], start.value), pc.less(amzn["ts"], end.value)))
    with read_only(tmp_path / "parquet"), read_only(tmp_path / "store"):
        for provider in (ParquetProvider(tmp_path / "parquet" / "bars"), StoreProvider(url)):
            frame = provider.fetch_bars("AMZN", "1m", start, end)
            np.testing.assert_array_equal(frame.index.as_unit("ns").asi8, expected["ts"].to_numpy())
            np.testing.assert_array_equal(frame["open"].to_numpy(), expected["open"].to_numpy())
            np.testing.assert_array_equal(frame["vwap"].to_numpy(), expected["close"].to_numpy())
    assert {d: tree_digest(tmp_path / d) for d in ("parquet", "store")} == before
    with pytest.raises(ProviderError, match="does not exist"):
        StoreProvider(f"sqlite:///{tmp_path / 'none.db'}").fetch_bars("AMZN", "1m", start, end)


def alpaca_bars(start: str, minutes: int, price: float = 180.0) -> list[dict]:
    """Bars as Alpaca's v2 endpoint writes them (``t`` RFC-3339 Z, ``o h l c v n vw``)."""
    t0 = pd.Timestamp(start)
    return [
        {"t": (t0 + pd.Timedelta(minutes=i)).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"), "o": price + i, "h": price + i + 0.5,
         "l": price + i - 0.5, "c": price + i + 0.25, "v": 100 + i, "n": 3, "vw": price + i + 0.1}
        for i in range(minutes)
    ]  # fmt: skip


@pytest.fixture
def alpaca_keys(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "key-id-123")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "secret-456")


def test_alpaca_pages_headers_and_the_range(alpaca_keys):
    rows = alpaca_bars("2024-03-05T09:00:00-05:00", 120)  # 09:00-11:00 ET: pre-market included, as IEX sends

    def handle(request: web.Request):
        token = request.query.get("page_token")
        page = rows[:70] if token is None else rows[70:]
        return 200, {"bars": page, "symbol": "AMZN", "next_page_token": None if token else "p2"}, {}

    with RestServer(handle) as server:
        provider = AlpacaBars(AlpacaBarsSpec(kind="alpaca", url=server.url))
        frame = provider.fetch_bars("AMZN", "1m", ts("2024-03-05T09:10:00-05:00"), ts("2024-03-05T10:50:00-05:00"))
    assert [r["query"].get("page_token") for r in server.requests] == [None, "p2"]
    first = server.requests[0]
    assert first["path"] == "/v2/stocks/AMZN/bars"
    assert {k: first["query"][k] for k in ("timeframe", "start", "end", "feed", "adjustment")} == {
        "timeframe": "1Min", "start": "2024-03-05T14:10:00.000000000Z", "end": "2024-03-05T15:49:59.999999999Z", "feed": "iex", "adjustment": "raw",
    }  # fmt: skip
    assert first["headers"]["APCA-API-KEY-ID"] == "key-id-123" and first["headers"]["APCA-API-SECRET-KEY"] == "secret-456"
    assert len(frame) == 100 and frame.index[0] == ts("2024-03-05T09:10:00-05:00") and frame.index[-1] == ts("2024-03-05T10:49:00-05:00")
    assert frame["close"].iloc[0] == 180.0 + 10 + 0.25 and frame["vwap"].iloc[0] == 180.0 + 10 + 0.1


def test_alpaca_retries_429_and_never_shows_a_key(alpaca_keys):
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"message": "too many requests"}, {"Retry-After": "0"}
        return 200, {"bars": alpaca_bars("2024-03-05T10:00:00-05:00", 5), "next_page_token": None}, {}

    with RestServer(flaky) as server:
        frame = AlpacaBars(AlpacaBarsSpec(kind="alpaca", url=server.url)).fetch_bars("AMZN", "1m", ts("2024-03-05T10:00:00-05:00"), ts("2024-03-05T10:05:00-05:00"))
    assert calls["n"] == 2 and len(frame) == 5
    with RestServer(lambda r: (403, {"message": "forbidden key key-id-123 / secret-456"}, {})) as server:
        with pytest.raises(ProviderError) as info:
            AlpacaBars(AlpacaBarsSpec(kind="alpaca", url=server.url)).fetch_bars("AMZN", "1m", ts("2024-03-05T10:00:00-05:00"), ts("2024-03-05T10:05:00-05:00"))
    text = str(info.value)
    assert text.startswith(f"alpaca: HTTP 403 from {server.url}/v2/stocks/AMZN/bars") and "key-id-123" not in text and "secret-456" not in text
    with pytest.raises(ProviderError, match="alpaca: no 1s bars"):
        AlpacaBars(AlpacaBarsSpec(kind="alpaca", url="http://127.0.0.1:9")).fetch_bars("AMZN", "1s", ts("2024-03-05T10:00:00Z"), ts("2024-03-05T10:01:00Z"))


def test_finnhub_candles_no_data_and_errors(monkeypatch):
    monkeypatch.setenv("FINNHUB_API_KEY", "fh-token-789")
    t0 = stamp("2024-03-05T15:00:00Z") // 10**9

    def handle(request):
        if request.query["symbol"] == "NONE":
            return 200, {"s": "no_data"}, {}
        if request.query["symbol"] == "FAIL":
            return 401, {"error": "Invalid API key fh-token-789"}, {}
        t = [t0 + 60 * i for i in range(6)]
        return 200, {"s": "ok", "t": t, "o": [1.0] * 6, "h": [2.0] * 6, "l": [0.5] * 6, "c": [1.5 + i for i in range(6)], "v": [10.0] * 6}, {}

    with RestServer(handle) as server:
        spec = FinnhubCandlesSpec(kind="finnhub", url=server.url, market="crypto", symbols={"BTCUSDT": "BINANCE:BTCUSDT"})
        provider = FinnhubCandles(spec)
        frame = provider.fetch_bars("BTCUSDT", "1m", ts("2024-03-05T15:01:00Z"), ts("2024-03-05T15:05:00Z"))
        assert provider.fetch_bars("NONE", "1m", ts("2024-03-05T15:00:00Z"), ts("2024-03-05T15:05:00Z")).empty
        with pytest.raises(ProviderError) as info:
            provider.fetch_bars("FAIL", "1m", ts("2024-03-05T15:00:00Z"), ts("2024-03-05T15:05:00Z"))
    request = server.requests[0]
    assert request["path"] == "/crypto/candle" and request["headers"]["X-Finnhub-Token"] == "fh-token-789"
    assert request["query"] == {"symbol": "BINANCE:BTCUSDT", "resolution": "1", "from": str(t0 + 60), "to": str(t0 + 299)}
    assert [int(v) for v in frame.index.as_unit("s").asi8] == [t0 + 60 * i for i in (1, 2, 3, 4)] and list(frame["close"]) == [2.5, 3.5, 4.5, 5.5]
    assert "HTTP 401" in str(info.value) and "fh-token-789" not in str(info.value)


def test_a_rest_backfill_fills_the_cache_with_session_bars(tmp_path, alpaca_keys):
    """ensure_history with Alpaca: the 41 missing slots are asked for, the answer's bars outside
    them dropped, the rest cached as 'backfill'."""
    rows = alpaca_bars("2024-03-05T09:00:00-05:00", 90)  # 09:00 .. 10:29 ET, pre-market included
    with RestServer(lambda r: (200, {"bars": rows, "next_page_token": None}, {})) as server:
        cache = HistoryCache(tmp_path / "cache.db")
        result = ensure_history("AMZN", "1m", "1m", None, ts("2024-03-05T10:30:00-05:00"), None,
                                AlpacaBars(AlpacaBarsSpec(kind="alpaca", url=server.url)), True, calendar="XNYS",
                                required_bars=41, cache=cache)  # fmt: skip
    assert result.status is HistoryStatus.SUFFICIENT and result.fetch_success
    cached = cache.read("AMZN", "1m")
    assert len(cached) == 41 and cached.ts[0] == stamp("2024-03-05T09:49:00-05:00") and cached.ts[-1] == stamp("2024-03-05T10:29:00-05:00")
    assert set(cached.source) == {"backfill"}
    assert server.requests[0]["query"]["start"] == "2024-03-05T14:49:00.000000000Z"


def test_vendor_bars_are_aligned_to_the_calendar():
    from pre_paper.calendars import trading_calendar

    xnys = trading_calendar("XNYS")
    got = xnys.align("1m", np.array([stamp("2024-03-05T08:00:00-05:00"), stamp("2024-03-05T09:30:00-05:00"), stamp("2024-03-05T16:30:00-05:00")]))
    assert got.tolist() == [-1, stamp("2024-03-05T09:30:00-05:00"), -1]  # extended hours have no NYSE slot
    # Alpaca's 1Day bar is stamped at New York midnight; the bar engine's 1d bar opens with the session
    daily = xnys.align("1d", np.array([stamp("2024-03-05T00:00:00-05:00"), stamp("2024-03-09T00:00:00-05:00")]))
    assert daily.tolist() == [stamp("2024-03-05T09:30:00-05:00"), -1]  # a Saturday has no session
