"""WebSocket fan-out of bars: one stream per (symbol, timeframe), a bounded queue per client.

    hub = BarHub(backfill_bars=2000, client_queue=1024)
    hub.publish(bars)                        # a BAR batch from the graph (service loop thread)
    client = hub.subscribe("AMZN", "1m", backfill=100)
    text = await client.queue.get()          # JSON text of one BarMessage

Messages (``service/models.py: BarMessage``) are built once per bar row and shared by
every client of the stream: ``BAR_FORMING`` for a ``forming`` row, ``BAR_CONFIRMED`` and
``BAR_CORRECTED`` for the others. A stream's rows arrive in the bar engine's order (one
shard per symbol, FIFO edges), which per (symbol, timeframe) is event-time order:
forming updates of a bar, its confirmation, then the next bar.

Parity: every stream keeps the SHA-256 chain of ``parity/canonical.py`` (stream name
``bars``, the BAR fields without ``status``, floats rounded to 32 significant bits, the
same genesis as the parity node) over its confirmed and corrected rows in order; each
message carries the chain *after* its row (forming messages: the chain so far). So a
client recomputes a stream's hash from the messages it recorded, and the confirmed bars
of all streams of a run, ordered as ``parity/ordering.py`` orders them, hash to the
replay's parity node's ``bars`` hash (checked by the browser test).

Backpressure: publishing never waits. :meth:`BarHub.publish` queues the batch; one pump
task turns queued batches into messages in chunks of :data:`CHUNK_ROWS` rows and yields
to the event loop between chunks, so the clients' writer tasks send while a burst is
being fanned out. Each client has a queue of ``client_queue`` messages (plus its
backfill); when a message does not fit, the client is too slow: it is dropped from the
hub at once and its connection closed with 1008 (policy violation), counted by
``on_slow``. Neither the graph nor the other clients ever wait for it. (Messages are
shared ``str`` objects, so a queue costs a pointer per message, not a copy.)

Not thread-safe: call every method on the service's event loop (producers in other
threads use ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from db.export import _iso as iso_ns
from graph.schemas import BAR, BAR_CONFIRMED, BAR_CORRECTED, BAR_FORMING
from parity.canonical import DEFAULT_FLOAT_BITS, StreamHasher, canonical_fields, encode_rows

__all__ = ["BarHub", "Client", "MESSAGE_TYPES", "iso_ns"]

#: Bar status -> WebSocket message type.
MESSAGE_TYPES = {BAR_FORMING: "BAR_FORMING", BAR_CONFIRMED: "BAR_CONFIRMED", BAR_CORRECTED: "BAR_CORRECTED"}
_BAR_FIELDS = [name for name in BAR.names if name not in ("symbol", "timeframe")]
#: Bar rows turned into messages between two yields to the event loop.
CHUNK_ROWS = 128


@dataclass(eq=False)
class Client:
    """One WebSocket subscriber: its queue of message texts and whether it overflowed.

    Attributes:
        symbol, timeframe: the stream.
        queue: JSON texts to send, oldest first (bounded).
        slow: set once a message did not fit (the connection is to be closed with 1008).
    """

    symbol: str
    timeframe: str
    queue: asyncio.Queue
    slow: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Stream:
    hasher: StreamHasher
    seq: int = 0
    recent: deque = field(default_factory=deque)  # confirmed/corrected message texts
    clients: set = field(default_factory=set)


class BarHub:
    """Fans bar rows out to WebSocket clients (see the module docstring).

    Args:
        backfill_bars: confirmed/corrected messages kept per stream for late subscribers.
        client_queue: queued messages per client before it is dropped as too slow
            (>= :data:`CHUNK_ROWS`: a chunk is queued before any writer runs).
        float_bits: significant bits of floats in the parity chain (the parity node's default).
        on_slow: called with each client dropped as too slow (to close it and count it).
        on_message: called with the number of client deliveries per publish (metrics).
    """

    def __init__(
        self,
        backfill_bars: int = 2000,
        client_queue: int = 1024,
        float_bits: int = DEFAULT_FLOAT_BITS,
        on_slow: Callable[[Client], None] | None = None,
        on_message: Callable[[int], None] | None = None,
    ) -> None:
        if client_queue < CHUNK_ROWS:  # one chunk of one stream must fit a reading client's queue
            raise ValueError(f"client_queue must be >= {CHUNK_ROWS} (the hub's chunk), got {client_queue}")
        self.backfill_bars = backfill_bars
        self.client_queue = client_queue
        self.float_bits = float_bits
        self._fields = canonical_fields(BAR)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._on_slow = on_slow
        self._on_message = on_message
        self.bars_received = 0
        self._inbox: deque[pa.RecordBatch] = deque()
        self._pump: asyncio.Task | None = None

    # -- producers -----------------------------------------------------------------------
    def publish(self, bars: pa.RecordBatch) -> None:
        """Queue a BAR batch (any statuses, symbols, timeframes) for its streams' clients.

        On the event loop the batch is fanned out by the pump task, in arrival order; with
        no running loop (tests, tools) it is delivered before returning.
        """
        if bars.num_rows == 0:
            return
        self._inbox.append(bars)
        if self._pump is not None and not self._pump.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            while self._inbox:
                self.deliver(self._inbox.popleft())
            return
        self._pump = loop.create_task(self._drain())

    def backlog(self) -> int:
        """Messages not yet taken by clients' writers, plus bar rows not yet turned into messages.

        Safe to poll from another thread (it only reads lengths)."""
        queued = sum(client.queue.qsize() for stream in list(self._streams.values()) for client in list(stream.clients))
        return queued + self.pending

    @property
    def pending(self) -> int:
        """Bar rows queued and not yet turned into messages."""
        return sum(batch.num_rows for batch in self._inbox)

    async def _drain(self) -> None:
        while self._inbox:
            bars = self._inbox.popleft()
            for start in range(0, bars.num_rows, CHUNK_ROWS):
                self.deliver(bars.slice(start, CHUNK_ROWS))
                await asyncio.sleep(0)

    def deliver(self, bars: pa.RecordBatch) -> int:
        """Turn every row of a BAR batch into a message and queue it for its stream's clients now.

        Returns:
            Messages delivered to client queues.
        """
        if bars.num_rows == 0:
            return 0
        encoded = encode_rows(bars, self._fields, self.float_bits)
        delivered = 0
        for row, canonical in zip(bars.to_pylist(), encoded):
            stream = self._stream(row["symbol"], row["timeframe"])
            status = row["status"]
            if status != BAR_FORMING:
                stream.hasher.update([canonical])
            stream.seq += 1
            bar = {name: row[name] for name in _BAR_FIELDS}
            bar["time"] = iso_ns(row["ts"])
            text = orjson.dumps(
                {
                    "type": MESSAGE_TYPES.get(status, "BAR_CONFIRMED"),
                    "symbol": row["symbol"],
                    "timeframe": row["timeframe"],
                    "seq": stream.seq,
                    "hash": stream.hasher.hexdigest,
                    "bar": bar,
                }
            ).decode()
            if status != BAR_FORMING and self.backfill_bars:
                stream.recent.append(text)
                if len(stream.recent) > self.backfill_bars:
                    stream.recent.popleft()
            for client in list(stream.clients):
                try:
                    client.queue.put_nowait(text)
                    delivered += 1
                except asyncio.QueueFull:
                    self._drop_slow(stream, client)
        self.bars_received += bars.num_rows
        if self._on_message is not None and delivered:
            self._on_message(delivered)
        return delivered

    # -- consumers -----------------------------------------------------------------------
    def subscribe(self, symbol: str, timeframe: str, backfill: int = 0) -> Client:
        """A new client of (symbol, timeframe); its queue starts with the last ``backfill``
        confirmed/corrected messages of the stream (as many as are kept)."""
        stream = self._stream(symbol, timeframe)
        recent = list(stream.recent)[-backfill:] if backfill > 0 else []
        client = Client(symbol, timeframe, asyncio.Queue(maxsize=self.client_queue + len(recent)))
        for text in recent:
            client.queue.put_nowait(text)
        stream.clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        """Stop sending to ``client`` (idempotent)."""
        stream = self._streams.get((client.symbol, client.timeframe))
        if stream is not None:
            stream.clients.discard(client)

    # -- state ---------------------------------------------------------------------------
    def parity(self, symbol: str, timeframe: str) -> tuple[int, str] | None:
        """``(rows hashed, chain hash)`` of a stream, or None if the hub has not seen it."""
        stream = self._streams.get((symbol, timeframe))
        return None if stream is None else (stream.hasher.messages, stream.hasher.hexdigest)

    def symbols(self) -> set[str]:
        """Symbols with a stream (published or subscribed)."""
        return {symbol for symbol, _ in self._streams}

    def stats(self) -> dict[str, Any]:
        """``streams``, ``clients`` and ``bars_received``."""
        return {
            "streams": len(self._streams),
            "clients": sum(len(s.clients) for s in self._streams.values()),
            "bars_received": self.bars_received,
        }

    def _stream(self, symbol: str, timeframe: str) -> _Stream:
        stream = self._streams.get((symbol, timeframe))
        if stream is None:
            stream = self._streams[(symbol, timeframe)] = _Stream(
                StreamHasher("bars", self._fields, self.float_bits, checkpoint_every=1 << 62)
            )
        return stream

    def _drop_slow(self, stream: _Stream, client: Client) -> None:
        stream.clients.discard(client)
        if not client.slow.is_set():
            client.slow.set()
            if self._on_slow is not None:
                self._on_slow(client)
