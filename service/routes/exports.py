"""``/v1/exports``: the ``run.py export`` job over HTTP (``db/export.py``), recorded in ``job_runs``.

* ``POST /v1/exports`` (``ExportRequestBody``) runs the export (on a worker thread of the
  service: it is one SQL read and one file write) and answers 201 with its ``job_runs``
  row (``job_name`` ``export``, ``completed`` with ``rows_written``) and a download link.
  The file goes to the service's export directory as ``export-<uuid>.<format>``; clients
  never choose server paths.
* ``GET /v1/exports`` the newest export jobs; ``GET /v1/exports/{run_id}`` one;
  ``GET /v1/exports/{run_id}/file`` the file (only files inside the export directory).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiohttp import web

from db.engine import StoreError
from db.export import ExportError, ExportRequest, run_export
from db.jobs import read_job
from service.app import STATE
from service.errors import ApiError, json_response, parse_body, parse_query
from service.jobs import get_job, job_view, recent_jobs
from service.models import ExportRequestBody, JobList, JobRun, JobsQuery, RunPath
from service.openapi import Operation, add

__all__ = ["install"]

_ARGUMENTS = {"symbols", "start", "end", "timeframe", "format", "provider", "names", "dataset"}


def _view(row: dict) -> dict:
    return job_view(row, download=f"/v1/exports/{row['id']}/file" if row["status"] == "completed" else None)


async def post_export(request: web.Request) -> web.Response:
    """Run one export job."""
    state = request.app[STATE]
    body = await parse_body(request, ExportRequestBody)
    output = Path(state.config.export_dir) / f"export-{uuid.uuid4().hex}.{body.format}"
    export = ExportRequest(
        dataset=body.dataset, url=state.url, symbols=body.symbols, start_ns=body.start, end_ns=body.end,
        output=output, fmt=body.format, timeframe=body.timeframe or ("1m" if body.dataset == "bars" else None),
        provider=body.provider, names=body.names, catalog_dir=state.config.catalog_dir,
    )  # fmt: skip
    try:
        result = await asyncio.to_thread(run_export, export)
    except ExportError as exc:
        argument = str(exc).split(":", 1)[0].removeprefix("--")
        if argument not in _ARGUMENTS:
            raise  # the service's own store or directory: a server error, logged
        raise ApiError(422, str(exc).removeprefix("--"), argument) from None
    except StoreError as exc:
        raise ApiError(503, f"the export failed in the store: {exc}") from None
    row = await asyncio.to_thread(read_job, state.url, result.job_id)
    return json_response(_view(row), status=201)


async def list_exports(request: web.Request) -> web.Response:
    """The newest export jobs."""
    query = parse_query(request, JobsQuery)
    rows = await recent_jobs(request.app[STATE], "export", query.limit)
    return json_response({"jobs": [_view(row) for row in rows]})


async def get_export(request: web.Request) -> web.Response:
    """One export job."""
    row = await get_job(request.app[STATE], request.match_info["run_id"], "export")
    return json_response(_view(row))


async def export_file(request: web.Request) -> web.StreamResponse:
    """The file an export job wrote."""
    state = request.app[STATE]
    row = await get_job(state, request.match_info["run_id"], "export")
    output = Path(str(row["metadata"].get("output", ""))).resolve()
    root = Path(state.config.export_dir).resolve()
    if row["status"] != "completed" or root not in output.parents or not output.is_file():
        raise ApiError(404, f"export {row['id']} has no file to download (status {row['status']})", "run_id")
    return web.FileResponse(output, headers={"Content-Disposition": f'attachment; filename="{output.name}"'})


def install(app: web.Application) -> None:
    """Mount the export routes."""
    add(app, post_export, Operation("POST", "/v1/exports", "Export ticks, bars or signals to a file", "exports",
                                    body=ExportRequestBody, response=JobRun, status=201, errors=(400, 413, 422, 503)))
    add(app, list_exports, Operation("GET", "/v1/exports", "Recent export jobs", "exports", query=JobsQuery, response=JobList))
    add(app, get_export, Operation("GET", "/v1/exports/{run_id}", "An export job", "exports",
                                   path_model=RunPath, response=JobRun, errors=(404,)))
    add(app, export_file, Operation("GET", "/v1/exports/{run_id}/file", "Download an export's file", "exports",
                                    path_model=RunPath, content="application/octet-stream", errors=(404,)))
