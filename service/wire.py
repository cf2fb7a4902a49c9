"""How a graph publishes its bars into a running service: the ingest WebSocket.

A replay started by the service (``POST /v1/replay/ticks``) runs as its own graph on the
Ray cluster; an ``api`` node with ``publish_url`` (added by ``service/graphs.py``) sends
that graph's bars to the service that started it, which fans them out to its WebSocket
clients. The link is one WebSocket, ``/internal/v1/ingest``, opened by the publisher:

* ``Authorization: Bearer <ingest key>``: a random key the service makes at start and
  hands to the graphs it launches (never logged; unrelated to the API token);
* binary frames: one Arrow IPC stream each (one RecordBatch of BAR or SIGNAL rows; the
  schema metadata ``tickgraph.stream`` names the stream);
* text frames: ``{"type": "hello", "run": ...}`` first (the run whose bars follow: the
  replay job's id; the hub chains each run's bars apart), ``{"type": "eof"}`` when the
  graph ends.

:class:`Publisher` is the sending side (a plain class used by the operator, running an
aiohttp client on its own thread and loop, like the store's engine); at most
``max_pending`` frames are in flight, so a slow service slows the sink instead of
growing memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from typing import Any

import aiohttp
import orjson
import pyarrow as pa

__all__ = ["INGEST_PATH", "STREAM_KEY", "encode_batch", "decode_batch", "Publisher", "PublishError"]

_log = logging.getLogger("tickgraph.service.wire")

INGEST_PATH = "/internal/v1/ingest"
#: Schema metadata key naming a frame's stream (``bars`` / ``signals``).
STREAM_KEY = b"tickgraph.stream"


class PublishError(RuntimeError):
    """The service could not be reached or refused the publisher (the URL is named, never the key)."""


def encode_batch(stream: str, batch: pa.RecordBatch) -> bytes:
    """One Arrow IPC stream holding ``batch`` with its stream name in the schema metadata."""
    batch = batch.replace_schema_metadata({STREAM_KEY: stream.encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_batch(data: bytes) -> tuple[str, pa.RecordBatch]:
    """``(stream, batch)`` of an :func:`encode_batch` frame (metadata removed).

    Raises:
        ValueError: not an Arrow IPC stream with one batch and a stream name.
    """
    try:
        reader = pa.ipc.open_stream(data)
        batches = list(reader)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"ingest frame is not an Arrow IPC stream: {exc}") from None
    metadata = reader.schema.metadata or {}
    if len(batches) != 1 or STREAM_KEY not in metadata:
        raise ValueError("ingest frame must hold one record batch with tickgraph.stream metadata")
    return metadata[STREAM_KEY].decode(), batches[0].replace_schema_metadata(None)


class Publisher:
    """Sends batches to a service's ingest WebSocket from synchronous code.

    Args:
        url: the service's base URL (``http://127.0.0.1:8000``).
        key: the service's ingest key.
        run: the publishing run's id (sent in the hello frame).
        max_pending: frames sent but not yet written to the socket before ``send`` waits.
        timeout_s: connect and close timeout.

    Raises:
        PublishError: the connection failed or was refused (on construction).
    """

    def __init__(self, url: str, key: str, run: str, max_pending: int = 8, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self.run = run
        self._max_pending = max_pending
        self._timeout = timeout_s
        self._pending: deque[concurrent.futures.Future] = deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-publisher", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames = 0
        try:
            self._call(self._connect())
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:  # never shows the key
        return f"Publisher(url={self.url!r}, frames={self.frames})"

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _connect(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=self._timeout))
        try:
            self._ws = await self._session.ws_connect(
                self.url + INGEST_PATH, headers={"Authorization": f"Bearer {self._key}"}, heartbeat=30, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise PublishError(f"publishing to {self.url}: the service refused the ingest link (HTTP {exc.status})") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise PublishError(f"publishing to {self.url}: cannot connect ({type(exc).__name__}: {exc})") from None
        await self._ws.send_str(orjson.dumps({"type": "hello", "run": self.run}).decode())

    def send(self, stream: str, batch: pa.RecordBatch) -> None:
        """Queue one batch; waits while ``max_pending`` frames are in flight.

        Raises:
            PublishError: an earlier frame could not be sent (the service went away).
        """
        while len(self._pending) >= self._max_pending:
            self._settle(self._pending.popleft())
        frame = encode_batch(stream, batch)
        self._pending.append(asyncio.run_coroutine_threadsafe(self._ws.send_bytes(frame), self._loop))
        self.frames += 1

    def finish(self) -> None:
        """Wait for every frame, then send end-of-stream.

        Raises:
            PublishError: a frame could not be sent.
        """
        while self._pending:
            self._settle(self._pending.popleft())
        self._settle(asyncio.run_coroutine_threadsafe(self._ws.send_str(orjson.dumps({"type": "eof"}).decode()), self._loop))

    def _settle(self, future: concurrent.futures.Future) -> None:
        try:
            future.result(timeout=self._timeout * 6)
        except (aiohttp.ClientError, ConnectionError, OSError, concurrent.futures.TimeoutError, RuntimeError) as exc:
            raise PublishError(f"publishing to {self.url}: the ingest link broke ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        """Close the link and stop the thread (idempotent)."""
        if self._loop.is_closed():
            return

        async def shut() -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._session is not None:
                await self._session.close()

        try:
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=self._timeout)
        except Exception as exc:  # closing a broken link: nothing left to release but the loop
            _log.warning("publisher to %s: closing the ingest link failed: %s: %s", self.url, type(exc).__name__, exc)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
