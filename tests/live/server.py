"""A local websocket server that plays recorded frames to the live connectors (never the internet).

An aiohttp.web application on ``127.0.0.1`` with an ephemeral port, running its own
event loop on a background thread, so synchronous tests (and the latency bench) can
drive it. Each route has one *script* per connection: a list of steps run in order
(the last script repeats for any further connection)::

    feed = Feed(lines)                                   # frames shared by all connections
    server.route("/stream",
        [Expect(1), Play(feed, count=50), Drop()],       # connection 0: 50 frames, then drop
        [Expect(1), Play(feed), Hold()])                 # connection 1: the rest, stay open

Steps: :class:`Expect` (wait for client messages: subscribe, auth), :class:`Send`,
:class:`Play` (frames from a :class:`Feed` at a pace; every connection continues where
the previous one stopped, as a live exchange does), :class:`Drop` (the TCP connection
ends without a websocket close frame), :class:`Close` (a proper close frame),
:class:`Silent` (keep the socket open, send nothing; pings are still answered),
:class:`Hold` (stay open until the client leaves), :class:`Reject` (refuse the
handshake with an HTTP status). Every client text message and the query string of
every connection are recorded for assertions; :meth:`FrameServer.rest` serves JSON on
a GET route (REST backfills) and records the queries.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

__all__ = [
    "FrameServer",
    "Feed",
    "Connection",
    "Expect",
    "Send",
    "Play",
    "Drop",
    "Close",
    "Silent",
    "Hold",
    "Reject",
    "wait_for",
]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


class Feed:
    """Frames (text lines) shared by the connections of a route, with a cursor.

    Attributes:
        lines: the frames, in order.
        position: index of the next frame to send.
        sent: ``(connection index, send wall time ns, frame)`` for every frame sent.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = [line for line in lines]
        self.position = 0
        self.sent: list[tuple[int, int, str]] = []

    @property
    def done(self) -> bool:
        """True once every frame was sent."""
        return self.position >= len(self.lines)


@dataclass
class Connection:
    """One client connection: its websocket, query string and the messages it sent."""

    index: int
    request: web.Request
    query: dict[str, str]
    ws: web.WebSocketResponse | None = None
    received: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _message: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, text: str) -> None:
        """Send one text frame."""
        await self.ws.send_str(text)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:  # autoping answers pings while steps send
                if msg.type is WSMsgType.TEXT:
                    self.received.append(msg.data)
                    self._message.set()
        finally:
            self.closed.set()
            self._message.set()


Step = Callable[[Connection], Awaitable[None]]


@dataclass
class Expect:
    """Wait until the client has sent ``count`` text messages on this connection."""

    count: int = 1
    timeout_s: float = 10.0

    async def __call__(self, conn: Connection) -> None:
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while len(conn.received) < self.count:
            if conn.closed.is_set():
                raise ConnectionResetError("client left before sending the expected messages")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"expected {self.count} client messages, got {len(conn.received)}")
            conn._message.clear()
            try:
                await asyncio.wait_for(conn._message.wait(), remaining)
            except asyncio.TimeoutError:
                continue


@dataclass
class Send:
    """Send these text frames."""

    frames: tuple[str, ...]

    def __init__(self, *frames: str) -> None:
        self.frames = frames

    async def __call__(self, conn: Connection) -> None:
        for frame in self.frames:
            await conn.send(frame)


@dataclass
class Play:
    """Send the feed's next ``count`` frames (None: all remaining), ``interval_s`` apart."""

    feed: Feed
    count: int | None = None
    interval_s: float = 0.0

    async def __call__(self, conn: Connection) -> None:
        sent = 0
        while not self.feed.done and (self.count is None or sent < self.count):
            line = self.feed.lines[self.feed.position]
            await conn.send(line)
            self.feed.sent.append((conn.index, time.time_ns(), line))
            self.feed.position += 1
            sent += 1
            if self.interval_s > 0:
                await asyncio.sleep(self.interval_s)
            elif sent % 64 == 0:
                await asyncio.sleep(0)


async def _drain(conn: Connection, timeout_s: float = 2.0) -> None:
    """Wait until the socket's write buffer is empty (frames sent are on the wire)."""
    transport = conn.request.transport
    deadline = asyncio.get_running_loop().time() + timeout_s
    while transport is not None and transport.get_write_buffer_size() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.001)


@dataclass
class Drop:
    """End the TCP connection without a websocket close frame (after the frames sent so far)."""

    async def __call__(self, conn: Connection) -> None:
        await _drain(conn)
        transport = conn.request.transport
        if transport is not None:
            transport.close()
        raise ConnectionResetError("dropped by the script")


@dataclass
class Close:
    """Close the websocket properly (close frame with ``code``)."""

    code: int = 1000

    async def __call__(self, conn: Connection) -> None:
        await conn.ws.close(code=self.code)


@dataclass
class Silent:
    """Send nothing for ``seconds`` (the socket stays open and answers pings)."""

    seconds: float

    async def __call__(self, conn: Connection) -> None:
        try:
            await asyncio.wait_for(conn.closed.wait(), self.seconds)
        except asyncio.TimeoutError:
            pass


@dataclass
class Hold:
    """Stay open, sending nothing, until the client leaves (or the server stops)."""

    async def __call__(self, conn: Connection) -> None:
        await conn.closed.wait()


@dataclass
class Reject:
    """Refuse the websocket handshake with HTTP ``status`` (must be a script's first step)."""

    status: int = 403

    async def __call__(self, conn: Connection) -> None:  # handled before the handshake
        return None


@dataclass
class _Route:
    scripts: list[list[Step]]
    connections: list[Connection] = field(default_factory=list)


class FrameServer:
    """The server (see the module docstring). Use as a context manager or start()/stop().

    Attributes:
        port: the ephemeral port on 127.0.0.1 (after :meth:`start`).
        rest_requests: path -> the query dicts of the GET requests served by :meth:`rest`.
    """

    def __init__(self) -> None:
        self.port = 0
        self._routes: dict[str, _Route] = {}
        self._rest: dict[str, Callable[[dict[str, str]], Any]] = {}
        self.rest_requests: dict[str, list[dict[str, str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- configuration -------------------------------------------------------------------

    def route(self, path: str, *scripts: list[Step]) -> None:
        """Serve websocket ``path``: connection i runs ``scripts[i]`` (the last one repeats)."""
        self._routes[path] = _Route([list(script) for script in scripts] or [[]])

    def rest(self, path: str, respond: Callable[[dict[str, str]], Any]) -> None:
        """Serve GET ``path`` with ``respond(query)`` as JSON; queries are recorded."""
        self._rest[path] = respond
        self.rest_requests[path] = []

    def url(self, path: str, scheme: str = "ws") -> str:
        """``ws://127.0.0.1:<port><path>`` (or ``http://`` with ``scheme="http"``)."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def connections(self, path: str) -> list[Connection]:
        """The connections made to ``path`` so far, in order."""
        return self._routes[path].connections

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FrameServer:
        """Start serving on 127.0.0.1 (ephemeral port) in a background thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve(sock))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="frame-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("frame server did not start within 10 s")
        return self

    def stop(self) -> None:
        """Close every connection and stop the server thread (bounded: a few seconds)."""
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FrameServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        for route in self._routes.values():
            for conn in route.connections:
                if conn.ws is not None and not conn.ws.closed:
                    try:
                        await asyncio.wait_for(conn.ws.close(), 1.0)
                    except (asyncio.TimeoutError, ConnectionError):
                        pass
                conn.closed.set()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in self._rest:
            query = dict(request.query)
            self.rest_requests[path].append(query)
            return web.json_response(self._rest[path](query))
        route = self._routes.get(path)
        if route is None:
            return web.Response(status=404, text=f"no route {path}")
        index = len(route.connections)
        script = route.scripts[min(index, len(route.scripts) - 1)]
        conn = Connection(index, request, dict(request.query))
        route.connections.append(conn)
        if script and isinstance(script[0], Reject):
            return web.Response(status=script[0].status, text="rejected by the script")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn.ws = ws
        reader = asyncio.ensure_future(conn._read())
        try:
            for step in script:
                if conn.closed.is_set():
                    break
                await step(conn)
        except (ConnectionError, RuntimeError, TimeoutError, asyncio.TimeoutError):
            pass  # the client left, or the script dropped the connection
        finally:
            if not ws.closed:
                try:
                    await asyncio.wait_for(ws.close(), 1.0)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
            reader.cancel()
            conn.closed.set()
        return ws
