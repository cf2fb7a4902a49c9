"""Replay jobs over HTTP: validate, record in ``job_runs``, launch on Ray, cancel; the row view.

    row = await start_replay(state, request)      # POST /v1/replay/ticks
    row = await cancel_replay(state, run_id)      # DELETE /v1/replay/ticks/{run_id}

:func:`start_replay` inserts the job's ``job_runs`` row (``running``, ``job_name``
``replay``, ``provider`` and ``symbols`` of the request, ``metadata`` with speed, range and
graph) before anything runs, so the answer is that row; then the launcher
(``service/cluster.py``) starts the job's driver actor, which owns the row from there on
(``service/driver.py``). If the launch fails the row is marked ``failed`` at once.

:func:`job_view` turns a row into the seed-003 response shape (``JobRun``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from db.jobs import finish_job, list_jobs, read_job, start_job
from service.errors import ApiError
from service.hub import iso_ns
from service.models import ReplayRequest

__all__ = ["job_view", "start_replay", "cancel_replay", "get_job", "recent_jobs", "CANCEL_WAIT_S"]

#: Longest a DELETE waits for the driver to record ``cancelled``.
CANCEL_WAIT_S = 30.0


def job_view(row: dict[str, Any], download: str | None = None) -> dict[str, Any]:
    """A ``job_runs`` row (``db.jobs.read_job``) as a ``JobRun`` document."""
    metadata = row.get("metadata") or {}
    progress = metadata.get("progress")
    return {
        "run_id": row["id"],
        "job_name": row["job_name"],
        "provider": row["provider"],
        "status": row["status"],
        "symbols": row["symbols"],
        "rows_written": row["rows_written"],
        "min_ts": None if row["min_ts"] is None else iso_ns(row["min_ts"]),
        "max_ts": None if row["max_ts"] is None else iso_ns(row["max_ts"]),
        "min_ts_ns": row["min_ts"],
        "max_ts_ns": row["max_ts"],
        "started_at": iso_ns(row["started_at"]),
        "completed_at": None if row["completed_at"] is None else iso_ns(row["completed_at"]),
        "error_message": row["error_message"],
        "progress": progress if isinstance(progress, (int, float)) else None,
        "metadata": metadata,
        "download": download,
    }


async def get_job(state: Any, run_id: str, job_name: str) -> dict[str, Any]:
    """The ``job_runs`` row of ``run_id`` if it is a ``job_name`` job.

    Raises:
        ApiError: 404 (field ``run_id``) for an unknown or malformed id.
    """
    row = None
    if len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id):
        row = await asyncio.to_thread(read_job, state.url, run_id)
    if row is None or row["job_name"] != job_name:
        raise ApiError(404, f"no {job_name} job with run_id {run_id!r}", "run_id")
    return row


async def recent_jobs(state: Any, job_name: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``job_name`` jobs."""
    return await asyncio.to_thread(list_jobs, state.url, job_name, limit)


async def _known_tick_symbols(state: Any, provider: str) -> frozenset[str]:
    """The symbols a ``tick_data`` or ``catalog`` replay can replay."""
    from catalog.reader import StoreReader

    if provider == "catalog":
        reader = StoreReader(state.config.catalog_dir, None)
    else:
        from db.read import distinct_values_async
        from db.tables import tick_data

        return frozenset(await distinct_values_async(state.url, tick_data, "symbol"))
    return frozenset(await asyncio.to_thread(reader.symbols, "ticks"))


async def start_replay(state: Any, request: ReplayRequest) -> dict[str, Any]:
    """Record and launch one replay job; returns its row (``running``).

    Raises:
        ApiError: 422 an unknown symbol; 503 no launcher (no Ray cluster).
    """
    from graph.spec import GraphError, load_graph
    from service.graphs import replay_overrides

    if request.provider in ("tick_data", "catalog"):
        where = "the store's tick_data" if request.provider == "tick_data" else f"the tick catalog {state.config.catalog_dir}"
        known = await _known_tick_symbols(state, request.provider)
    else:
        known, where = state.configured_symbols() or await state.known_symbols(), "the replay graph"
    for i, symbol in enumerate(request.symbols):
        if symbol not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ApiError(422, f"symbols[{i}]: {symbol!r} is not in {where} (known: {listed})", f"symbols[{i}]")
    if state.launcher is None:
        raise ApiError(503, "replay jobs run on a Ray cluster and this service has none (start it with run.py serve)")
    config = state.config
    metadata = {"speed": request.speed, "start": iso_ns(request.start), "end": iso_ns(request.end),
                "start_ns": request.start, "end_ns": request.end, "graph": str(config.graph), "launcher": "service",
                "progress": 0.0}  # fmt: skip
    job_id = await asyncio.to_thread(
        start_job, state.url, "replay", provider=request.provider, symbols=request.symbols, metadata_json=metadata
    )
    try:
        loaded = await asyncio.to_thread(load_graph, config.graph)
        overrides = replay_overrides(
            loaded, job_id=job_id, store_url=state.url, provider=request.provider, symbols=request.symbols,
            start_ns=request.start, end_ns=request.end, speed=request.speed, extra=config.replay_overrides,
            catalog_dir=config.catalog_dir,
        )  # fmt: skip
        await asyncio.to_thread(
            state.launcher.start, job_id, overrides, metadata, request.start, request.end, state.public_url()
        )
    except (GraphError, RuntimeError) as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        await asyncio.to_thread(finish_job, state.url, job_id, "failed", error_message=message)
    return await asyncio.to_thread(read_job, state.url, job_id)


async def cancel_replay(state: Any, run_id: str) -> dict[str, Any]:
    """Cancel a running replay; waits (<= :data:`CANCEL_WAIT_S`) until its row is final.

    Raises:
        ApiError: 404 unknown job; 409 the job already ended.
    """
    row = await get_job(state, run_id, "replay")
    if row["status"] != "running":
        raise ApiError(409, f"replay job {run_id} is already {row['status']}", "run_id")
    reached = state.launcher is not None and await asyncio.to_thread(state.launcher.cancel, run_id)
    if not reached:  # no live driver: nothing runs this job any more
        await asyncio.to_thread(
            finish_job, state.url, run_id, "cancelled", error_message="cancelled; its driver was no longer running"
        )
    deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_S
    while True:
        row = await asyncio.to_thread(read_job, state.url, run_id)
        if row["status"] != "running" or asyncio.get_running_loop().time() > deadline:
            return row
        await asyncio.sleep(0.1)
