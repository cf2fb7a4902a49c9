"""WebSocket fan-out of bars: one stream per (symbol, timeframe), a bounded send queue per client.

    hub = BarHub(backfill_bars=2000, client_buffer=1 << 20)
    hub.publish(bars)                                    # a BAR batch from the graph (service loop)
    client = hub.subscribe("AMZN", "1m", transport, backfill=100)

Messages (``service/models.py: BarMessage``) are built once per bar row: ``BAR_FORMING``
for a ``forming`` row, ``BAR_CONFIRMED``, ``BAR_CORRECTED`` and ``BAR_PARTIAL`` (a bar
the graph did not see whole: open at a stop, or begun before a live session) for the others. A server's
WebSocket frames are not masked, so each message is also framed once (a text frame,
RFC 6455 section 5.2) and the same bytes go to every client of the stream, written to
its transport directly: per delivery the hub appends a reference to a list, and writes
each client's frames of a chunk in one call. A stream's rows arrive in the bar engine's
order (one shard per symbol, FIFO edges), which per (symbol, timeframe) is event-time
order: forming updates of a bar, its confirmation, then the next bar.

Parity: every stream keeps, per publishing run (``run``: a replay job's id, or the api
node's own run), the SHA-256 chain of ``parity/canonical.py`` (stream name ``bars``, the
BAR fields without ``status``, floats at full precision (the parity node's default), the same genesis as
the parity node) over that run's confirmed and corrected rows in order; each message
carries its ``run`` and the chain *after* its row (forming messages: the chain so far),
so a new run's messages start a new chain. So a
client recomputes a stream's hash from the messages it recorded, and the confirmed bars
of all streams of a run, ordered as ``parity/ordering.py`` orders them, hash to the
replay's parity node's ``bars`` hash (checked by the browser test).

Backpressure: publishing never waits. :meth:`BarHub.publish` queues the batch; one pump
task turns queued batches into messages in chunks of :data:`CHUNK_ROWS` rows and yields
to the event loop between chunks. A client's queue is its transport's unsent bytes (the
kernel takes what the socket buffer holds; the rest waits in the transport); when more
than ``client_buffer`` bytes stay unsent after a chunk, or its socket has taken none of
its bytes for ``stall_s`` while some wait (a write timeout), the client is too
slow: it is dropped
from the hub at once, its ``slow`` event set, and the route closes it with 1008 (policy
violation), counted by ``on_slow``. Neither the graph nor the other clients ever wait.

Not thread-safe: call every method on the service's event loop (producers in other
threads use ``loop.call_soon_threadsafe``); :meth:`BarHub.backlog` may be polled.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from graph.times import iso_ns
from graph.schemas import BAR, BAR_CONFIRMED, BAR_CORRECTED, BAR_FORMING, BAR_PARTIAL
from parity.canonical import DEFAULT_FLOAT_BITS, StreamHasher, canonical_fields, encode_rows

__all__ = ["BarHub", "Client", "MESSAGE_TYPES", "CHUNK_ROWS", "iso_ns", "text_frame"]

#: Bar status -> WebSocket message type.
MESSAGE_TYPES = {
    BAR_FORMING: "BAR_FORMING", BAR_CONFIRMED: "BAR_CONFIRMED", BAR_CORRECTED: "BAR_CORRECTED", BAR_PARTIAL: "BAR_PARTIAL",
}
_BAR_FIELDS = [name for name in BAR.names if name not in ("symbol", "timeframe")]
#: Bar rows turned into messages between two yields to the event loop.
CHUNK_ROWS = 128


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame carrying ``payload`` (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + struct.pack(">H", size) + payload
    return b"\x81\x7f" + struct.pack(">Q", size) + payload


@dataclass(eq=False)
class Client:
    """One WebSocket subscriber.

    Attributes:
        symbol, timeframe: the stream.
        transport: the connection's asyncio transport (frames are written to it).
        slow: set once the client fell ``client_buffer`` bytes behind (to be closed with 1008).
        sent: messages written to it.
    """

    symbol: str
    timeframe: str
    transport: Any
    slow: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    _frames: list = field(default_factory=list)
    _written: int = 0  # bytes handed to the transport
    _accepted: int = 0  # of those, bytes its socket took (written - unsent) at the last check
    _progress_at: float = 0.0


@dataclass
class _Chain:
    hasher: StreamHasher
    seq: int = 0


@dataclass
class _Stream:
    chains: dict = field(default_factory=dict)  # run -> _Chain
    last_run: str | None = None
    recent: deque = field(default_factory=deque)  # frames of confirmed/corrected messages
    clients: set = field(default_factory=set)


class BarHub:
    """Fans bar rows out to WebSocket clients (see the module docstring).

    Args:
        backfill_bars: confirmed/corrected messages kept per stream for late subscribers.
        client_buffer: most unsent bytes per client before it is dropped as too slow.
        stall_s: a client whose socket took none of its unsent bytes for this long is
            dropped as too slow at the next message for it.
        clock: monotonic seconds (injectable for tests).
        float_bits: significant bits of floats in the parity chain (the parity node's default).
        on_slow: called with each client dropped as too slow.
        on_message: called with the number of client deliveries per chunk (metrics).

    Raises:
        ValueError: ``client_buffer`` < 1.
    """

    def __init__(
        self,
        backfill_bars: int = 2000,
        client_buffer: int = 1 << 20,
        stall_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        float_bits: int = DEFAULT_FLOAT_BITS,
        on_slow: Callable[[Client], None] | None = None,
        on_message: Callable[[int], None] | None = None,
    ) -> None:
        if client_buffer < 1:
            raise ValueError(f"client_buffer must be >= 1 byte, got {client_buffer}")
        self.backfill_bars = backfill_bars
        self.client_buffer = client_buffer
        self.stall_s = stall_s
        self._clock = clock
        self.float_bits = float_bits
        self._fields = canonical_fields(BAR)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._on_slow = on_slow
        self._on_message = on_message
        self.bars_received = 0
        self._inbox: deque[tuple[pa.RecordBatch, str]] = deque()
        self._pump: asyncio.Task | None = None

    # -- producers -----------------------------------------------------------------------
    def publish(self, bars: pa.RecordBatch, run: str = "") -> None:
        """Queue a BAR batch (any statuses, symbols, timeframes) of run ``run`` for its streams' clients.

        On the event loop the batch is fanned out by the pump task, in arrival order; with
        no running loop (tests, tools) it is delivered before returning.
        """
        if bars.num_rows == 0:
            return
        self._inbox.append((bars, run))
        if self._pump is not None and not self._pump.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            while self._inbox:
                self.deliver(*self._inbox.popleft())
            return
        self._pump = loop.create_task(self._drain())

    @property
    def pending(self) -> int:
        """Bar rows queued and not yet turned into messages."""
        return sum(batch.num_rows for batch, _ in self._inbox)

    def backlog(self) -> int:
        """Bytes written but not yet taken by the clients' sockets, plus bar rows not yet
        turned into messages (0: everything was handed to the kernel). Safe to poll from
        another thread (it only reads sizes)."""
        unsent = 0
        for stream in list(self._streams.values()):
            for client in list(stream.clients):
                if not client.transport.is_closing():
                    unsent += client.transport.get_write_buffer_size()
        return unsent + self.pending

    async def _drain(self) -> None:
        while self._inbox:
            bars, run = self._inbox.popleft()
            for start in range(0, bars.num_rows, CHUNK_ROWS):
                self.deliver(bars.slice(start, CHUNK_ROWS), run)
                await asyncio.sleep(0)

    def deliver(self, bars: pa.RecordBatch, run: str = "") -> int:
        """Turn every row of a BAR batch of run ``run`` into a message and write it to its stream's clients now.

        Returns:
            Messages delivered.
        """
        if bars.num_rows == 0:
            return 0
        encoded = encode_rows(bars, self._fields, self.float_bits)
        touched: dict[int, tuple[_Stream, Client]] = {}
        for row, canonical in zip(bars.to_pylist(), encoded):
            stream = self._stream(row["symbol"], row["timeframe"])
            chain = stream.chains.get(run)
            if chain is None:
                chain = stream.chains[run] = _Chain(StreamHasher("bars", self._fields, self.float_bits, checkpoint_every=1 << 62))
            stream.last_run = run
            status = row["status"]
            if status != BAR_FORMING:
                chain.hasher.update([canonical])
            chain.seq += 1
            bar = {name: row[name] for name in _BAR_FIELDS}
            bar["time"] = iso_ns(row["ts"])
            frame = text_frame(orjson.dumps({
                "type": MESSAGE_TYPES[status], "symbol": row["symbol"],
                "timeframe": row["timeframe"], "run": run, "seq": chain.seq, "hash": chain.hasher.hexdigest, "bar": bar,
            }))  # fmt: skip
            if status != BAR_FORMING and self.backfill_bars:
                stream.recent.append(frame)
                if len(stream.recent) > self.backfill_bars:
                    stream.recent.popleft()
            for client in stream.clients:
                client._frames.append(frame)
                touched[id(client)] = (stream, client)
        delivered = sum(self._flush(stream, client) for stream, client in touched.values())
        self.bars_received += bars.num_rows
        if self._on_message is not None and delivered:
            self._on_message(delivered)
        return delivered

    def _flush(self, stream: _Stream, client: Client) -> int:
        """Write a client's frames of this chunk in one call; drop it if more than
        ``client_buffer`` bytes stay unsent (what its socket did not take)."""
        frames, client._frames = client._frames, []
        transport = client.transport
        if transport.is_closing():
            stream.clients.discard(client)
            return 0
        if self._behind(client):
            self._drop_slow(stream, client)
            return 0
        data = b"".join(frames)
        transport.write(data)
        client._written += len(data)
        client.sent += len(frames)
        if transport.get_write_buffer_size() > self.client_buffer:
            self._drop_slow(stream, client)
        return len(frames)

    def _behind(self, client: Client) -> bool:
        """Over ``client_buffer`` unsent bytes, or none of them taken for ``stall_s``."""
        unsent, now = client.transport.get_write_buffer_size(), self._clock()
        accepted = client._written - unsent
        if unsent == 0 or accepted > client._accepted:  # its socket took bytes since the last check
            client._progress_at = now
        client._accepted = accepted
        return unsent > self.client_buffer or now - client._progress_at > self.stall_s

    def sweep(self) -> int:
        """Drop every client that is behind (see :meth:`_behind`) even when no message is
        coming for it (the write timeout between bursts); returns how many. The service
        calls it periodically."""
        dropped = 0
        for stream in list(self._streams.values()):
            for client in list(stream.clients):
                if client.transport.is_closing():
                    stream.clients.discard(client)
                elif self._behind(client):
                    self._drop_slow(stream, client)
                    dropped += 1
        return dropped

    # -- consumers -----------------------------------------------------------------------
    def subscribe(self, symbol: str, timeframe: str, transport: Any, backfill: int = 0) -> Client:
        """A new client of (symbol, timeframe) writing to ``transport``; it is first sent the
        stream's last ``backfill`` confirmed/corrected messages (as many as are kept)."""
        stream = self._stream(symbol, timeframe)
        client = Client(symbol, timeframe, transport, _progress_at=self._clock())
        recent = list(stream.recent)[-backfill:] if backfill > 0 else []
        if recent:
            data = b"".join(recent)
            transport.write(data)
            client._written += len(data)
            client.sent += len(recent)
        stream.clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        """Stop sending to ``client`` (idempotent)."""
        stream = self._streams.get((client.symbol, client.timeframe))
        if stream is not None:
            stream.clients.discard(client)

    # -- state ---------------------------------------------------------------------------
    def parity(self, symbol: str, timeframe: str) -> tuple[str, int, str] | None:
        """``(run, rows hashed, chain hash)`` of a stream's latest run, or None if none published."""
        stream = self._streams.get((symbol, timeframe))
        if stream is None or stream.last_run is None:
            return None
        hasher = stream.chains[stream.last_run].hasher
        return stream.last_run, hasher.messages, hasher.hexdigest

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
            stream = self._streams[(symbol, timeframe)] = _Stream()
        return stream

    def _drop_slow(self, stream: _Stream, client: Client) -> None:
        stream.clients.discard(client)
        if not client.slow.is_set():
            client.slow.set()
            if self._on_slow is not None:
                self._on_slow(client)
