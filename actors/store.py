"""The ``sql_store`` sink: idempotent upserts of bars, signals, ticks and quarantine rows.

Input stream -> table (tables: ``db/tables.py``):

============== =============== ===========================================================
stream         table           rows written
============== =============== ===========================================================
``bars``       ``bars_ohlcv``  status ``confirmed`` and ``corrected`` (``forming`` ignored);
               ``bars_partial`` status ``partial`` (bars not seen whole: never a final row)
``signals``    ``signals``     every row; ``created_at`` set on first insert only
``ticks``      ``tick_data``   every row (TICK)
``quarantine`` ``quarantine``  every row
============== =============== ===========================================================

Every write is an ``INSERT ... ON CONFLICT (primary key) DO UPDATE`` that changes a
stored row only when a value differs: running the same job twice leaves identical rows,
and a bar re-sent with new values (a late-tick correction, status ``corrected``) is
updated in place. ``signals.created_at`` (int64 ns UTC, the wall clock of the flush that
first inserted the row, from ``ctx.clock_ns``) is never touched by the update, so a
re-run keeps it too: identical rows, including ``created_at``.

A process-local bar cache (``db/cache.py``) registered for the same URL is told about
every committed ``bars_ohlcv`` write, so reads through it in this process see the
store's writes as soon as the flush has committed.

The operator API is synchronous; :class:`SqlStore` drives its async engine on a
private event loop running on its own thread, so a flush proceeds while the next
batches are buffered (see the class docstring).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import (
    StoreError,
    async_url,
    connect_timeout_s,
    create_engine,
    describe_db_error,
    gc_paused,
    mask_url,
    pg_copy_upsert_sql,
    secret_forms,
    server_address,
    statement_table,
    upsert_sql,
    writable_store_url,
)
from db import cache as bar_cache
from db.tables import bars_ohlcv, bars_partial, create_tables, quarantine, signals, tick_data
from graph.operator import Emit, Operator, OperatorContext, Params, check_snapshot_version
from graph.schemas import BAR_CONFIRMED, BAR_CORRECTED, BAR_PARTIAL

_log = logging.getLogger("tickgraph.store")

__all__ = ["STREAM_TABLES", "STORED_BAR_STATUSES", "SqlStore", "SqlStoreParams"]

#: Input stream name -> the table it is written to.
STREAM_TABLES: dict[str, sa.Table] = {
    "bars": bars_ohlcv,
    "quarantine": quarantine,
    "signals": signals,
    "ticks": tick_data,
}
_SOURCE_SCHEMAS = {"bars": "BAR", "quarantine": "QUARANTINE", "signals": "SIGNAL", "ticks": "TICK"}  # for errors
#: Bar statuses written to ``bars_ohlcv`` (a correction overwrites the confirmed row).
STORED_BAR_STATUSES = (BAR_CONFIRMED, BAR_CORRECTED)
#: Every table the store writes: the input streams' and ``bars_partial`` (``bars`` rows of status partial).
_TABLES: dict[str, sa.Table] = {**STREAM_TABLES, "bars_partial": bars_partial}
#: Columns the store fills itself (not in the input batches): table -> column.
_STORE_COLUMNS = {"signals": "created_at"}


# -- the operator ----------------------------------------------------------------------


class SqlStoreParams(Params):
    """Params of the ``sql_store`` kind.

    Attributes:
        url: any SQLAlchemy URL; ``sqlite://`` and ``postgresql://`` get their async
            driver (:func:`async_url`). Its password is masked in ``repr`` and errors.
        batch_rows: flush once this many rows are buffered (all input streams together).
        flush_interval_ms: on a watermark, flush if this long has passed since the last
            flush by ``ctx.clock_ns`` (without a clock, every watermark flushes).
        connect_timeout_s: give up connecting to a database server after this long
            (seconds); None: the URL's ``?connect_timeout=``, else
            :data:`db.engine.DEFAULT_CONNECT_TIMEOUT_S` (10 s).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = "sqlite:///tickgraph.db"
    batch_rows: int = 50_000
    flush_interval_ms: int = 1000
    connect_timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("url")
    @classmethod
    def _parse_url(cls, value: str) -> str:
        """Check the URL (never echoing it); pin a relative SQLite path to the loading cwd."""
        return writable_store_url(value)

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
#: Rows per SQLite upsert statement (multi-row VALUES; see ``db.engine.upsert_sql``).
_SQLITE_ROWS_PER_STATEMENT = 64


class _Statements(NamedTuple):
    """The compiled upserts of one table: one row per statement, ``rows`` per statement
    (SQLite), and the ``COPY`` path's (stage, create, merge) statements (PostgreSQL)."""

    single: str
    multi: str | None
    rows: int
    copy: tuple[str, str, str] | None = None
_STORED_STATUSES = pa.array(STORED_BAR_STATUSES)
_CHUNK_ROWS = 8192  # rows per executemany inside a flush


class SqlStore(Operator):
    """Buffers bars, signals, ticks and quarantine rows and upserts them into SQL tables.

    Input streams (see the module docstring for the tables):
        ``bars``: BAR batches; rows with status ``confirmed`` or ``corrected`` go to
        ``bars_ohlcv``, forming rows are ignored (counted in metrics).
        ``signals``: SIGNAL batches, to ``signals`` (``created_at`` added at flush).
        ``ticks``: TICK batches, to ``tick_data``.
        ``quarantine``: QUARANTINE batches, to the ``quarantine`` table.

    Flushes (one transaction each) happen when ``batch_rows`` rows are buffered, on a
    watermark once ``flush_interval_ms`` has passed since the last flush (every
    watermark if the context has no clock), and at end of stream. Writes are double
    buffered: the store's event loop runs on its own thread, a flush started by
    ``on_batch``/``on_watermark`` runs there while the next buffer fills, and at most
    one flush is in flight (the next one first waits for it), so database I/O never
    stalls the graph and memory stays bounded. ``on_eof`` waits for every write; a
    failed background flush raises :class:`StoreError` from the next hook.
    :meth:`close` first writes rows still buffered (a run aborted by another node's
    failure: a healthy store keeps everything it received), then disposes the engine and
    stops the loop.

    SQLite connections get ``PRAGMA journal_mode=WAL`` and ``synchronous=NORMAL``.
    Rows are sorted by primary key (on the store's thread) and sent as plain tuples
    through ``exec_driver_sql`` with statements compiled once per dialect, one
    ``executemany`` per chunk of 8,192 rows (SQLite: 64 rows per statement,
    ``VALUES (...), (...)``). PostgreSQL takes the rows by ``COPY`` into a temporary
    stage and merges them with one ``INSERT ... SELECT ... ON CONFLICT`` per table
    (same upsert semantics, one statement per table and flush); the next chunk is
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
        self._secrets = secret_forms(self._url.password)
        self._loop = _PrivateLoop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sql_store:{ctx.node_id}", daemon=True)
        self._thread.start()
        self._in_flight: tuple[Future, list[tuple[sa.Table, int]], int] | None = None
        self._engine: AsyncEngine | None = None
        self._buffers: dict[str, list[pa.RecordBatch]] = {stream: [] for stream in _TABLES}
        self._buffered_rows = 0
        self._written = {table.name: 0 for table in _TABLES.values()}
        self._forming_ignored = 0
        self._failed = False  # a write failed: close() must not try the buffer again
        self._flushes = 0
        self._last_flush_ns = ctx.clock_ns() if ctx.clock_ns is not None else None
        # created_at of signal rows: the host's wall clock (a sink's bookkeeping, not event time)
        self._wall_clock = ctx.clock_ns or time.time_ns
        self._cache_key = bar_cache.cache_key(params.url)
        try:
            self._engine = self._create_engine()
            dialect = self._engine.dialect
            multi = _SQLITE_ROWS_PER_STATEMENT if dialect.name == "sqlite" else 1
            self._statements = {
                stream: _Statements(
                    single=upsert_sql(table, dialect),
                    multi=upsert_sql(table, dialect, rows=multi) if multi > 1 else None,
                    rows=multi,
                    copy=pg_copy_upsert_sql(table) if dialect.name == "postgresql" else None,
                )
                for stream, table in _TABLES.items()
            }
            self._connect()
        except BaseException:
            self._release()
            raise

    def __repr__(self) -> str:
        return (
            f"SqlStore(node_id={self.ctx.node_id!r}, url={self._masked_url!r}, "
            f"batch_rows={self.params.batch_rows}, flush_interval_ms={self.params.flush_interval_ms})"
        )

    # -- operator hooks ----------------------------------------------------------------

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Buffer ``batch`` (BAR on ``bars``, SIGNAL on ``signals``, TICK on ``ticks``,
        QUARANTINE on ``quarantine``); flush if full.

        Raises:
            ValueError: ``stream`` is not one of those, or the batch lacks a column of
                the target table.
            StoreError: the flush failed.
        """
        if stream not in STREAM_TABLES:
            raise ValueError(
                f"sql_store {self.ctx.node_id!r}: unknown input stream {stream!r}; "
                f"expected one of {', '.join(map(repr, STREAM_TABLES))}"
            )
        table = STREAM_TABLES[stream]
        own = _STORE_COLUMNS.get(table.name)
        names = [column.name for column in table.columns if column.name != own]
        missing = [name for name in names if name not in batch.schema.names]
        if stream == "bars" and "status" not in batch.schema.names:
            missing.append("status")
        if missing:
            raise ValueError(
                f"sql_store {self.ctx.node_id!r}: batch on stream {stream!r} lacks column(s) "
                f"{missing} of the {_SOURCE_SCHEMAS[stream]} schema"
            )
        if stream == "bars":
            partial = pc.equal(batch["status"], BAR_PARTIAL)
            if pc.any(partial).as_py():
                self._buffers["bars_partial"].append(batch.filter(partial).select(names))
                self._buffered_rows += int(pc.sum(partial).as_py())
            stored = pc.is_in(batch["status"], _STORED_STATUSES)
            kept = batch if pc.all(stored).as_py() else batch.filter(stored)
            self._forming_ignored += batch.num_rows - kept.num_rows - int(pc.sum(partial).as_py() or 0)
            batch = kept
        if batch.num_rows:
            self._buffers[stream].append(batch.select(names))
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
        """Write what is still buffered (a run aborted elsewhere: nothing received is lost),
        then dispose the engine and stop the private event loop. Safe to call twice.

        Raises:
            StoreError: the last write failed (after everything was released).
        """
        if self._loop.is_closed():
            return
        try:
            if self._buffered_rows and not self._failed:
                self.flush()
        finally:
            self._release()

    def _release(self) -> None:
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

    def snapshot(self) -> dict[str, Any]:
        """At a checkpoint barrier: commit every row received before it, then the counters.

        So the store's durable state is exactly the checkpoint's: after a restore, rows sent
        again are upserted over identical rows.

        Raises:
            StoreError: the commit failed.
        """
        self.flush()
        return {"version": 1, "written": dict(self._written), "forming_ignored": self._forming_ignored, "flushes": self._flushes}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the counters of a :meth:`snapshot` (the rows are in the database already).

        Raises:
            ValueError: a snapshot of another version.
        """
        check_snapshot_version(state, 1, "sql_store")
        self._written = {**self._written, **state["written"]}
        self._forming_ignored, self._flushes = state["forming_ignored"], state["flushes"]

    def discard(self) -> None:
        """Forget the buffered rows (a restart: they come again after the checkpoint)."""
        self._buffers = {stream: [] for stream in _TABLES}
        self._buffered_rows = 0

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
        now = self._wall_clock()
        work = [
            (_TABLES[stream], self._statements[stream], self._with_store_columns(_TABLES[stream], batches, now))
            for stream, batches in self._buffers.items()
            if batches
        ]
        counts = [(table, sum(batch.num_rows for batch in batches)) for table, _, batches in work]
        future = asyncio.run_coroutine_threadsafe(self._upsert(work), self._loop)
        self._in_flight = (future, counts, self._buffered_rows)
        self._buffers = {stream: [] for stream in _TABLES}
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
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as e:
            self._failed = True
            per_table = ", ".join(f"{table.name} {n:,}" for table, n in counts)
            failed = statement_table(e)
            where = f" (writing {failed})" if failed else ""
            raise self._error(f"upserting {rows:,} rows [{per_table}]{where}", e) from None
        for table, n in counts:
            self._written[table.name] += n

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _with_store_columns(table: sa.Table, batches: list[pa.RecordBatch], now_ns: int) -> list[pa.RecordBatch]:
        """Append the columns the store fills itself (``signals.created_at`` = ``now_ns``)."""
        own = _STORE_COLUMNS.get(table.name)
        if own is None:
            return batches
        return [b.append_column(own, pa.array(np.full(b.num_rows, now_ns, dtype=np.int64))) for b in batches]

    def _create_engine(self) -> AsyncEngine:
        try:
            return create_engine(self._url, connect_timeout=self._connect_timeout_s)
        except (ImportError, ValueError, sa.exc.SQLAlchemyError) as e:
            raise self._error("creating the engine", e) from None

    @property
    def _connect_timeout_s(self) -> float:
        return self.params.connect_timeout_s or connect_timeout_s(self._url)

    def _connect(self) -> None:
        """First connection (creates the tables); says what it waits for if the server is slow.

        Raises:
            StoreError: no answer within the connect timeout (naming host and seconds), or
                the database refused.
        """
        timeout = self._connect_timeout_s
        server = server_address(self._url)
        notice = threading.Timer(
            1.0,
            lambda: _log.warning(
                "sql_store %r: waiting for the database at %s to answer (gives up after %g s)",
                self.ctx.node_id, server, timeout,
            ),
        )
        notice.daemon = True
        notice.start()
        try:
            self._run_private(self._create_tables())
        except (TimeoutError, asyncio.TimeoutError):
            raise StoreError(
                f"sql_store {self.ctx.node_id!r}: the database at {server} ({self._masked_url}) did not answer "
                f"within {timeout:g} s (connect timeout; set the param connect_timeout_s or ?connect_timeout= "
                "in the URL); is the server up and is this its port?"
            ) from None
        except (OSError, sa.exc.SQLAlchemyError) as e:
            raise self._error("creating the tables", e) from None
        except ValueError as e:  # a table of an older layout
            raise StoreError(f"sql_store {self.ctx.node_id!r}: {self._masked_url}: {e}") from None
        finally:
            notice.cancel()

    async def _create_tables(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(create_tables)

    async def _upsert(self, work: list[tuple[sa.Table, str, list[pa.RecordBatch]]]) -> None:
        """One transaction; rows are converted to tuples chunk by chunk while the driver's
        thread executes the previous chunk (SQLite releases the GIL while it steps).
        After the commit, bar caches of this process registered for the URL are told."""
        with gc_paused():
            await self._upsert_chunks(work)
        for table, _, batches in work:
            if table is bars_ohlcv:
                bar_cache.notify_write(self._cache_key, batches)

    async def _upsert_chunks(self, work: list[tuple[sa.Table, _Statements, list[pa.RecordBatch]]]) -> None:
        async with self._engine.begin() as connection:
            pending: asyncio.Future | None = None
            try:
                for table, statements, batches in work:
                    if statements.copy is not None:
                        await self._copy_upsert(connection, table, statements.copy, batches)
                        continue
                    for chunk in _chunks(_in_key_order(table, batches), _CHUNK_ROWS):
                        for sql, params in _calls(chunk, table, statements):
                            if pending is not None:
                                await pending
                            pending = asyncio.ensure_future(connection.exec_driver_sql(sql, params))
                            await asyncio.sleep(0)  # let the task hand its rows to the driver
                if pending is not None:
                    await pending
            finally:
                if pending is not None and not pending.done():  # failed mid-flush: settle first
                    await asyncio.gather(pending, return_exceptions=True)

    async def _copy_upsert(
        self, connection: Any, table: sa.Table, statements: tuple[str, str, str], batches: list[pa.RecordBatch]
    ) -> None:
        """PostgreSQL: ``COPY`` the rows into a temporary stage, then one merging upsert
        (``db.engine.pg_copy_upsert_sql``), inside the flush's transaction."""
        stage, create, merge = statements
        raw = (await connection.get_raw_connection()).driver_connection  # asyncpg
        if not raw.is_in_transaction():  # SQLAlchemy begins lazily, on its first statement
            await connection.exec_driver_sql("SELECT 1")
        if not raw.is_in_transaction():
            raise StoreError(f"sql_store {self.ctx.node_id!r}: the flush's transaction did not start on {self._masked_url}")
        await raw.execute(create)
        columns = [column.name for column in table.columns]
        for chunk in _chunks(batches, _CHUNK_ROWS * 8):
            await raw.copy_records_to_table(stage, records=_rows(chunk, table), columns=columns)
        await raw.execute(merge)
        await raw.execute(f"TRUNCATE {stage}")

    def _run(self, coroutine: Coroutine[Any, Any, T], action: str) -> T:
        try:
            return self._run_private(coroutine)
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as e:
            raise self._error(action, e) from None

    def _run_private(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the store's loop thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _error(self, action: str, error: BaseException) -> StoreError:
        """The table(s), row counts and the driver's message: never the statement or its rows."""
        return StoreError(
            f"sql_store {self.ctx.node_id!r}: {action} on {self._masked_url} failed: "
            f"{describe_db_error(error, self._secrets)}"
        )


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


def _in_key_order(table: sa.Table, batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """The rows grouped by the table's leading string key columns, in key order.

    B-tree inserts near each other touch each page once: in SQLite a flush in key order
    is about 15-40% faster than rows in arrival (time) order, where every row lands on
    another symbol's page. Rows arrive in time order, so a stable sort by the leading
    string key columns (provider, symbol, timeframe: integer ranks of their dictionary
    values) leaves them nearly in full key order, at a fraction of a full string sort's
    cost. Stable: of two rows with one key, the later still wins.
    """
    if sum(batch.num_rows for batch in batches) < 2:
        return batches
    rows = pa.Table.from_batches(batches).combine_chunks()
    code = np.zeros(rows.num_rows, dtype=np.int64)
    for column in table.primary_key.columns:
        values = rows.column(column.name)
        if not pa.types.is_string(values.type):
            break
        encoded = pc.dictionary_encode(values).combine_chunks()
        names = encoded.dictionary.to_pylist()
        rank = np.empty(len(names), dtype=np.int64)
        rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        code = code * len(names) + rank[encoded.indices.to_numpy(zero_copy_only=False)]
    if np.all(code[1:] >= code[:-1]):
        return rows.to_batches()
    return rows.take(pa.array(np.argsort(code, kind="stable"))).to_batches()


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


def _calls(batches: list[pa.RecordBatch], table: sa.Table, statements: _Statements) -> list[tuple[str, list]]:
    """The ``executemany`` calls for a chunk, in row order: multi-row statements taking
    flattened groups of ``statements.rows`` rows, then the remaining rows one per statement."""
    rows = _rows(batches, table)
    if statements.multi is None or len(rows) < statements.rows:
        return [(statements.single, rows)]
    full = len(rows) // statements.rows * statements.rows
    width = statements.rows * len(table.columns)
    flat = list(itertools.chain.from_iterable(rows[:full]))
    calls = [(statements.multi, [tuple(flat[i : i + width]) for i in range(0, len(flat), width)])]
    if full < len(rows):
        calls.append((statements.single, rows[full:]))
    return calls


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


