"""Alpaca market data v2 stock stream: trades and quotes (needs ``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``).

Endpoint ``wss://stream.data.alpaca.markets/v2/<feed>``, feed ``iex`` or ``sip``
(https://docs.alpaca.markets/docs/streaming-market-data). Every server frame is a
**JSON array** of messages, each with a type ``T``. The handshake, per connection:

    server [{"T":"success","msg":"connected"}]
    client {"action":"auth","key":KEY_ID,"secret":SECRET}
    server [{"T":"success","msg":"authenticated"}]      or [{"T":"error","code":402,...}]
    client {"action":"subscribe","trades":[...],"quotes":[...]}
    server [{"T":"subscription",...}], then data

Tick mapping (fields are read by key, never by position: key order changed in 2023):

=======  ================================================================================
``T``    tick
=======  ================================================================================
``t``    trade: symbol ``S``, price ``p``, size ``s`` (shares), ts = ``t`` (RFC-3339 with
         up to 9 fraction digits, exact ns), side null (not reported)
``q``    quote: bid ``bp``/``bs``, ask ``ap``/``as``, ts = ``t``; sizes as Alpaca sends
         them (the docs say round lots)
=======  ================================================================================

seq: Alpaca's trade id ``i`` is unique only per exchange (``x``), and quotes have none,
so seq is a per-source counter (0, 1, ...) that never resets on reconnect. Error
messages 401/402/404/405/409 (not authenticated, auth failed, auth timeout, symbol
limit, insufficient subscription) end the source with an error naming the key
variables (never their values); 406 (connection limit) reconnects; others are counted
and logged. Alpaca has no trade sequence, so no gap detection and no backfill.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

import aiohttp
import orjson
from pydantic import Field, field_validator, model_validator

from actors.live.base import LiveParams, LiveSource, ConnectionLost
from actors.live.keys import missing_key_message, require_key, resolve_key
from actors.live.parsing import FrameError, loads, number, require, rfc3339_ns, text
from graph.operator import OperatorContext
from graph.params import InputFile

__all__ = ["AlpacaSource", "AlpacaParams", "KEY_ID_VARIABLE", "SECRET_VARIABLE"]

#: Variables holding the API key id and secret (environment or keys file).
KEY_ID_VARIABLE = "APCA_API_KEY_ID"
SECRET_VARIABLE = "APCA_API_SECRET_KEY"
_FATAL_CODES = {401, 402, 404, 405, 409}
_RETRY_CODES = {406}


class AlpacaParams(LiveParams):
    """Params of the ``alpaca`` kind (see :class:`~actors.live.base.LiveParams` for the rest).

    Attributes:
        feed: ``iex`` (free) or ``sip``; picks the default ``url``.
        url: defaults to ``wss://stream.data.alpaca.markets/v2/<feed>``.
        channels: ``trades`` and/or ``quotes``.
        keys_file: a ``keys.env`` file consulted for variables missing from the environment.
        handshake_timeout_s: limit for connected + authenticated after connecting.
    """

    feed: Literal["iex", "sip"] = "iex"
    url: str = ""
    channels: list[Literal["trades", "quotes"]] = Field(default_factory=lambda: ["trades", "quotes"], min_length=1)
    keys_file: InputFile | None = None
    handshake_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("url"):
            data = {**data, "url": f"wss://stream.data.alpaca.markets/v2/{data.get('feed', 'iex')}"}
        return data

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"channels must be unique, got {value}")
        return value

    @model_validator(mode="after")
    def _keys_present(self) -> AlpacaParams:
        missing = [name for name in (KEY_ID_VARIABLE, SECRET_VARIABLE) if resolve_key(name, self.keys_file) is None]
        if missing:
            raise ValueError("; ".join(missing_key_message(name, "alpaca", self.keys_file) for name in missing))
        return self


class AlpacaSource(LiveSource):
    """Alpaca v2 stock trades and quotes as TICK rows (see the module docstring)."""

    Params: ClassVar[type[AlpacaParams]] = AlpacaParams
    provider: ClassVar[str] = "alpaca"

    def __init__(self, params: AlpacaParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._key_id = require_key(KEY_ID_VARIABLE, "alpaca", params.keys_file)  # before any connection
        self._secret = require_key(SECRET_VARIABLE, "alpaca", params.keys_file)
        self._secrets.extend([self._key_id, self._secret])
        self._seq = 0
        self._state: str | None = None

    def provider_state(self) -> int:
        """The seq counter (this feed has no trade ids): restored so seqs stay unique."""
        return self._seq

    def restore_provider_state(self, state: int | None) -> None:
        """Continue the seq counter of a snapshot."""
        if state is not None:
            self._seq = int(state)

    def subscribe_messages(self) -> list[dict[str, Any]]:
        """The ``subscribe`` action for the configured channels."""
        message: dict[str, Any] = {"action": "subscribe"}
        for channel in self.params.channels:
            message[channel] = list(self.params.symbols)
        return [message]

    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Wait for ``connected``, authenticate, wait for ``authenticated``, subscribe."""
        self._state = None
        try:
            await asyncio.wait_for(self._until(ws, "connected"), self.params.handshake_timeout_s)
            auth = {"action": "auth", "key": self._key_id.reveal(), "secret": self._secret.reveal()}
            await ws.send_str(orjson.dumps(auth).decode())
            await asyncio.wait_for(self._until(ws, "authenticated"), self.params.handshake_timeout_s)
        except asyncio.TimeoutError:
            raise ConnectionLost(f"no '{'connected' if self._state is None else 'authenticated'}' message within {self.params.handshake_timeout_s} s") from None
        await super().on_open(ws)

    async def _until(self, ws: aiohttp.ClientWebSocketResponse, state: str) -> None:
        while self._state != state:
            await self.process(ws, await self.receive_text(ws))

    def _refused_message(self, status: int) -> str:
        return (
            f"alpaca: {self.display_url()} refused the websocket handshake with HTTP {status}: "
            f"check {KEY_ID_VARIABLE} and {SECRET_VARIABLE}"
        )

    def handle_frame(self, frame: str, recv_ns: int) -> None:
        """Parse one frame: a JSON array of control, trade and quote messages."""
        messages = loads(frame)
        if not isinstance(messages, list):
            raise FrameError("bad_frame", f"expected a JSON array, got {type(messages).__name__}")
        for index, message in enumerate(messages):
            try:
                self._message(message)
            except FrameError as error:
                symbol = message.get("S") if isinstance(message, dict) and isinstance(message.get("S"), str) else None
                self.reject(error, orjson.dumps(message).decode(), recv_ns, index, symbol)

    def _message(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise FrameError("bad_frame", f"message is {type(message).__name__}, not an object")
        kind = require(message, "T", "message")
        if kind == "t":
            symbol = text(require(message, "S", "trade"), "S")
            price = number(require(message, "p", "trade"), "p")
            size = number(require(message, "s", "trade"), "s")
            ts = rfc3339_ns(require(message, "t", "trade"), "t")
            self.trade(symbol, ts, self._next_seq(), price, size, None)
        elif kind == "q":
            symbol = text(require(message, "S", "quote"), "S")
            bid = number(require(message, "bp", "quote"), "bp")
            bid_size = number(require(message, "bs", "quote"), "bs")
            ask = number(require(message, "ap", "quote"), "ap")
            ask_size = number(require(message, "as", "quote"), "as")
            ts = rfc3339_ns(require(message, "t", "quote"), "t")
            self.quote(symbol, ts, self._next_seq(), bid, ask, bid_size, ask_size)
        elif kind == "success":
            self._state = message.get("msg")
            self.ignore("success")
        elif kind == "error":
            self._error(message)
        elif isinstance(kind, str):
            self.ignore(kind)
        else:
            raise FrameError("bad_frame", f"T {kind!r} is not a string")

    def _error(self, message: dict[str, Any]) -> None:
        code, text_ = message.get("code"), message.get("msg")
        self._counts["provider_errors"] += 1
        if code in _FATAL_CODES:
            self.fail(f"alpaca error {code} ({text_}): check {KEY_ID_VARIABLE}, {SECRET_VARIABLE} and the subscription")
        if code in _RETRY_CODES:
            raise ConnectionLost(f"alpaca error {code} ({text_})")
        self._log.warning("alpaca: error message %s: %s", code, text_)
        self.ignore("error")

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq
