"""Binance spot market streams (keyless): ``<symbol>@trade``, ``@aggTrade`` and ``@bookTicker``.

Endpoint and frames (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams):

* ``url`` decides the frame shape: ``wss://stream.binance.com:9443/ws`` sends bare payloads
  (raw streams), ``.../stream`` wraps each as ``{"stream": name, "data": payload}``
  (combined streams). Both are parsed, frame by frame. After every (re)connect the
  source sends ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade", ...], "id": 1}``
  (valid on both endpoints); the ``{"result": null, "id": 1}`` acknowledgement is
  counted as ignored.
* Symbols are upper case in ticks (``BTCUSDT``, as in the payload's ``s``) and lower
  case in stream names; ``symbols`` params are upper-cased.

Tick mapping:

==============  ====================================================================
frame           tick
==============  ====================================================================
``trade``       trade: price ``p``, size ``q``, ts = ``T`` (trade time, ms -> ns),
                seq = trade id ``t``; side: ``m: true`` means the buyer was the maker,
                so the aggressor was the seller -> ``sell``; ``m: false`` -> ``buy``
``aggTrade``    the same with seq = aggregate trade id ``a`` (one row per aggregate)
``bookTicker``  quote: bid ``b``/``B``, ask ``a``/``A``, seq = book update id ``u``; spot
                frames carry **no timestamp**, so ts = the receive time from
                ``ctx.clock_ns`` (ns UTC, strictly increasing per source): quote ticks'
                ts are receive times and never advance the watermark. A frame that
                carries ``T`` (the futures shape) uses it as an exchange time.
==============  ====================================================================

``trade`` and ``aggTrade`` report the same trades (with different ids), so a source
subscribes to one of them. Trade ids are consecutive per symbol: a jump is a gap,
backfilled over ``GET /api/v3/historicalTrades?symbol=&fromId=&limit=`` (``aggTrade``:
``/api/v3/aggTrades``); at most 1,000 trades per request.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from actors.live.base import LiveParams, LiveSource, RestRequest
from actors.live.parsing import FrameError, integer, loads, ms_to_ns, number, require, text

__all__ = ["BinanceSource", "BinanceParams"]

_CHANNELS = ("trade", "aggTrade", "bookTicker")
_REST_LIMIT = 1000


class BinanceParams(LiveParams):
    """Params of the ``binance`` kind (see :class:`~actors.live.base.LiveParams` for the rest).

    Attributes:
        url: ``wss://stream.binance.com:9443/stream`` (combined) or ``.../ws`` (raw).
        symbols: spot symbols, e.g. ``[BTCUSDT, ETHUSDT]`` (upper-cased).
        channels: any of ``trade``, ``aggTrade``, ``bookTicker`` (not both trade kinds).
        rest_url: REST base for backfills.
    """

    url: str = "wss://stream.binance.com:9443/stream"
    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"], min_length=1)
    channels: list[Literal["trade", "aggTrade", "bookTicker"]] = Field(
        default_factory=lambda: ["trade", "bookTicker"], min_length=1
    )
    rest_url: str = "https://api.binance.com"

    @field_validator("symbols")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [symbol.upper() for symbol in value]

    @field_validator("channels")
    @classmethod
    def _one_trade_kind(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"channels must be unique, got {value}")
        if "trade" in value and "aggTrade" in value:
            raise ValueError("subscribe to 'trade' or 'aggTrade', not both: they report the same trades twice")
        return value


class BinanceSource(LiveSource):
    """Binance spot trades and best bid/ask as TICK rows (see the module docstring)."""

    Params: ClassVar[type[BinanceParams]] = BinanceParams
    provider: ClassVar[str] = "binance"

    def streams(self) -> list[str]:
        """Stream names subscribed to, e.g. ``["btcusdt@trade", "btcusdt@bookTicker"]``."""
        return [f"{symbol.lower()}@{channel}" for symbol in self.params.symbols for channel in self.params.channels]

    def subscribe_messages(self) -> list[dict[str, Any]]:
        """One ``SUBSCRIBE`` request for every stream."""
        return [{"method": "SUBSCRIBE", "params": self.streams(), "id": 1}]

    def handle_frame(self, frame: str, recv_ns: int) -> None:
        """Parse a raw or combined-stream frame (see the module docstring for the mapping)."""
        message = loads(frame)
        if not isinstance(message, dict):
            raise FrameError("bad_frame", f"expected a JSON object, got {type(message).__name__}")
        payload = message
        if "stream" in message and "data" in message:
            payload = message["data"]
            if not isinstance(payload, dict):
                raise FrameError("bad_frame", f"combined-stream data is {type(payload).__name__}, not an object")
        if "id" in payload and ("result" in payload or "error" in payload):
            if "error" in payload:
                self._counts["provider_errors"] += 1
                self._log.warning("binance: request %s rejected: %s", payload.get("id"), payload.get("error"))
            self.ignore("response")
            return
        event = payload.get("e")
        if event in ("trade", "aggTrade"):
            self._trade(payload, event)
        elif event == "bookTicker" or (event is None and {"u", "s", "b", "a"} <= payload.keys()):
            self._book_ticker(payload, recv_ns)
        elif isinstance(event, str):
            self.ignore(event)
        else:
            raise FrameError("unknown_message", "frame is neither a trade, an aggTrade, a bookTicker nor a response")

    def _trade(self, payload: dict[str, Any], event: str) -> None:
        id_field = "t" if event == "trade" else "a"
        symbol = text(require(payload, "s", event), "s")
        seq = integer(require(payload, id_field, event), id_field)
        price = number(require(payload, "p", event), "p")
        size = number(require(payload, "q", event), "q")
        ts = ms_to_ns(require(payload, "T", event), "T")
        buyer_is_maker = require(payload, "m", event)
        if not isinstance(buyer_is_maker, bool):
            raise FrameError("bad_frame", f"m {buyer_is_maker!r} is not a boolean")
        self.check_sequence(symbol, event, seq)
        self.trade(symbol, ts, seq, price, size, "sell" if buyer_is_maker else "buy")

    def _book_ticker(self, payload: dict[str, Any], recv_ns: int) -> None:
        what = "bookTicker"
        symbol = text(require(payload, "s", what), "s")
        seq = integer(require(payload, "u", what), "u")
        bid = number(require(payload, "b", what), "b")
        bid_size = number(require(payload, "B", what), "B")
        ask = number(require(payload, "a", what), "a")
        ask_size = number(require(payload, "A", what), "A")
        exchange_time = payload.get("T")
        ts = ms_to_ns(exchange_time, "T") if exchange_time is not None else recv_ns
        self.quote(symbol, ts, seq, bid, ask, bid_size, ask_size, advances_watermark=exchange_time is not None)

    def backfill_request(self, symbol: str, first_id: int, last_id: int) -> RestRequest:
        """``GET /api/v3/historicalTrades`` (or ``aggTrades`` when subscribed to aggTrade) from ``first_id``."""
        path = "/api/v3/aggTrades" if "aggTrade" in self.params.channels else "/api/v3/historicalTrades"
        limit = min(last_id - first_id + 1, _REST_LIMIT)
        return RestRequest("GET", self.params.rest_url.rstrip("/") + path, {"symbol": symbol, "fromId": first_id, "limit": limit})

    def parse_backfill(self, symbol: str, payload: Any, first_id: int, last_id: int, recv_ns: int) -> int:
        """Trades of a historicalTrades/aggTrades response with ids in ``first_id..last_id``.

        historicalTrades items: ``id, price, qty, time, isBuyerMaker``; aggTrades items:
        ``a, p, q, T, m``. Malformed items are quarantined.
        """
        if not isinstance(payload, list):
            raise FrameError("bad_frame", f"backfill response is {type(payload).__name__}, not a list")
        aggregate = "aggTrade" in self.params.channels
        keys = ("a", "p", "q", "T", "m") if aggregate else ("id", "price", "qty", "time", "isBuyerMaker")
        found = 0
        for index, item in enumerate(payload):
            try:
                if not isinstance(item, dict):
                    raise FrameError("bad_frame", f"backfill item is {type(item).__name__}, not an object")
                id_key, price_key, size_key, time_key, maker_key = keys
                seq = integer(require(item, id_key, "backfill trade"), id_key)
                if not first_id <= seq <= last_id:
                    continue
                price = number(require(item, price_key, "backfill trade"), price_key)
                size = number(require(item, size_key, "backfill trade"), size_key)
                ts = ms_to_ns(require(item, time_key, "backfill trade"), time_key)
                maker = require(item, maker_key, "backfill trade")
                if not isinstance(maker, bool):
                    raise FrameError("bad_frame", f"{maker_key} {maker!r} is not a boolean")
            except FrameError as error:
                self.reject(error, repr(item), recv_ns, index)
                continue
            self.trade(symbol, ts, seq, price, size, "sell" if maker else "buy", advances_watermark=False)
            found += 1
        return found
