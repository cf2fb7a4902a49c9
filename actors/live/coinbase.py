"""Coinbase Exchange websocket feed (keyless): ``matches`` and ``ticker`` channels.

Endpoint ``wss://ws-feed.exchange.coinbase.com``; after every (re)connect the source
sends ``{"type": "subscribe", "product_ids": [...], "channels": [...]}``
(https://docs.cdp.coinbase.com/exchange/websocket-feed/channels). Product ids are the
tick symbols as given (``BTC-USD``). Prices and sizes are decimal strings; ``time`` is
RFC-3339 UTC with µs precision, converted exactly to ns.

Tick mapping:

=========================  ============================================================
message                    tick
=========================  ============================================================
``match``, ``last_match``  trade: price, size, ts = ``time``, seq = ``trade_id``. The
                           message's ``side`` is the **maker's** side, so the aggressor
                           is the opposite: ``side: "buy"`` (a resting buy was hit) is a
                           ``sell`` tick.
``ticker``                 quote: ``best_bid``/``best_ask`` (and ``best_bid_size``/
                           ``best_ask_size`` when present), ts = ``time``, seq =
                           ``sequence``. Its trade (``trade_id``, ``price``,
                           ``last_size``, ``side`` = the **taker's** side) is emitted only
                           if ``matches`` is not subscribed, and never twice: every
                           ticker repeats its match's ``trade_id``.
``heartbeat``              nothing (keep-alive; subscribe to it so a quiet product
                           does not look like a silent connection)
=========================  ============================================================

Subscription snapshots: right after subscribing Coinbase sends, per product, a
``last_match`` and a first ``ticker`` describing the last trade before the
subscription (possibly minutes old). Their ticks are emitted (a trade already emitted
is skipped by ``trade_id``) but do not advance the watermark, so a stale snapshot of
one product cannot make another product's snapshot late. Trade ids are consecutive
per product: a jump is a gap, backfilled over
``GET /products/<id>/trades?after=<last missing + 1>&limit=<n>`` (Coinbase's ``after``
cursor returns older trades; at most 1,000; REST ``side`` is also the maker's side).
An ``error`` message ``Failed to subscribe`` ends the source (a bad product id cannot
be fixed by reconnecting); other errors are counted and logged.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, field_validator

from actors.live.base import LiveParams, LiveSource, RestRequest
from actors.live.parsing import FrameError, integer, loads, number, require, rfc3339_ns, text
from graph.operator import OperatorContext

__all__ = ["CoinbaseSource", "CoinbaseParams"]

_OPPOSITE = {"buy": "sell", "sell": "buy"}
_REST_LIMIT = 1000
_REMEMBERED_TRADES = 4096  # trade ids remembered per product to drop repeats


class CoinbaseParams(LiveParams):
    """Params of the ``coinbase`` kind (see :class:`~actors.live.base.LiveParams` for the rest).

    Attributes:
        symbols: product ids, e.g. ``[BTC-USD, ETH-USD]``.
        channels: any of ``matches``, ``ticker``, ``heartbeat``.
        rest_url: REST base for backfills.
    """

    url: str = "wss://ws-feed.exchange.coinbase.com"
    symbols: list[str] = Field(default_factory=lambda: ["BTC-USD", "ETH-USD"], min_length=1)
    channels: list[Literal["matches", "ticker", "heartbeat"]] = Field(
        default_factory=lambda: ["matches", "ticker", "heartbeat"], min_length=1
    )
    rest_url: str = "https://api.exchange.coinbase.com"

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"channels must be unique, got {value}")
        return value


class _RecentIds:
    """The last few thousand trade ids of one product (set + FIFO)."""

    __slots__ = ("ids", "order")

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.order: deque[int] = deque()

    def add(self, trade_id: int) -> bool:
        """Remember ``trade_id``; False if it was already there."""
        if trade_id in self.ids:
            return False
        self.ids.add(trade_id)
        self.order.append(trade_id)
        if len(self.order) > _REMEMBERED_TRADES:
            self.ids.discard(self.order.popleft())
        return True


class CoinbaseSource(LiveSource):
    """Coinbase Exchange trades (matches) and best bid/ask (ticker) as TICK rows."""

    Params: ClassVar[type[CoinbaseParams]] = CoinbaseParams
    provider: ClassVar[str] = "coinbase"

    def __init__(self, params: CoinbaseParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._recent: dict[str, _RecentIds] = {}
        self._awaiting_first_ticker: set[str] = set(params.symbols)
        self._trades_from_ticker = "matches" not in params.channels

    def subscribe_messages(self) -> list[dict[str, Any]]:
        """One ``subscribe`` message for every product and channel."""
        return [{"type": "subscribe", "product_ids": list(self.params.symbols), "channels": list(self.params.channels)}]

    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Expect a new subscription snapshot (first ticker per product), then subscribe."""
        self._awaiting_first_ticker = set(self.params.symbols)
        await super().on_open(ws)

    def handle_frame(self, frame: str, recv_ns: int) -> None:
        """Parse one feed message (see the module docstring for the mapping)."""
        message = loads(frame)
        if not isinstance(message, dict):
            raise FrameError("bad_frame", f"expected a JSON object, got {type(message).__name__}")
        kind = require(message, "type", "message")
        if kind in ("match", "last_match"):
            self._match(message, kind)
        elif kind == "ticker":
            self._ticker(message)
        elif kind == "error":
            self._counts["provider_errors"] += 1
            detail = f"{message.get('message')}: {message.get('reason')}"
            if str(message.get("message", "")).startswith("Failed to subscribe"):
                self.fail(f"coinbase rejected the subscription: {detail}")
            self._log.warning("coinbase: error message: %s", detail)
            self.ignore("error")
        elif isinstance(kind, str):
            self.ignore(kind)
        else:
            raise FrameError("bad_frame", f"type {kind!r} is not a string")

    def _match(self, message: dict[str, Any], kind: str) -> None:
        product = text(require(message, "product_id", kind), "product_id")
        trade_id = integer(require(message, "trade_id", kind), "trade_id")
        price = number(require(message, "price", kind), "price")
        size = number(require(message, "size", kind), "size")
        maker_side = self._side(require(message, "side", kind))
        ts = rfc3339_ns(require(message, "time", kind), "time")
        if not self._remember(product, trade_id):
            self.ignore("repeated_trade")
            return
        self.check_sequence(product, "trade", trade_id)
        self.trade(product, ts, trade_id, price, size, _OPPOSITE[maker_side], advances_watermark=kind == "match")

    def _ticker(self, message: dict[str, Any]) -> None:
        product = text(require(message, "product_id", "ticker"), "product_id")
        sequence = integer(require(message, "sequence", "ticker"), "sequence")
        ts = rfc3339_ns(require(message, "time", "ticker"), "time")
        bid = number(require(message, "best_bid", "ticker"), "best_bid")
        ask = number(require(message, "best_ask", "ticker"), "best_ask")
        bid_size = _optional_number(message, "best_bid_size")
        ask_size = _optional_number(message, "best_ask_size")
        trade = None
        if self._trades_from_ticker:
            trade_id = integer(require(message, "trade_id", "ticker"), "trade_id")
            price = number(require(message, "price", "ticker"), "price")
            size = number(require(message, "last_size", "ticker"), "last_size")
            taker_side = self._side(require(message, "side", "ticker"))
            trade = (trade_id, price, size, taker_side)
        snapshot = product in self._awaiting_first_ticker
        self._awaiting_first_ticker.discard(product)
        self.quote(product, ts, sequence, bid, ask, bid_size, ask_size, advances_watermark=not snapshot)
        if trade is not None:
            trade_id, price, size, taker_side = trade
            if self._remember(product, trade_id):
                self.check_sequence(product, "trade", trade_id)
                self.trade(product, ts, trade_id, price, size, taker_side, advances_watermark=not snapshot)

    @staticmethod
    def _side(value: Any) -> str:
        if value not in _OPPOSITE:
            raise FrameError("bad_frame", f"side {value!r} is not 'buy' or 'sell'")
        return value

    def _remember(self, product: str, trade_id: int) -> bool:
        recent = self._recent.get(product)
        if recent is None:
            recent = self._recent[product] = _RecentIds()
        return recent.add(trade_id)

    def backfill_request(self, symbol: str, first_id: int, last_id: int) -> RestRequest:
        """``GET /products/<symbol>/trades?after=<last_id + 1>&limit=<n>``: the trades before ``last_id + 1``."""
        limit = min(last_id - first_id + 1, _REST_LIMIT)
        url = f"{self.params.rest_url.rstrip('/')}/products/{symbol}/trades"
        return RestRequest("GET", url, {"after": last_id + 1, "limit": limit})

    def parse_backfill(self, symbol: str, payload: Any, first_id: int, last_id: int, recv_ns: int) -> int:
        """Trades of a ``/products/<id>/trades`` response (``time, trade_id, price, size, side``)."""
        if not isinstance(payload, list):
            raise FrameError("bad_frame", f"backfill response is {type(payload).__name__}, not a list")
        found = 0
        for index, item in enumerate(sorted(payload, key=_trade_id_or_zero)):
            try:
                if not isinstance(item, dict):
                    raise FrameError("bad_frame", f"backfill item is {type(item).__name__}, not an object")
                trade_id = integer(require(item, "trade_id", "backfill trade"), "trade_id")
                if not first_id <= trade_id <= last_id:
                    continue
                price = number(require(item, "price", "backfill trade"), "price")
                size = number(require(item, "size", "backfill trade"), "size")
                maker_side = self._side(require(item, "side", "backfill trade"))
                ts = rfc3339_ns(require(item, "time", "backfill trade"), "time")
            except FrameError as error:
                self.reject(error, repr(item), recv_ns, index)
                continue
            if self._remember(symbol, trade_id):
                self.trade(symbol, ts, trade_id, price, size, _OPPOSITE[maker_side], advances_watermark=False)
                found += 1
        return found


def _optional_number(message: dict[str, Any], name: str) -> float | None:
    value = message.get(name)
    return None if value is None else number(value, name)


def _trade_id_or_zero(item: Any) -> int:
    value = item.get("trade_id") if isinstance(item, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
