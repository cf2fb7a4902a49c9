"""The ``job_runs`` table: one row per job (a replay, an export), from start to end.

    job = start_job(url, "replay", provider="lobster", symbols=["AMZN"])
    ...
    finish_job(url, job, "completed", rows_written=n, min_ts=a, max_ts=b)

Statuses: ``running`` (set by :func:`start_job`), then ``completed``, ``failed`` (with
``error_message``) or ``cancelled``. Times ``started_at``/``completed_at`` are wall
clock, int64 ns UTC (job bookkeeping, not market data); ``min_ts``/``max_ts`` are the
event-time range the job covered. ``symbols`` and ``metadata`` are JSON text.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from db.engine import StoreError, create_engine, describe_db_error, mask_url
from db.tables import create_tables, job_runs
from graph.schemas import JOB_STATUSES

__all__ = ["start_job", "finish_job", "read_job", "update_job", "list_jobs", "reopen_job", "mark_abandoned"]


def _run(url: str, work: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(create_tables, [job_runs])
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as e:
        raise StoreError(f"job_runs on {mask_url(url)}: {describe_db_error(e)}") from None
    except ValueError as e:  # job_runs of an older layout
        raise StoreError(f"{mask_url(url)}: {e}") from None


def start_job(
    url: str,
    job_name: str,
    *,
    provider: str | None = None,
    symbols: Sequence[str] = (),
    metadata_json: dict[str, Any] | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    job_id: str | None = None,
) -> str:
    """Insert a ``running`` job row; returns its id (``job_id``, default a new uuid4 hex).

    Raises:
        StoreError: the database refused the write (URL masked), e.g. the id exists.
    """
    job_id = job_id or uuid.uuid4().hex
    row = {
        "id": job_id,
        "job_name": job_name,
        "provider": provider,
        "status": "running",
        "symbols": orjson.dumps(list(symbols)).decode(),
        "rows_written": 0,
        "min_ts": None,
        "max_ts": None,
        "started_at": clock_ns(),
        "completed_at": None,
        "error_message": None,
        "metadata": orjson.dumps(metadata_json or {}).decode(),
    }
    _run(url, lambda connection: connection.execute(job_runs.insert().values(**row)))
    return job_id


def finish_job(
    url: str,
    job_id: str,
    status: str,
    *,
    rows_written: int | None = None,
    min_ts: int | None = None,
    max_ts: int | None = None,
    error_message: str | None = None,
    metadata_json: dict[str, Any] | None = None,
    symbols: Sequence[str] | None = None,
    provider: str | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> None:
    """Mark job ``job_id`` ``completed``, ``failed`` or ``cancelled`` (``completed_at`` = now).

    ``symbols`` and ``provider``, when given, replace the row's (e.g. the symbols a
    replay actually emitted, where the start only knew its filter).

    Raises:
        ValueError: ``status`` is not a final status.
        StoreError: the database refused the write, or no job has that id.
    """
    if status not in JOB_STATUSES or status in ("running", "abandoned"):
        raise ValueError(f"final job status must be completed, failed or cancelled, got {status!r}")
    values: dict[str, Any] = {"status": status, "completed_at": clock_ns(), "error_message": error_message}
    for name, value in (("rows_written", rows_written), ("min_ts", min_ts), ("max_ts", max_ts)):
        if value is not None:
            values[name] = int(value)
    if metadata_json is not None:
        values["metadata"] = orjson.dumps(metadata_json).decode()
    if symbols is not None:
        values["symbols"] = orjson.dumps(sorted(symbols)).decode()
    if provider is not None:
        values["provider"] = provider
    result = _run(url, lambda c: c.execute(job_runs.update().where(job_runs.c.id == job_id).values(**values)))
    if result.rowcount != 1:
        raise StoreError(f"job_runs on {mask_url(url)}: no job with id {job_id!r}")


def read_job(url: str, job_id: str) -> dict[str, Any] | None:
    """The job row as a dict (``symbols``/``metadata`` decoded), or None."""
    row = _run(url, lambda c: c.execute(sa.select(job_runs).where(job_runs.c.id == job_id)).mappings().first())
    return None if row is None else _decoded(row)


def _decoded(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["symbols"] = orjson.loads(out["symbols"]) if out["symbols"] else []
    out["metadata"] = orjson.loads(out["metadata"]) if out["metadata"] else {}
    return out


def update_job(
    url: str,
    job_id: str,
    *,
    rows_written: int | None = None,
    min_ts: int | None = None,
    max_ts: int | None = None,
    metadata_patch: dict[str, Any] | None = None,
    only_running: bool = True,
) -> bool:
    """Record a running job's progress: counters, event-time range, metadata keys.

    ``metadata_patch`` keys replace the same keys of the stored ``metadata`` (others
    are kept). The status is not changed (see :func:`finish_job`).

    Args:
        url: the store.
        job_id: the job.
        rows_written, min_ts, max_ts: new values (None: unchanged).
        metadata_patch: keys to set in ``metadata``.
        only_running: update only while the row is ``running`` (a late progress report
            never overwrites a finished job).

    Returns:
        True if a row was updated.

    Raises:
        StoreError: the database refused the write.
    """
    values: dict[str, Any] = {}
    for name, value in (("rows_written", rows_written), ("min_ts", min_ts), ("max_ts", max_ts)):
        if value is not None:
            values[name] = int(value)

    def work(connection: Any) -> bool:
        condition = job_runs.c.id == job_id
        if only_running:
            condition = sa.and_(condition, job_runs.c.status == "running")
        update = dict(values)
        if metadata_patch:
            stored = connection.execute(sa.select(job_runs.c.metadata).where(condition)).scalar()
            if stored is None and not values:
                return False
            merged = {**(orjson.loads(stored) if stored else {}), **metadata_patch}
            update["metadata"] = orjson.dumps(merged).decode()
        if not update:
            return False
        return connection.execute(job_runs.update().where(condition).values(**update)).rowcount == 1

    return bool(_run(url, work))


def list_jobs(url: str, job_name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent jobs (newest ``started_at`` first), decoded as :func:`read_job`.

    Args:
        url: the store.
        job_name: only jobs of this name (``replay``, ``export``); None: all.
        limit: at most this many rows (>= 1).

    Raises:
        StoreError: the database cannot be read.
    """
    statement = sa.select(job_runs).order_by(job_runs.c.started_at.desc(), job_runs.c.id).limit(max(1, int(limit)))
    if job_name is not None:
        statement = statement.where(job_runs.c.job_name == job_name)
    rows = _run(url, lambda c: c.execute(statement).mappings().all())
    return [_decoded(row) for row in rows]


def reopen_job(url: str, job_id: str, metadata_json: dict[str, Any]) -> None:
    """Set job ``job_id`` back to ``running`` (a resumed run): clears ``completed_at`` and the error.

    Raises:
        StoreError: the database refused the write, or no job has that id.
    """
    values = {"status": "running", "completed_at": None, "error_message": None,
              "metadata": orjson.dumps(metadata_json).decode()}  # fmt: skip
    result = _run(url, lambda c: c.execute(job_runs.update().where(job_runs.c.id == job_id).values(**values)))
    if result.rowcount != 1:
        raise StoreError(f"job_runs on {mask_url(url)}: no job with id {job_id!r}")


def mark_abandoned(url: str, stale_before_ns: int, keep: str | None = None) -> int:
    """Mark ``running`` jobs whose driver is gone as ``abandoned``; returns how many.

    A job's driver is gone when its ``metadata.heartbeat_ns`` (or, for a row without one,
    its ``started_at``) is older than ``stale_before_ns`` (wall clock, ns UTC).

    Args:
        url: the store.
        stale_before_ns: the heartbeat deadline.
        keep: a job id never to mark (the caller's own).

    Raises:
        StoreError: the database refused.
    """

    def work(connection: Any) -> int:
        rows = connection.execute(
            sa.select(job_runs.c.id, job_runs.c.started_at, job_runs.c.metadata).where(job_runs.c.status == "running")
        ).all()
        stale = []
        for job_id, started_at, metadata in rows:
            beat = (orjson.loads(metadata) if metadata else {}).get("heartbeat_ns", started_at)
            if job_id != keep and beat is not None and beat < stale_before_ns:
                stale.append(job_id)
        if stale:
            connection.execute(
                job_runs.update().where(job_runs.c.id.in_(stale), job_runs.c.status == "running").values(
                    status="abandoned", error_message="the run's driver stopped without recording an outcome"
                )
            )
        return len(stale)

    return int(_run(url, work))
