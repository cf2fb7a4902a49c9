"""``GET /v1/signals``: stored signal values; ``GET /v1/signals/latest``: the newest from the graph.

``/v1/signals?symbol=&name=&from=&to=&run_id=`` reads the stored signals of one symbol
(optionally one signal name) in ``[from, to)`` on event time, oldest first, through the
one read path (``catalog/reader.py``): per-tick signals from the tick catalog, bar-level
ones from the ``signals`` table. Signal rows
are keyed by (provider, symbol, ts, name), so two replays of the same ticks write the
same rows; ``run_id`` therefore selects what a replay job produced by its own extent:
its symbols and its event-time range ``[min_ts, max_ts]`` from ``job_runs``.
"""

from __future__ import annotations

import asyncio

import orjson
import pyarrow as pa
from aiohttp import web

from catalog.reader import StoreReader
from service.app import STATE
from service.errors import ApiError, json_response, parse_query
from service.hub import iso_ns
from service.jobs import get_job
from service.models import SignalsQuery, SignalsResponse
from service.openapi import Operation, add

__all__ = ["install"]


def _rows(table: pa.Table) -> list[dict]:
    rows = table.select(["provider", "symbol", "ts", "name", "value", "score", "metadata"]).to_pylist()
    for row in rows:
        row["time"] = iso_ns(row["ts"])
        row["metadata"] = orjson.loads(row["metadata"]) if row["metadata"] else None
    return rows


async def get_signals(request: web.Request) -> web.Response:
    """Stored signal values (see the module docstring)."""
    state = request.app[STATE]
    query = parse_query(request, SignalsQuery)
    start, end = query.start, query.end
    if query.run_id is not None:
        try:
            job = await get_job(state, query.run_id, "replay")
        except ApiError as exc:
            raise ApiError(404, exc.message, "run_id") from None
        if query.symbol not in job["symbols"] or job["min_ts"] is None:
            return json_response({"count": 0, "signals": []})
        start = job["min_ts"] if start is None else max(start, job["min_ts"])
        end = job["max_ts"] + 1 if end is None else min(end, job["max_ts"] + 1)
        if end <= start:
            return json_response({"count": 0, "signals": []})
    if query.symbol not in await state.known_symbols():
        raise ApiError(404, f"symbol {query.symbol!r} is not known", "symbol")
    reader = StoreReader(state.config.catalog_dir, state.url)
    names = [query.name] if query.name else None
    table = await asyncio.to_thread(reader.signals, [query.symbol], start, end, names)
    table = table.sort_by([("ts", "ascending"), ("name", "ascending")])
    if table.num_rows > query.limit:
        table = table.slice(table.num_rows - query.limit)
    rows = _rows(table)
    return json_response({"count": len(rows), "signals": rows})


async def latest_signals(request: web.Request) -> web.Response:
    """The newest signal value per (symbol, name) received from a graph since the service started."""
    state = request.app[STATE]
    rows = [dict(row) for _, row in sorted(state.latest_signals.items())]
    table = pa.Table.from_pylist(rows) if rows else None
    out = _rows(table) if table is not None else []
    return json_response({"count": len(out), "signals": out})


def install(app: web.Application) -> None:
    """Mount the signal routes."""
    add(app, get_signals, Operation("GET", "/v1/signals", "Stored signal values of a symbol", "signals",
                                    query=SignalsQuery, response=SignalsResponse, errors=(404, 422)))
    add(app, latest_signals, Operation("GET", "/v1/signals/latest", "Newest signal values from the running graph",
                                       "signals", response=SignalsResponse, errors=()))
