"""Parity routes: the canonical bar export, and the bars hashes of live streams and of jobs.

* ``GET /api/v1/parity/export/{symbol}/{timeframe}?from=&to=``: the canonical CSV of the
  stored bars (as ``/api/v1/bars/...?format=csv``, seed 000), for ``run.py parity bars``.
* ``GET /v1/parity/streams/{symbol}/{timeframe}``: this service's live stream chain
  (``service/hub.py``) of its latest run: run, rows hashed and the hash, as carried by the
  run's last message.
* ``GET /v1/parity/jobs/{run_id}``: a finished replay job's parity node hashes per stream
  (``ticks``, ``bars``: messages and SHA-256), from its run summary in ``job_runs``.
"""

from __future__ import annotations

from aiohttp import web

from service.app import STATE
from service.errors import ApiError, json_response, parse_path, parse_query
from service.jobs import get_job
from service.models import BarsQuery, JobParity, RunPath, SeriesPath, StreamParity
from service.openapi import Operation, add
from service.routes.bars import csv_response, read_series

__all__ = ["install"]


async def export_csv(request: web.Request) -> web.Response:
    """The canonical CSV of a stored series."""
    state = request.app[STATE]
    path = parse_path(request, SeriesPath)
    query = parse_query(request, BarsQuery)
    table = await read_series(state, path.symbol, path.timeframe, query.start, query.end, query.limit)
    return csv_response(table, path.symbol, path.timeframe)


async def stream_parity(request: web.Request) -> web.Response:
    """The chain of a live stream."""
    state = request.app[STATE]
    path = parse_path(request, SeriesPath)
    found = state.hub.parity(path.symbol, path.timeframe)
    if found is None:
        raise ApiError(404, f"no bars published on {path.symbol}/{path.timeframe} in this service", "symbol")
    run, messages, digest = found
    return json_response({"symbol": path.symbol, "timeframe": path.timeframe, "run": run, "messages": messages, "hash": digest})


async def job_parity(request: web.Request) -> web.Response:
    """A replay job's parity hashes."""
    row = await get_job(request.app[STATE], request.match_info["run_id"], "replay")
    streams = (row["metadata"].get("summary") or {}).get("parity", {})
    return json_response({"run_id": row["id"], "status": row["status"], "streams": streams})


def install(app: web.Application) -> None:
    """Mount the parity routes."""
    add(app, export_csv, Operation("GET", "/api/v1/parity/export/{symbol}/{timeframe}", "Canonical CSV export of stored bars",
                                   "parity", path_model=SeriesPath, query=BarsQuery, content="text/csv", errors=(404, 422)))
    add(app, stream_parity, Operation("GET", "/v1/parity/streams/{symbol}/{timeframe}", "Parity chain of a live stream",
                                      "parity", path_model=SeriesPath, response=StreamParity, errors=(404, 422)))
    add(app, job_parity, Operation("GET", "/v1/parity/jobs/{run_id}", "Parity hashes of a replay job", "parity",
                                   path_model=RunPath, response=JobParity, errors=(404,)))
