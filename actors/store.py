"""The ``sql_store`` sink: idempotent upserts of confirmed bars and quarantine rows.

Input stream -> table: ``bars`` -> ``bars_ohlcv`` (confirmed rows only), ``quarantine``
-> ``quarantine`` (tables: ``db/tables.py``). Neither table has a wall-clock column,
and every write is an ``INSERT ... ON CONFLICT (primary key) DO UPDATE``: running the
same job twice leaves identical rows, and a bar re-sent with new values (a late-tick
correction) is updated in place.

The operator API is synchronous; :class:`SqlStore` drives its async engine on a
private event loop running on its own thread, so a flush proceeds while the next
batches are buffered (see the class docstring).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import ConfigDict, field_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import StoreError, absolute_sqlite_url, async_url, create_engine, gc_paused, mask_url, secret_forms, upsert_sql
from db.tables import bars_ohlcv, metadata, quarantine
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.schemas import BAR_CONFIRMED

__all__ = ["STREAM_TABLES", "SqlStore", "SqlStoreParams"]

#: Input stream name -> the table it is written to.
STREAM_TABLES: dict[str, sa.Table] = {"bars": bars_ohlcv, "quarantine": quarantine}
_SOURCE_SCHEMAS = {"bars": "BAR", "quarantine": "QUARANTINE"}  # names, for errors


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
        """Check the URL (never echoing it); pin a relative SQLite path to the loading cwd."""
        return absolute_sqlite_url(value)

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
        self._secrets = secret_forms(self._url.password)
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
                stream: upsert_sql(table, self._engine.dialect) for stream, table in STREAM_TABLES.items()
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
            return create_engine(self._url)
        except (ImportError, sa.exc.SQLAlchemyError) as e:
            raise self._error("creating the engine", e) from None

    async def _create_tables(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def _upsert(self, work: list[tuple[sa.Table, str, list[pa.RecordBatch]]]) -> None:
        """One transaction; rows are converted to tuples chunk by chunk while the driver's
        thread executes the previous chunk (SQLite releases the GIL while it steps)."""
        with gc_paused():
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


