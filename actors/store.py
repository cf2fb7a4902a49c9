"""The SQL sink: idempotent upserts of confirmed bars and quarantine rows, SQLAlchemy 2 async.

Tables (SQLAlchemy Core, created if missing) derive their columns from the Arrow
schemas in ``graph/schemas.py`` through :data:`SQL_TYPES`, so a schema is written once:

* ``bars_ohlcv``: the BAR columns minus ``status`` (only confirmed bars are stored);
  primary key ``(symbol, timeframe, ts)``.
* ``quarantine``: the QUARANTINE columns; primary key ``(source, row, reason)``.

Neither table has a wall-clock column, and every write is an
``INSERT ... ON CONFLICT (primary key) DO UPDATE``: running the same job twice leaves
byte-identical rows, and a bar re-sent with new values (a late-tick correction) is
updated in place.

Float columns are nullable in SQL even where the Arrow field is not: SQLite cannot
store NaN and silently turns it into NULL (e.g. the VWAP of a bar whose trades all have
size 0), so a NOT NULL float column would make a legitimate bar fail the whole flush.
The read helpers turn NULL back into NaN for fields the Arrow schema marks non-null.

The operator API is synchronous; :class:`SqlStore` drives its async engine on a
private event loop it owns (a plain selector loop, driven by ``run_until_complete``). Called
from a thread that already runs an event loop (an async host), it runs the private loop
on a helper thread and blocks until done.

Secrets: a URL's password never appears in a ``repr``, a log line or an error raised
here; it is rendered as ``***`` (:func:`mask_url`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, quote_plus

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import ConfigDict, field_validator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # needs greenlet

from graph.operator import Emit, Operator, OperatorContext, Params
from graph.schemas import BAR, BAR_CONFIRMED, QUARANTINE

__all__ = [
    "SQL_TYPES",
    "metadata",
    "bars_ohlcv",
    "quarantine",
    "STREAM_TABLES",
    "table_from_schema",
    "arrow_schema",
    "async_url",
    "mask_url",
    "StoreError",
    "SqlStore",
    "SqlStoreParams",
    "read_table",
    "read_table_async",
    "read_bars",
    "read_bars_async",
    "read_quarantine",
]

#: Arrow type -> SQLAlchemy type, the only place column types are chosen.
SQL_TYPES: dict[pa.DataType, type[sa.types.TypeEngine]] = {
    pa.string(): sa.String,
    pa.int64(): sa.BigInteger,
    pa.float64(): sa.Double,
}
_ARROW_TYPES = {sql_type: arrow_type for arrow_type, sql_type in SQL_TYPES.items()}

#: The tables tickgraph writes; ``metadata.create_all`` creates them.
metadata = sa.MetaData()


def table_from_schema(
    name: str,
    schema: pa.Schema,
    primary_key: Iterable[str],
    *,
    exclude: Iterable[str] = (),
    meta: sa.MetaData = metadata,
    **kwargs: Any,
) -> sa.Table:
    """A SQLAlchemy table with one column per field of an Arrow schema, in schema order.

    Args:
        name: table name.
        schema: the Arrow schema; every field type must be in :data:`SQL_TYPES`.
        primary_key: names of the primary-key columns (NOT NULL).
        exclude: fields to leave out.
        meta: the ``MetaData`` to attach the table to.
        **kwargs: passed to ``sa.Table`` (dialect options such as ``sqlite_with_rowid``).

    Returns:
        The table. Nullability follows the Arrow field, except float columns, which
        are always nullable (SQLite stores NaN as NULL; see the module docstring).

    Raises:
        KeyError: a field type has no SQL type, or a primary-key name is not a field.
    """
    primary_key = tuple(primary_key)
    skip = set(exclude)
    missing = [key for key in primary_key if key not in schema.names or key in skip]
    if missing:
        raise KeyError(f"table {name!r}: primary-key columns {missing} are not in the schema")
    columns = []
    for field in schema:
        if field.name in skip:
            continue
        try:
            sql_type = SQL_TYPES[field.type]
        except KeyError:
            raise KeyError(
                f"table {name!r}: field {field.name!r} has Arrow type {field.type}, "
                f"which has no SQL type (known: {', '.join(map(str, SQL_TYPES))})"
            ) from None
        is_key = field.name in primary_key
        nullable = not is_key and (field.nullable or pa.types.is_floating(field.type))
        columns.append(sa.Column(field.name, sql_type(), primary_key=is_key, nullable=nullable))
    return sa.Table(name, meta, *columns, **kwargs)


#: Confirmed OHLCV bars. ``WITHOUT ROWID`` on SQLite: the composite key is the row's storage order.
bars_ohlcv = table_from_schema(
    "bars_ohlcv", BAR, ("symbol", "timeframe", "ts"), exclude=("status",), sqlite_with_rowid=False
)
#: Rejected input rows, with their reason.
quarantine = table_from_schema("quarantine", QUARANTINE, ("source", "row", "reason"))

#: Input stream name -> the table it is written to.
STREAM_TABLES: dict[str, sa.Table] = {"bars": bars_ohlcv, "quarantine": quarantine}
_SOURCE_SCHEMAS = {"bars": "BAR", "quarantine": "QUARANTINE"}  # names, for errors


def arrow_schema(table: sa.Table) -> pa.Schema:
    """The Arrow schema of a table built by :func:`table_from_schema`.

    Nullability is taken from the originating Arrow schema (BAR / QUARANTINE) where the
    table is one of tickgraph's, else from the SQL column.
    """
    origin = {"bars_ohlcv": BAR, "quarantine": QUARANTINE}.get(table.name)
    fields = []
    for column in table.columns:
        nullable = origin.field(column.name).nullable if origin is not None else column.nullable
        fields.append(pa.field(column.name, _ARROW_TYPES[type(column.type)], nullable=nullable))
    return pa.schema(fields)


# -- URLs ------------------------------------------------------------------------------

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str | URL, base_dir: Path | None = None) -> URL:
    """The async-driver form of a SQLAlchemy URL.

    ``sqlite://`` -> ``sqlite+aiosqlite://``, ``postgresql://`` (and ``postgres://``)
    -> ``postgresql+asyncpg://``; a URL naming a driver is kept. A relative SQLite
    database path is resolved against ``base_dir`` (the graph file's directory) when
    given, so the database lands in the same place whatever the worker's cwd.

    Raises:
        ValueError: not a SQLAlchemy URL (the message never contains the URL).
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            "not a SQLAlchemy URL; expected dialect[+driver]://user:password@host/database "
            "or sqlite:///path/to/file.db"
        ) from None
    drivername = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    parsed = parsed.set(drivername=drivername)
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and base_dir is not None
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).is_absolute()
    ):
        parsed = parsed.set(database=str(Path(base_dir) / database))
    return parsed


def mask_url(url: str | URL) -> str:
    """``url`` as text with its password replaced by ``***`` (unparseable: ``<invalid URL>``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


class StoreError(RuntimeError):
    """A database operation of :class:`SqlStore` failed; the message names the masked URL."""


# -- the operator ----------------------------------------------------------------------


class SqlStoreParams(Params):
    """Params of the ``sql_store`` kind.

    Attributes:
        url: any SQLAlchemy URL; ``sqlite://`` and ``postgresql://`` get their async
            driver (:func:`async_url`). Its password is masked in ``repr`` and errors.
        batch_rows: flush once this many rows are buffered (all input streams together).
        flush_interval_ms: on a watermark, flush if this long has passed since the last
            flush by ``ctx.clock_ns`` (without a clock, every watermark flushes).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = "sqlite:///tickgraph.db"
    batch_rows: int = 50_000
    flush_interval_ms: int = 1000

    @field_validator("url")
    @classmethod
    def _parse_url(cls, value: str) -> str:
        """Check the URL; make a relative SQLite path absolute against the cwd.

        SQLAlchemy resolves ``sqlite:///tickgraph.db`` against the working directory;
        resolving it here, where the graph is loaded (the driver), keeps that meaning
        on every Ray worker whatever its own cwd.
        """
        async_url(value)  # raises ValueError without echoing the URL
        parsed = make_url(value)
        database = parsed.database
        if (
            parsed.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not Path(database).is_absolute()
        ):
            value = parsed.set(database=str(Path.cwd() / database)).render_as_string(hide_password=False)
        return value

    @field_validator("batch_rows", "flush_interval_ms")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a positive integer, was {value}")
        return value

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" else value


T = TypeVar("T")
_CHUNK_ROWS = 8192  # rows per executemany inside a flush


class SqlStore(Operator):
    """Buffers confirmed bars and quarantine rows and upserts them into SQL tables.

    Input streams:
        ``bars``: BAR batches; rows with ``status == "confirmed"`` go to ``bars_ohlcv``,
        forming rows are ignored (counted in metrics).
        ``quarantine``: QUARANTINE batches, to the ``quarantine`` table.

    Flushes (one transaction each) happen when ``batch_rows`` rows are buffered, on a
    watermark once ``flush_interval_ms`` has passed since the last flush (every
    watermark if the context has no clock), and at end of stream. Writes are double
    buffered: the store's event loop runs on its own thread, a flush started by
    ``on_batch``/``on_watermark`` runs there while the next buffer fills, and at most
    one flush is in flight (the next one first waits for it), so database I/O never
    stalls the graph and memory stays bounded. ``on_eof`` waits for every write; a
    failed background flush raises :class:`StoreError` from the next hook.
    :meth:`close` disposes the engine and stops the loop; rows still buffered at close
    (after a failure, never after ``on_eof``) are not written: idempotent upserts make
    the restarted job's replay rewrite them.

    SQLite connections get ``PRAGMA journal_mode=WAL`` and ``synchronous=NORMAL``.
    Rows are sent as plain tuples through ``exec_driver_sql`` with a statement compiled
    once per dialect, one ``executemany`` per chunk of 8,192 rows; the next chunk is
    converted while the driver's thread executes the previous one, and the cyclic GC is
    paused during a flush. An upsert whose values equal the stored row skips the write
    (``WHERE ... IS DISTINCT FROM``), which makes a re-run cheaper.
    """

    Params: ClassVar[type[Params]] = SqlStoreParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: SqlStoreParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._url = async_url(params.url)
        self._masked_url = self._url.render_as_string(hide_password=True)
        self._secrets = _secret_forms(self._url.password)
        self._loop = _PrivateLoop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sql_store:{ctx.node_id}", daemon=True)
        self._thread.start()
        self._in_flight: tuple[Future, list[tuple[sa.Table, int]], int] | None = None
        self._engine: AsyncEngine | None = None
        self._buffers: dict[str, list[pa.RecordBatch]] = {stream: [] for stream in STREAM_TABLES}
        self._buffered_rows = 0
        self._written = {table.name: 0 for table in STREAM_TABLES.values()}
        self._forming_ignored = 0
        self._flushes = 0
        self._last_flush_ns = ctx.clock_ns() if ctx.clock_ns is not None else None
        try:
            self._engine = self._create_engine()
            self._statements = {
                stream: _upsert_sql(table, self._engine.dialect) for stream, table in STREAM_TABLES.items()
            }
            self._run(self._create_tables(), "creating the tables")
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return (
            f"SqlStore(node_id={self.ctx.node_id!r}, url={self._masked_url!r}, "
            f"batch_rows={self.params.batch_rows}, flush_interval_ms={self.params.flush_interval_ms})"
        )

    # -- operator hooks ----------------------------------------------------------------

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Buffer ``batch`` (BAR on ``bars``, QUARANTINE on ``quarantine``); flush if full.

        Raises:
            ValueError: ``stream`` is not ``bars`` or ``quarantine``, or the batch lacks
                a column of the target table.
            StoreError: the flush failed.
        """
        if stream not in STREAM_TABLES:
            raise ValueError(
                f"sql_store {self.ctx.node_id!r}: unknown input stream {stream!r}; "
                f"expected one of {', '.join(map(repr, STREAM_TABLES))}"
            )
        table = STREAM_TABLES[stream]
        missing = [column.name for column in table.columns if column.name not in batch.schema.names]
        if stream == "bars" and "status" not in batch.schema.names:
            missing.append("status")
        if missing:
            raise ValueError(
                f"sql_store {self.ctx.node_id!r}: batch on stream {stream!r} lacks column(s) "
                f"{missing} of the {_SOURCE_SCHEMAS[stream]} schema"
            )
        if stream == "bars":
            confirmed = pc.equal(batch["status"], BAR_CONFIRMED)
            kept = batch.filter(confirmed)
            self._forming_ignored += batch.num_rows - kept.num_rows
            batch = kept
        if batch.num_rows:
            self._buffers[stream].append(batch.select([column.name for column in table.columns]))
            self._buffered_rows += batch.num_rows
        if self._buffered_rows >= self.params.batch_rows:
            self.flush(wait=False)
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Flush if ``flush_interval_ms`` has passed since the last flush (no clock: always)."""
        if self._buffered_rows == 0:
            return []
        clock = self.ctx.clock_ns
        if clock is None or clock() - self._last_flush_ns >= self.params.flush_interval_ms * 1_000_000:
            self.flush(wait=False)
        return []

    def on_eof(self) -> list[Emit]:
        """Flush everything buffered and wait until it is written."""
        self.flush()
        return []

    def close(self) -> None:
        """Dispose the engine and stop the private event loop. Safe to call twice."""
        if self._loop.is_closed():
            return
        try:
            if self._in_flight is not None:
                concurrent.futures.wait([self._in_flight[0]])
                self._in_flight = None
            if self._engine is not None:
                self._run_private(self._engine.dispose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def metrics(self) -> dict[str, Any]:
        """``rows_written`` ({table: rows upserted}), ``forming_ignored``, ``flushes``, ``buffered``."""
        return {
            "rows_written": dict(self._written),
            "forming_ignored": self._forming_ignored,
            "flushes": self._flushes,
            "buffered": self._buffered_rows,
        }

    def flush(self, wait: bool = True) -> None:
        """Upsert every buffered row, all tables in one transaction.

        Args:
            wait: block until this flush is committed (default); ``False`` starts it
                on the store's thread and returns (after the previous flush finished).

        Raises:
            StoreError: the database refused this write or the previous background one
                (message has the masked URL).
        """
        self._settle()
        if self._buffered_rows == 0:
            return
        work = [
            (STREAM_TABLES[stream], self._statements[stream], batches)
            for stream, batches in self._buffers.items()
            if batches
        ]
        counts = [(table, sum(batch.num_rows for batch in batches)) for table, _, batches in work]
        future = asyncio.run_coroutine_threadsafe(self._upsert(work), self._loop)
        self._in_flight = (future, counts, self._buffered_rows)
        self._buffers = {stream: [] for stream in STREAM_TABLES}
        self._buffered_rows = 0
        self._flushes += 1
        if self.ctx.clock_ns is not None:
            self._last_flush_ns = self.ctx.clock_ns()
        if wait:
            self._settle()

    def wait_for_writes(self) -> None:
        """Block until the background flush in flight (if any) is committed.

        Raises:
            StoreError: that flush failed.
        """
        self._settle()

    def _settle(self) -> None:
        """Wait for the flush in flight, if any; count its rows or raise its error."""
        if self._in_flight is None:
            return
        future, counts, rows = self._in_flight
        self._in_flight = None
        try:
            future.result()
        except (OSError, sa.exc.SQLAlchemyError) as e:
            raise self._error(f"upserting {rows} rows", e) from (None if self._leaks(e) else e)
        for table, n in counts:
            self._written[table.name] += n

    # -- internals ---------------------------------------------------------------------

    def _create_engine(self) -> AsyncEngine:
        try:
            engine = create_async_engine(self._url)
        except (ImportError, sa.exc.SQLAlchemyError) as e:
            raise self._error("creating the engine", e) from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine

    async def _create_tables(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def _upsert(self, work: list[tuple[sa.Table, str, list[pa.RecordBatch]]]) -> None:
        """One transaction; rows are converted to tuples chunk by chunk while the driver's
        thread executes the previous chunk (SQLite releases the GIL while it steps)."""
        with _gc_paused():
            await self._upsert_chunks(work)

    async def _upsert_chunks(self, work: list[tuple[sa.Table, str, list[pa.RecordBatch]]]) -> None:
        async with self._engine.begin() as connection:
            pending: asyncio.Future | None = None
            try:
                for table, sql, batches in work:
                    for chunk in _chunks(batches, _CHUNK_ROWS):
                        rows = _rows(chunk, table)
                        if pending is not None:
                            await pending
                        pending = asyncio.ensure_future(connection.exec_driver_sql(sql, rows))
                        await asyncio.sleep(0)  # let the task hand its rows to the driver
                if pending is not None:
                    await pending
            finally:
                if pending is not None and not pending.done():  # failed mid-flush: settle first
                    await asyncio.gather(pending, return_exceptions=True)

    def _run(self, coroutine: Coroutine[Any, Any, T], action: str) -> T:
        try:
            return self._run_private(coroutine)
        except (OSError, sa.exc.SQLAlchemyError) as e:
            raise self._error(action, e) from (None if self._leaks(e) else e)

    def _run_private(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the store's loop thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _error(self, action: str, error: BaseException) -> StoreError:
        message = str(error)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return StoreError(
            f"sql_store {self.ctx.node_id!r}: {action} on {self._masked_url} failed: "
            f"{type(error).__name__}: {message}"
        )

    def _leaks(self, error: BaseException | None) -> bool:
        while error is not None:
            if any(secret in str(error) for secret in self._secrets):
                return True
            error = error.__cause__ or error.__context__
        return False


class _PrivateLoop(asyncio.SelectorEventLoop):
    """The store's own event loop.

    A driver thread may still post a callback after the loop is closed (aiosqlite does
    after a failed connect: it queues its own stop with a future nobody awaits); such
    late callbacks are dropped instead of raising ``RuntimeError`` in that thread.
    """

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if self.is_closed():
                return None
            raise


def _secret_forms(password: str | None) -> list[str]:
    """The password as it may appear in text: raw and URL-quoted."""
    if not password:
        return []
    return sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _upsert_sql(table: sa.Table, dialect: sa.engine.Dialect) -> str:
    """``INSERT ... ON CONFLICT (pk) DO UPDATE`` for ``table``, compiled for ``dialect``.

    The statement takes positional parameters in table column order (checked).
    """
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect.name)
    if insert is None:
        raise ValueError(f"sql_store supports sqlite and postgresql upserts, not {dialect.name!r}")
    statement = insert(table)
    key = [column.name for column in table.primary_key.columns]
    values = [column for column in table.columns if not column.primary_key]
    statement = statement.on_conflict_do_update(
        index_elements=key,
        set_={column.name: statement.excluded[column.name] for column in values},
        # skip rewriting rows that would not change (a re-run): same content, less I/O
        where=sa.or_(*(column.is_distinct_from(statement.excluded[column.name]) for column in values)),
    )
    compiled = statement.compile(dialect=dialect)
    order = [column.name for column in table.columns]
    if not compiled.positional or list(compiled.positiontup) != order:
        raise ValueError(
            f"sql_store: driver {dialect.driver!r} does not take positional parameters in column "
            f"order (paramstyle {dialect.paramstyle!r})"
        )
    return str(compiled)


def _chunks(batches: list[pa.RecordBatch], rows: int) -> Iterator[list[pa.RecordBatch]]:
    """Consecutive groups of batches of about ``rows`` rows each."""
    group: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        group.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield group
            group, size = [], 0
    if group:
        yield group


def _rows(batches: list[pa.RecordBatch], table: sa.Table) -> list[tuple]:
    """Plain Python tuples in table column order (NaN floats kept; nulls -> None).

    Repetitive strings (symbol, timeframe) share one ``str`` object per distinct value.
    """
    rows: list[tuple] = []
    for batch in batches:
        columns = [_pylist(batch[column.name]) for column in table.columns]
        rows.extend(zip(*columns))
    return rows


def _pylist(array: pa.Array) -> list:
    if array.null_count:
        return array.to_pylist()
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        return array.to_numpy().tolist()
    if pa.types.is_string(array.type):
        encoded = pc.dictionary_encode(array)
        if len(encoded.dictionary) * 4 <= len(array):
            values = np.array(encoded.dictionary.to_pylist(), dtype=object)
            return values[encoded.indices.to_numpy()].tolist()
    return array.to_pylist()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building and sending millions of tuples (they hold no
    cycles; collections triggered by their allocation cost more than the conversion)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# -- reading back ------------------------------------------------------------------------


async def read_table_async(
    url: str | URL,
    table: str | sa.Table,
    *,
    where: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
) -> pa.Table:
    """All rows of ``bars_ohlcv`` or ``quarantine``, ordered by primary key.

    Args:
        url: SQLAlchemy URL (mapped by :func:`async_url`).
        table: the table or its name.
        where: ``{column: value}`` equality filters, ANDed.
        base_dir: resolves a relative SQLite path, as in :func:`async_url`.

    Returns:
        An Arrow table of :func:`arrow_schema` (``ts`` int64 ns UTC); NULL floats in
        fields the Arrow schema marks non-null come back as NaN.
    """
    table = table if isinstance(table, sa.Table) else metadata.tables[table]
    statement = sa.select(table).order_by(*table.primary_key.columns)
    for name, value in (where or {}).items():
        statement = statement.where(table.c[name] == value)
    engine = create_async_engine(async_url(url, base_dir))
    schema = arrow_schema(table)
    try:
        with _gc_paused():
            async with engine.connect() as connection:
                rows = (await connection.execute(statement)).all()
            columns = list(zip(*rows)) if rows else [[] for _ in schema]
            del rows
            arrays = []
            for field, values in zip(schema, columns):
                array = pa.array(values, type=field.type)
                if pa.types.is_floating(field.type) and not field.nullable:
                    array = pc.fill_null(array, np.nan)
                arrays.append(array)
    finally:
        await engine.dispose()
    return pa.Table.from_arrays(arrays, schema=schema)


def read_table(
    url: str | URL,
    table: str | sa.Table,
    *,
    where: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
) -> pa.Table:
    """Synchronous :func:`read_table_async` (runs its own event loop; not from async code)."""
    return asyncio.run(read_table_async(url, table, where=where, base_dir=base_dir))


def _where(**filters: Any) -> dict[str, Any]:
    return {name: value for name, value in filters.items() if value is not None}


async def read_bars_async(
    url: str | URL, *, symbol: str | None = None, timeframe: str | None = None, base_dir: Path | None = None
) -> pd.DataFrame:
    """Stored bars as a DataFrame ordered by (symbol, timeframe, ts).

    Returns:
        Columns of BAR minus ``status``; ``ts`` int64 ns UTC (bar open time), prices
        float64, ``trade_count`` int64, ``symbol``/``timeframe`` strings.
    """
    table = await read_table_async(
        url, bars_ohlcv, where=_where(symbol=symbol, timeframe=timeframe), base_dir=base_dir
    )
    return table.to_pandas()


def read_bars(
    url: str | URL, *, symbol: str | None = None, timeframe: str | None = None, base_dir: Path | None = None
) -> pd.DataFrame:
    """Synchronous :func:`read_bars_async` (runs its own event loop; not from async code)."""
    return asyncio.run(read_bars_async(url, symbol=symbol, timeframe=timeframe, base_dir=base_dir))


def read_quarantine(
    url: str | URL, *, source: str | None = None, base_dir: Path | None = None
) -> pd.DataFrame:
    """Stored quarantine rows as a DataFrame ordered by (source, row, reason); QUARANTINE columns."""
    return read_table(url, quarantine, where=_where(source=source), base_dir=base_dir).to_pandas()
