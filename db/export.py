"""Exports: stored ticks, bars or signals to a Parquet or CSV file, tracked in ``job_runs``.

    request = ExportRequest(dataset="bars", url="sqlite:///tickgraph.db", symbols=["AMZN"],
                            start_ns=..., end_ns=..., timeframe="1m", output=Path("amzn_1m.parquet"))
    result = run_export(request)         # ExportResult(rows=387, job_id=..., ...)

Rows are the stored ticks, bars or signals for the given symbols with
``start_ns <= ts < end_ns`` (bars: bar open time; and one timeframe), read through the one
read path over the tick catalog and the SQL store (``catalog/reader.py``): ticks from the
catalog (and ``tick_data``), ordered by (symbol, ts, seq); signals from the catalog
(per-tick) and ``signals`` (bar-level), ordered by (symbol, ts, name, provider); bars from
``bars_ohlcv`` by (symbol, ts). Columns are the stream schemas' (``graph/schemas.py``;
signals plus ``created_at``, null for catalog rows), except that ``ts`` (and
``created_at``) are ``timestamp[ns, tz=UTC]``: nanoseconds survive, and pandas, polars and
DuckDB read them as UTC datetimes. Parquet keeps nullability and types exactly (pyarrow stores the Arrow
schema); CSV has a header row, ``ts`` as ``2012-06-21 13:30:00.017459617Z``, nulls
empty.

The file is written to a temporary name in the output's directory and renamed into
place, so a reader never sees half a file; an existing file at ``output`` is replaced.
An empty result writes a file with the schema and no rows (``ExportResult.rows == 0``).
Each export is one ``job_runs`` row (``job_name`` ``export``, status ``completed`` or
``failed``, ``rows_written``, event-time range, output path and parameters in
``metadata``), written to the SQL store named by ``url`` (created if it is a SQLite file
that does not exist yet and the catalog has the rows).

Argument problems (unknown symbol, reversed range, bad timeframe, unwritable output,
missing database) raise :class:`ExportError` before any job row is written.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db.engine import StoreError, absolute_sqlite_url, async_url, mask_url
from db.jobs import finish_job, start_job
from db.tables import arrow_schema, bars_ohlcv, signals, tick_data
from graph.timeframes import TIMEFRAMES
from graph.times import iso_ns

__all__ = [
    "DATASETS",
    "FORMATS",
    "ExportError",
    "ExportRequest",
    "ExportResult",
    "export_schema",
    "run_export",
    "validate_request",
]

#: Dataset name -> the SQL table holding it (ticks and signals: also the tick catalog).
DATASETS: dict[str, sa.Table] = {"ticks": tick_data, "bars": bars_ohlcv, "signals": signals}
FORMATS = ("parquet", "csv")
_TIMESTAMP = pa.timestamp("ns", tz="UTC")
_TIME_COLUMNS = ("ts", "created_at")


class ExportError(ValueError):
    """A bad export request (argument named in the message); nothing was written."""


@dataclass(frozen=True)
class ExportRequest:
    """One export.

    Attributes:
        dataset: ``ticks``, ``bars`` or ``signals``.
        url: SQLAlchemy URL of the store to read (and to record the job in).
        catalog_dir: the tick catalog to read ticks and per-tick signals from (None: SQL only).
        symbols: symbols to export, each must be stored in the dataset's table.
        start_ns, end_ns: event-time range, int64 ns UTC, ``start_ns <= ts < end_ns``.
        output: the file to write (parent directories are created).
        fmt: ``parquet`` or ``csv``.
        timeframe: bars only: which timeframe (``1s 1m 5m 15m 1h 1d``).
        provider: keep only this provider (ticks, signals); None: all.
        names: signals only: keep only these signal names; None: all.
    """

    dataset: str
    url: str
    symbols: Sequence[str]
    start_ns: int
    end_ns: int
    output: Path
    fmt: str = "parquet"
    timeframe: str | None = None
    provider: str | None = None
    names: Sequence[str] | None = None
    catalog_dir: Path | None = None


@dataclass
class ExportResult:
    """What an export did.

    Attributes:
        rows: rows written (0: an empty file with the schema).
        output: the file written (absolute).
        job_id: its ``job_runs`` id.
        min_ts, max_ts: event-time range of the rows written (None when empty).
        schema: the file's Arrow schema.
    """

    rows: int
    output: Path
    job_id: str
    min_ts: int | None = None
    max_ts: int | None = None
    schema: pa.Schema = field(default_factory=pa.schema)


def export_schema(dataset: str) -> pa.Schema:
    """The Arrow schema of an export file: the rows' (TICK; SIGNAL + ``created_at``; the
    ``bars_ohlcv`` columns) with ns UTC timestamps for time columns."""
    from catalog.reader import SIGNAL_ROWS

    schema = SIGNAL_ROWS if dataset == "signals" else arrow_schema(DATASETS[dataset])
    return pa.schema([f.with_type(_TIMESTAMP) if f.name in _TIME_COLUMNS else f for f in schema])


def _reader(request: ExportRequest) -> Any:
    from catalog.reader import StoreReader

    return StoreReader(request.catalog_dir, request.url)




def _database_missing(url: str) -> str | None:
    """Why ``url`` names no existing database (SQLite file absent), else None."""
    from catalog.reader import sql_database_exists

    if sql_database_exists(url):
        return None
    database = make_url(absolute_sqlite_url(url)).database
    return f"--database-url: no SQLite database at {database} (run a job that stores data first)"


def validate_request(request: ExportRequest) -> Path:
    """Check a request before anything is written; returns the absolute output path.

    Raises:
        ExportError: naming the argument: unknown dataset/format/timeframe, empty
            symbol list, ``end`` not after ``start``, an output that cannot be written,
            a missing database or table, or a symbol with no rows in the dataset.
    """
    if request.dataset not in DATASETS:
        raise ExportError(f"dataset: {request.dataset!r} is not one of {', '.join(DATASETS)}")
    if request.fmt not in FORMATS:
        raise ExportError(f"--format: {request.fmt!r} is not one of {', '.join(FORMATS)}")
    if request.dataset == "bars":
        if request.timeframe not in TIMEFRAMES:
            raise ExportError(f"--timeframe: {request.timeframe!r} is not a timeframe ({', '.join(TIMEFRAMES)})")
    elif request.timeframe is not None:
        raise ExportError(f"--timeframe: applies to bars only, not {request.dataset}")
    if request.names is not None and request.dataset != "signals":
        raise ExportError(f"--names: applies to signals only, not {request.dataset}")
    if request.provider is not None and request.dataset == "bars":
        raise ExportError("--provider: bars carry no provider; leave it out for bars")
    if not request.symbols or not all(request.symbols):
        raise ExportError("--symbols: give one or more symbols, comma-separated (e.g. AMZN,BTCUSDT)")
    if request.end_ns <= request.start_ns:
        raise ExportError(
            f"--end {iso_ns(request.end_ns)} must be after --start {iso_ns(request.start_ns)} (the range is [start, end))"
        )
    output = _check_output(request.output)
    try:
        async_url(request.url)
    except ValueError as e:
        raise ExportError(f"--database-url: {e}") from None
    missing = _database_missing(request.url)
    catalog = request.catalog_dir is not None and Path(request.catalog_dir).is_dir()
    if missing and (request.dataset == "bars" or not catalog):
        raise ExportError(missing)
    table = DATASETS[request.dataset]
    in_catalog = catalog and request.dataset != "bars"
    where = f"{table.name} on {mask_url(request.url)}" + (f" or the catalog {request.catalog_dir}" if in_catalog else "")
    try:
        stored = _reader(request).symbols(request.dataset)
    except (OSError, sa.exc.SQLAlchemyError) as e:
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        raise ExportError(f"--database-url: cannot read {where}: {message}") from None
    unknown = [s for s in request.symbols if s not in stored]
    if unknown:
        known = ", ".join(stored[:20]) + (" ..." if len(stored) > 20 else "") if stored else "none: nothing is stored"
        raise ExportError(
            f"--symbols: unknown symbol(s) {', '.join(map(repr, unknown))}: not in {where} (stored: {known})"
        )
    return output


def _check_output(output: Path) -> Path:
    """The absolute output path, after proving a file can be created next to it."""
    path = Path(output).expanduser().absolute()
    if path.is_dir():
        raise ExportError(f"--output: {path} is a directory; give a file path (e.g. {path / 'export.parquet'})")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ExportError(f"--output: cannot write {path}: {blocker} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe", delete=True)
        probe.close()
    except OSError as e:
        raise ExportError(f"--output: cannot write {path}: {e.strerror or e}") from None
    return path


def run_export(request: ExportRequest, *, clock_ns: Callable[[], int] = time.time_ns) -> ExportResult:
    """Validate, read the rows, write the file and record the job.

    Args:
        request: what to export.
        clock_ns: wall clock for ``job_runs`` times (injectable for tests).

    Returns:
        :class:`ExportResult`.

    Raises:
        ExportError: a bad request (nothing written, no job row).
        StoreError: reading or writing failed after the job started (the job row is
            marked ``failed`` with the message).
    """
    output = validate_request(request)
    meta: dict[str, Any] = {
        "dataset": request.dataset,
        "format": request.fmt,
        "output": str(output),
        "start": iso_ns(request.start_ns),
        "end": iso_ns(request.end_ns),
        "timeframe": request.timeframe,
        "names": list(request.names) if request.names is not None else None,
    }
    job_id = start_job(
        request.url, "export", provider=request.provider, symbols=list(request.symbols), metadata_json=meta, clock_ns=clock_ns
    )
    try:
        table = _read(request)
        _write(table, output, request.fmt)
    except BaseException as e:
        message = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        finish_job(request.url, job_id, "failed", error_message=message, clock_ns=clock_ns)
        if isinstance(e, (OSError, sa.exc.SQLAlchemyError)):
            raise StoreError(f"export to {output} failed: {message}") from None
        raise
    ts = table.column("ts")
    rows = table.num_rows
    min_ts = ts.cast(pa.int64()).to_numpy().min().item() if rows else None
    max_ts = ts.cast(pa.int64()).to_numpy().max().item() if rows else None
    finish_job(
        request.url, job_id, "completed", rows_written=rows, min_ts=min_ts, max_ts=max_ts,
        metadata_json={**meta, "empty": rows == 0}, clock_ns=clock_ns,
    )  # fmt: skip
    return ExportResult(rows=rows, output=output, job_id=job_id, min_ts=min_ts, max_ts=max_ts, schema=table.schema)


def _read(request: ExportRequest) -> pa.Table:
    """The stored rows as a table of :func:`export_schema` (``catalog/reader.py``)."""
    reader = _reader(request)
    symbols, start, end = list(request.symbols), request.start_ns, request.end_ns
    if request.dataset == "bars":
        stored = reader.bars(symbols, start, end, timeframe=request.timeframe)
    elif request.dataset == "ticks":
        stored = reader.ticks(symbols, start, end, provider=request.provider)
    else:
        stored = reader.signals(symbols, start, end, names=request.names, provider=request.provider)
    schema = export_schema(request.dataset)
    return pa.Table.from_arrays([stored.column(f.name).cast(f.type) for f in schema], schema=schema)


def _write(table: pa.Table, output: Path, fmt: str) -> None:
    """Write to a temporary file beside ``output``, then rename it into place."""
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if fmt == "parquet":
            pq.write_table(table, temporary, compression="zstd")
        else:
            pa_csv.write_csv(table, temporary, pa_csv.WriteOptions(include_header=True))
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
