"""``WS /ws/bars/{symbol}/{timeframe}``: live ``BAR_FORMING`` / ``BAR_CONFIRMED`` / ``BAR_CORRECTED``.

Each connection is a :class:`~service.hub.Client` of the hub with a bounded queue; one
writer task per connection sends the queue's texts in order (uncompressed; the kernel
send buffer capped at ``client_send_buffer`` bytes). A client that stops
reading fills its socket buffer, then its queue: the hub drops it and this handler
closes the connection with code 1008 (policy violation, "client too slow"), counted in
``tickgraph_ws_slow_client_disconnects_total``, without waiting for its socket (the
transport is aborted if the close frame cannot be written within a second).

``?backfill=N`` first sends the stream's last N confirmed bars (as kept by the hub).
Browsers, which cannot set headers on a WebSocket, authenticate with the subprotocol
``bearer.<token>`` next to ``tickgraph.v1``; the server answers ``tickgraph.v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import WSCloseCode, WSMsgType, web

from service.app import STATE
from service.errors import ApiError, parse_path, parse_query
from service.models import BarMessage, SeriesPath, WsQuery
from service.openapi import Operation, add

__all__ = ["install", "PROTOCOL", "SLOW_CLOSE_MESSAGE"]

PROTOCOL = "tickgraph.v1"
SLOW_CLOSE_MESSAGE = b"client too slow: its queue overflowed"


async def _close_slow(ws: web.WebSocketResponse, request: web.Request) -> None:
    try:
        await asyncio.wait_for(ws.close(code=WSCloseCode.POLICY_VIOLATION, message=SLOW_CLOSE_MESSAGE, drain=False), 1.0)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass  # the close frame could not be written in time: the transport is aborted below
    if request.transport is not None and not request.transport.is_closing():
        request.transport.abort()


async def bars_stream(request: web.Request) -> web.StreamResponse:
    """One WebSocket subscription to a bar stream (see the module docstring)."""
    state = request.app[STATE]
    path = parse_path(request, SeriesPath)
    query = parse_query(request, WsQuery)
    if path.symbol not in await state.known_symbols():
        raise ApiError(404, f"symbol {path.symbol!r} is not known", "symbol")
    # compress=False: permessage-deflate would deflate every message once per client
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), heartbeat=30.0, max_msg_size=64 * 1024, compress=False)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this is a WebSocket route: send an Upgrade: websocket request", "Upgrade")
    _bound_send_buffer(request, state.config.client_send_buffer)
    await ws.prepare(request)
    client = state.hub.subscribe(path.symbol, path.timeframe, request.transport, query.backfill)
    state.metrics.ws_clients.inc()
    slow = asyncio.create_task(client.slow.wait())
    reader = asyncio.create_task(_read(ws))
    try:
        done, _ = await asyncio.wait({slow, reader}, return_when=asyncio.FIRST_COMPLETED)
        if slow in done:
            await _close_slow(ws, request)
    finally:
        state.hub.unsubscribe(client)
        state.metrics.ws_clients.dec()
        for task in (slow, reader):
            task.cancel()
        for task in (slow, reader):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await task
        if not ws.closed:
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError, RuntimeError):
                await asyncio.wait_for(ws.close(), 1.0)
    return ws


def _bound_send_buffer(request: web.Request, size: int) -> None:
    """Cap the kernel's send buffer of this connection (SO_SNDBUF): a client that stops reading
    then blocks its writer after ~``size`` bytes instead of the kernel's multi-megabyte
    autotuned buffer, so its queue overflows (1008) promptly and kernel memory per client
    stays bounded."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and size > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def _read(ws: web.WebSocketResponse) -> None:
    """Consume what the client sends (pings, text) until it closes."""
    async for message in ws:
        if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


def install(app: web.Application) -> None:
    """Mount the bar stream route."""
    add(app, bars_stream, Operation(
        "GET", "/ws/bars/{symbol}/{timeframe}", "Live bar stream (WebSocket)", "bars",
        path_model=SeriesPath, query=WsQuery, response=BarMessage, errors=(404, 422, 426), websocket=True,
    ))  # fmt: skip
