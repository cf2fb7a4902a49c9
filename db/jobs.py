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

__all__ = ["start_job", "finish_job", "add_to_job", "read_job", "update_job", "list_jobs"]


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
    if_absent: bool = False,
) -> str:
    """Insert a ``running`` job row; returns its id (``job_id``, default a new uuid4 hex).

    Args:
        if_absent: leave an existing row of that id as it is (``INSERT ... ON CONFLICT DO
            NOTHING``): the shards of one source node each make sure the row exists.

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

    def work(connection: Any) -> None:
        statement = job_runs.insert().values(**row)
        if if_absent:
            from sqlalchemy.dialects import postgresql, sqlite

            dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(connection.dialect.name)
            if dialect is None:
                raise ValueError(f"if_absent needs SQLite or PostgreSQL, not {connection.dialect.name}")
            statement = dialect.insert(job_runs).values(**row).on_conflict_do_nothing(index_elements=["id"])
        connection.execute(statement)

    _run(url, work)
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
    clock_ns: Callable[[], int] = time.time_ns,
) -> None:
    """Mark job ``job_id`` ``completed``, ``failed`` or ``cancelled`` (``completed_at`` = now).

    ``symbols``, when given, replaces the row's symbols (e.g. the symbols a replay
    actually emitted, where the start only knew its filter).

    Raises:
        ValueError: ``status`` is not a final status.
        StoreError: the database refused the write, or no job has that id.
    """
    if status not in JOB_STATUSES or status == "running":
        raise ValueError(f"final job status must be completed, failed or cancelled, got {status!r}")
    values: dict[str, Any] = {"status": status, "completed_at": clock_ns(), "error_message": error_message}
    for name, value in (("rows_written", rows_written), ("min_ts", min_ts), ("max_ts", max_ts)):
        if value is not None:
            values[name] = int(value)
    if metadata_json is not None:
        values["metadata"] = orjson.dumps(metadata_json).decode()
    if symbols is not None:
        values["symbols"] = orjson.dumps(sorted(symbols)).decode()
    result = _run(url, lambda c: c.execute(job_runs.update().where(job_runs.c.id == job_id).values(**values)))
    if result.rowcount != 1:
        raise StoreError(f"job_runs on {mask_url(url)}: no job with id {job_id!r}")


def add_to_job(
    url: str, job_id: str, *, rows: int, min_ts: int | None, max_ts: int | None, symbols: Sequence[str] = ()
) -> None:
    """Add one part's counts to a job row: ``rows_written += rows``, the event-time range
    widened to ``[min_ts, max_ts]``, ``symbols`` merged (sorted); the status is unchanged.

    One transaction that writes first (so concurrent parts queue on the row instead of
    deadlocking): the parts of one job (source shards) may call it at the same time.

    Raises:
        StoreError: the database refused the write, or no job has that id.
    """
    column = job_runs.c

    def widened(current: Any, value: int | None, smaller: bool) -> Any:
        if value is None:
            return current
        beyond = current > value if smaller else current < value
        return sa.case((sa.or_(current.is_(None), beyond), int(value)), else_=current)

    def work(connection: Any) -> int:
        updated = connection.execute(
            job_runs.update().where(column.id == job_id).values(
                rows_written=sa.func.coalesce(column.rows_written, 0) + int(rows),
                min_ts=widened(column.min_ts, min_ts, smaller=True),
                max_ts=widened(column.max_ts, max_ts, smaller=False),
            )
        ).rowcount
        if updated == 1 and symbols:
            stored = connection.execute(sa.select(column.symbols).where(column.id == job_id)).scalar()
            merged = sorted({*(orjson.loads(stored) if stored else []), *symbols})
            connection.execute(job_runs.update().where(column.id == job_id).values(symbols=orjson.dumps(merged).decode()))
        return updated

    if _run(url, work) != 1:
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
