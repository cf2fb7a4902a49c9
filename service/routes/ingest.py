"""``WS /internal/v1/ingest``: graphs launched by this service publish their bars here.

The publisher (``service/wire.py: Publisher``, in the ``api_publish`` node of a replay
job's graph) presents the service's ingest key as a bearer token; anything else is
answered 401. Binary frames carry BAR or SIGNAL batches (Arrow IPC): bars go to the
hub, signals to the newest-value table. ``{"type": "eof"}`` ends the graph's stream:
the bar cache is invalidated so REST reads see the job's stored bars (bounded by the
store's own flush, see ``service/routes/bars.py``). Not part of the OpenAPI document.
"""

from __future__ import annotations

import hmac
import logging
import uuid

import orjson
from aiohttp import WSMsgType, web

from actors.api import remember_signals
from graph.schemas import BAR, SIGNAL
from service.app import STATE
from service.errors import ApiError
from service.wire import INGEST_PATH, decode_batch

__all__ = ["install"]

_log = logging.getLogger("tickgraph.service")


async def ingest(request: web.Request) -> web.StreamResponse:
    """Receive one graph's bars and signals (see the module docstring)."""
    state = request.app[STATE]
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), state.ingest_key.encode()):
        raise ApiError(401, "the ingest link needs this service's ingest key", "Authorization")
    ws = web.WebSocketResponse(max_msg_size=256 * 1024 * 1024, heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this is a WebSocket route", "Upgrade")
    await ws.prepare(request)
    run = uuid.uuid4().hex  # until the publisher's hello names its run
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            try:
                stream, batch = decode_batch(message.data)
            except ValueError as exc:
                _log.warning("ingest: dropped a frame: %s", exc)
                continue
            if stream == "bars" and set(BAR.names) <= set(batch.schema.names):
                state.metrics.hub_bars.inc(batch.num_rows)
                state.hub.publish(batch.select(BAR.names), run)
            elif stream == "signals" and set(SIGNAL.names) <= set(batch.schema.names):
                remember_signals(state.latest_signals, batch)
        elif message.type == WSMsgType.TEXT:
            control = orjson.loads(message.data)
            if control.get("type") == "hello" and isinstance(control.get("run"), str):
                run = control["run"][:64]
            elif control.get("type") == "eof":
                state.cache.invalidate()
        elif message.type == WSMsgType.ERROR:
            break
    return ws


def install(app: web.Application) -> None:
    """Mount the ingest route (undocumented: internal)."""
    app.router.add_get(INGEST_PATH, ingest)
