"""``/v1/replay/ticks``: start, list, read and cancel replay jobs (seed 003; logic in service/jobs.py).

* ``POST /v1/replay/ticks`` (``ReplayRequest``) -> 201 and the job's ``job_runs`` row
  (``JobRun``, status ``running``; ``failed`` at once if it could not be launched).
* ``GET /v1/replay/ticks?limit=`` -> the newest replay jobs.
* ``GET /v1/replay/ticks/{run_id}`` -> one job: status, ``rows_written`` (ticks emitted),
  ``max_ts`` (event time reached), ``progress`` (0..1 of the requested range), and after
  the end ``metadata.summary`` (counts and parity hashes of the run).
* ``DELETE /v1/replay/ticks/{run_id}`` -> cancels a running job; answers its row once it
  is ``cancelled`` (409 if it had already ended, 404 if unknown).
"""

from __future__ import annotations

from aiohttp import web

from service.app import STATE
from service.errors import json_response, parse_body, parse_query
from service.jobs import cancel_replay, get_job, job_view, recent_jobs, start_replay
from service.models import JobList, JobRun, JobsQuery, ReplayRequest, RunPath
from service.openapi import Operation, add

__all__ = ["install"]


async def post_replay(request: web.Request) -> web.Response:
    """Start a replay job."""
    body = await parse_body(request, ReplayRequest)
    row = await start_replay(request.app[STATE], body)
    return json_response(job_view(row), status=201)


async def list_replays(request: web.Request) -> web.Response:
    """The newest replay jobs."""
    query = parse_query(request, JobsQuery)
    rows = await recent_jobs(request.app[STATE], "replay", query.limit)
    return json_response({"jobs": [job_view(row) for row in rows]})


async def get_replay(request: web.Request) -> web.Response:
    """One replay job's status and progress."""
    row = await get_job(request.app[STATE], request.match_info["run_id"], "replay")
    return json_response(job_view(row))


async def delete_replay(request: web.Request) -> web.Response:
    """Cancel a running replay job."""
    row = await cancel_replay(request.app[STATE], request.match_info["run_id"])
    return json_response(job_view(row))


def install(app: web.Application) -> None:
    """Mount the replay job routes."""
    base, one = "/v1/replay/ticks", "/v1/replay/ticks/{run_id}"
    add(app, post_replay, Operation("POST", base, "Start a replay job on the Ray cluster", "replay",
                                    body=ReplayRequest, response=JobRun, status=201, errors=(400, 413, 422, 503)))
    add(app, list_replays, Operation("GET", base, "Recent replay jobs", "replay", query=JobsQuery, response=JobList))
    add(app, get_replay, Operation("GET", one, "A replay job's status and progress", "replay",
                                   path_model=RunPath, response=JobRun, errors=(404,)))
    add(app, delete_replay, Operation("DELETE", one, "Cancel a running replay job", "replay",
                                      path_model=RunPath, response=JobRun, errors=(404, 409)))
