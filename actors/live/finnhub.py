"""Finnhub trades websocket (needs ``FINNHUB_API_KEY``).

Endpoint ``wss://ws.finnhub.io?token=<key>`` (https://finnhub.io/docs/api/websocket-trades):
the key travels in the URL, so the source dials :meth:`FinnhubSource.connect_url` but
logs and raises only :meth:`~actors.live.base.LiveSource.display_url` (the URL as
configured, without the token). After every (re)connect it sends one
``{"type": "subscribe", "symbol": S}`` per symbol.

Frames:

* ``{"type": "trade", "data": [{"p", "s", "t", "v", "c"}, ...]}``: one trade tick per
  item (a frame may mix symbols): price ``p``, size ``v``, ts = ``t`` (ms -> ns), side
  null (Finnhub does not say who was the aggressor). Items with ``v`` = 0 (price
  updates of some FX/crypto venues) are kept as zero-size trades. Finnhub has no trade
  id: seq is a per-source counter that starts at 0 and never resets on reconnect (a
  reset would make the normalizer drop new trades as replays of old seqs). A malformed
  item is quarantined alone (``row`` = receive time + item index); the others pass.
* ``{"type": "ping"}``: the documented keep-alive; answered with ``{"type": "pong"}``.
* ``{"type": "error", "msg": ...}``: counted and logged. An HTTP 401/403 on the
  handshake (a bad key) ends the source with an error naming the variable.

Finnhub has no trade ids, so no gap detection and no backfill.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import orjson
from pydantic import model_validator

from actors.live.base import LiveParams, LiveSource
from actors.live.keys import missing_key_message, require_key, resolve_key
from actors.live.parsing import FrameError, loads, ms_to_ns, number, require, text
from graph.operator import OperatorContext
from graph.params import InputFile

__all__ = ["FinnhubSource", "FinnhubParams", "KEY_VARIABLE"]

#: The environment (or keys file) variable holding the API key.
KEY_VARIABLE = "FINNHUB_API_KEY"


class FinnhubParams(LiveParams):
    """Params of the ``finnhub`` kind (see :class:`~actors.live.base.LiveParams` for the rest).

    Attributes:
        url: ``wss://ws.finnhub.io`` (the token is appended by the source).
        symbols: e.g. ``[AAPL, "BINANCE:BTCUSDT"]``.
        keys_file: a ``keys.env`` file (relative to the graph file) consulted when
            ``FINNHUB_API_KEY`` is not in the environment.
    """

    url: str = "wss://ws.finnhub.io"
    keys_file: InputFile | None = None

    @model_validator(mode="after")
    def _key_present(self) -> FinnhubParams:
        if resolve_key(KEY_VARIABLE, self.keys_file) is None:
            raise ValueError(missing_key_message(KEY_VARIABLE, "finnhub", self.keys_file))
        return self


class FinnhubSource(LiveSource):
    """Finnhub trades as TICK rows (see the module docstring)."""

    Params: ClassVar[type[FinnhubParams]] = FinnhubParams
    provider: ClassVar[str] = "finnhub"

    def __init__(self, params: FinnhubParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._key = require_key(KEY_VARIABLE, "finnhub", params.keys_file)  # before any connection
        self._secrets.append(self._key)
        self._seq = 0

    def provider_state(self) -> int:
        """The seq counter (this feed has no trade ids): restored so seqs stay unique."""
        return self._seq

    def restore_provider_state(self, state: int | None) -> None:
        """Continue the seq counter of a snapshot."""
        if state is not None:
            self._seq = int(state)

    def connect_url(self) -> str:
        """``url`` with ``token=<key>`` appended (never logged)."""
        separator = "&" if "?" in self.params.url else "?"
        return f"{self.params.url}{separator}token={quote(self._key.reveal(), safe='')}"

    def subscribe_messages(self) -> list[dict[str, Any]]:
        """One ``subscribe`` message per symbol."""
        return [{"type": "subscribe", "symbol": symbol} for symbol in self.params.symbols]

    def _refused_message(self, status: int) -> str:
        return (
            f"finnhub: {self.display_url()} refused the websocket handshake with HTTP {status}: "
            f"check the API key in {KEY_VARIABLE}"
        )

    def handle_frame(self, frame: str, recv_ns: int) -> None:
        """Parse one frame: a trade batch, a ping or an error."""
        message = loads(frame)
        if not isinstance(message, dict):
            raise FrameError("bad_frame", f"expected a JSON object, got {type(message).__name__}")
        kind = require(message, "type", "message")
        if kind == "trade":
            data = require(message, "data", "trade message")
            if not isinstance(data, list):
                raise FrameError("bad_frame", f"trade data is {type(data).__name__}, not a list")
            for index, item in enumerate(data):
                try:
                    self._trade(item)
                except FrameError as error:
                    symbol = item.get("s") if isinstance(item, dict) and isinstance(item.get("s"), str) else None
                    self.reject(error, orjson.dumps(item).decode(), recv_ns, index, symbol)
        elif kind == "ping":
            self.reply({"type": "pong"})
            self.ignore("ping")
        elif kind == "error":
            self._counts["provider_errors"] += 1
            self._log.warning("finnhub: error message: %s", message.get("msg"))
            self.ignore("error")
        elif isinstance(kind, str):
            self.ignore(kind)
        else:
            raise FrameError("bad_frame", f"type {kind!r} is not a string")

    def _trade(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise FrameError("bad_frame", f"trade item is {type(item).__name__}, not an object")
        symbol = text(require(item, "s", "trade"), "s")
        price = number(require(item, "p", "trade"), "p")
        size = number(require(item, "v", "trade"), "v")
        ts = ms_to_ns(require(item, "t", "trade"), "t")
        seq = self._seq
        self._seq += 1
        self.trade(symbol, ts, seq, price, size, None)
