"""The recorder (kind ``recorder``): live ticks into the tick catalog (and, opt-in, ``tick_data``).

Put it on a live source's ``ticks`` stream (``inputs: [source]``) and every session can
be replayed later with the same graph: swap the source for a ``replay`` node whose
``catalog`` is the recorder's ``path`` (:func:`replay_params`).

Parquet: the tick catalog's layout (``catalog/layout.py``)::

    <path>/ticks/symbol=<S>/date=<YYYY-MM-DD>/part-<first ts>-<last ts>.parquet

the same files a ``catalog`` sink writes, by the same writer (``catalog/writer.py``): one
file per symbol and ``file_span_s`` of event time, written once the watermark passes the
span (a live source's watermark follows the wall clock when the feed is quiet, so a
session's files appear as it runs), sorted by (ts, seq), every TICK column kept
(``origin``, ``advances_watermark``: a replay of the recording has the live session's
watermarks). A tick arriving after its span was written is merged into that span's file.
What is buffered is written at end of stream and on ``close()`` (a stop or an abort), so
nothing received is lost. Recording the same session twice writes nothing new.

SQL (opt-in, ``url``): every recorded tick is also upserted into ``tick_data`` (primary key
provider, symbol, ts, seq: re-recording the same ticks changes nothing), in background
transactions of at most ``sql_batch_rows`` rows, at most one in flight, flushed on a
watermark once ``flush_interval_ms`` passed and at end of stream, at SQLite's pace
(README, Speed); ``url: null`` (the default) writes the catalog only.

Only ticks whose ``origin`` is in ``origins`` (default ``[live]``) are recorded: the same
graph with its source swapped to a replay records nothing (counted as ``skipped``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import ConfigDict, Field, field_validator

from catalog.dataset import list_files
from catalog.writer import DEFAULT_FILE_SPAN_S, CatalogWriter, check_file_span
from db.engine import StoreError, async_url, create_engine, describe_db_error, mask_url, secret_forms, upsert_sql
from db.engine import writable_store_url
from db.tables import create_tables, tick_data
from graph.operator import Emit, Operator, OperatorContext, Params, check_snapshot_version
from graph.params import OutputDir
from graph.schemas import ORIGIN_LIVE, TICK

__all__ = ["Recorder", "RecorderParams", "recorded_files", "replay_params"]


def recorded_files(path: str | Path) -> list[Path]:
    """The tick files of the catalog at ``path`` (a recorder's), by symbol then time."""
    return [entry.path for entry in list_files(Path(path), "ticks")]


def replay_params(path: str | Path) -> dict[str, str]:
    """The params of a ``replay`` node replaying every tick recorded under ``path``."""
    return {"catalog": str(path)}


class RecorderParams(Params):
    """Params of the ``recorder`` kind.

    Attributes:
        path: the tick catalog directory (relative to the graph file); created if missing.
        file_span_s: event-time span of one file per symbol, seconds (divides 86,400).
        url: SQLAlchemy URL of the database to upsert ``tick_data`` into (opt-in); null
            (default): the catalog only. Its password is masked in ``repr`` and errors.
        sql_batch_rows: upsert once this many ticks are buffered.
        flush_interval_ms: on a watermark, upsert if this long passed since the last upsert.
        origins: record ticks of these origins only (``live``, ``replay``).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    path: OutputDir = Field(default=Path("out/catalog"), validate_default=True)
    file_span_s: int = DEFAULT_FILE_SPAN_S
    url: str | None = None
    sql_batch_rows: int = Field(10_000, ge=1)
    flush_interval_ms: int = Field(1000, ge=0)
    origins: list[str] = Field(default_factory=lambda: [ORIGIN_LIVE], min_length=1)

    @field_validator("url")
    @classmethod
    def _parse_url(cls, value: str | None) -> str | None:
        return None if value is None else writable_store_url(value)

    @field_validator("file_span_s")
    @classmethod
    def _span(cls, value: int) -> int:
        return check_file_span(value)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" and value is not None else value


class Recorder(Operator):
    """Writes TICK batches to the tick catalog and, opt-in, ``tick_data`` (see the module docstring).

    Input: the ``ticks`` stream of a source (TICK). No outputs.
    """

    Params: ClassVar[type[Params]] = RecorderParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: RecorderParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        clock = ctx.clock_ns
        params.path.mkdir(parents=True, exist_ok=True)
        self._origins = pa.array(params.origins, pa.string())
        self.writer = CatalogWriter(params.path, params.file_span_s, owner=f"recorder {ctx.node_id!r}")
        self._recorded = 0
        self._skipped = 0
        self._ended = False
        self._table = _TickTable(params.url, ctx) if params.url is not None else None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._last_flush_ns = clock() if clock is not None else None

    def __repr__(self) -> str:
        url = None if self.params.url is None else mask_url(self.params.url)
        return f"Recorder(node_id={self.ctx.node_id!r}, path={str(self.params.path)!r}, url={url!r})"

    # -- operator hooks ----------------------------------------------------------------

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Record the ticks of ``batch`` whose origin is in ``origins``.

        Raises:
            ValueError: ``stream`` is not ``ticks`` or the batch is not TICK-shaped.
            StoreError: a background upsert failed.
        """
        if stream != "ticks":
            raise ValueError(f"recorder {self.ctx.node_id!r}: unknown input stream {stream!r}; expected 'ticks'")
        if batch.schema.names != TICK.names:
            raise ValueError(f"recorder {self.ctx.node_id!r}: batch columns {batch.schema.names} are not TICK's {TICK.names}")
        if batch.schema != TICK:
            batch = batch.cast(TICK)
        keep = pc.fill_null(pc.is_in(batch.column("origin"), value_set=self._origins), False)
        kept = batch if pc.all(keep).as_py() else batch.filter(keep)
        self._skipped += batch.num_rows - kept.num_rows
        if kept.num_rows == 0:
            return []
        self._recorded += kept.num_rows
        self.writer.add("ticks", kept)
        if self._table is not None:
            self._pending.append(kept)
            self._pending_rows += kept.num_rows
            if self._pending_rows >= self.params.sql_batch_rows:
                self._flush_sql(wait=False)
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Write the catalog spans that end at or before ``ts``; upsert buffered ticks if
        ``flush_interval_ms`` passed since the last upsert."""
        self.writer.advance(ts)
        if self._pending_rows and (
            self.ctx.clock_ns is None or self.ctx.clock_ns() - self._last_flush_ns >= self.params.flush_interval_ms * 1_000_000
        ):
            self._flush_sql(wait=False)
        return []

    def on_eof(self) -> list[Emit]:
        """Write every buffered tick to the catalog (and the database), and wait for it."""
        self._finish()
        return []

    def close(self) -> None:
        """Write what is open (after a stop or an abort: nothing received is lost), then release."""
        try:
            if not self._ended:
                self._finish()
        finally:
            if self._table is not None:
                self._table.close()

    def snapshot(self) -> dict[str, Any]:
        """At a checkpoint: commit the ticks buffered for ``tick_data``; the catalog writer's
        buffered rows and written files (``CatalogWriter.snapshot``; written files are final)
        and the counters are the state.

        Raises:
            StoreError: the commit failed.
        """
        self._flush_sql(wait=True)
        return {
            "version": 2, "catalog": self.writer.snapshot(), "recorded": self._recorded, "skipped": self._skipped,
            "rows_written": self._table.written if self._table is not None else 0,
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the session of a :meth:`snapshot`: the same spans, the same files.

        Raises:
            ValueError: a snapshot of another version.
        """
        check_snapshot_version(state, 2, "recorder")
        self.writer.restore(state["catalog"])
        self._recorded, self._skipped = state["recorded"], state["skipped"]
        if self._table is not None:
            self._table.written = state["rows_written"]

    def discard(self) -> None:
        """Forget what is buffered (a restart: the checkpoint holds it), so close writes nothing."""
        self._ended = True

    def metrics(self) -> dict[str, Any]:
        """``recorded`` (ticks), ``skipped`` (other origins), ``catalog`` (the writer's
        counters, ``catalog.writer.CatalogWriter.metrics``), ``rows_written`` (tick_data)."""
        return {
            "recorded": self._recorded,
            "skipped": self._skipped,
            "catalog": self.writer.metrics(),
            "rows_written": self._table.written if self._table is not None else 0,
        }

    # -- SQL ----------------------------------------------------------------------------

    def _flush_sql(self, wait: bool) -> None:
        if self._table is None:
            return
        batches, self._pending, self._pending_rows = self._pending, [], 0
        self._table.write(batches, wait=wait)
        if self.ctx.clock_ns is not None:
            self._last_flush_ns = self.ctx.clock_ns()

    def _finish(self) -> None:
        self._ended = True
        self.writer.flush()
        if self._table is not None:
            self._flush_sql(wait=True)


class _TickTable:
    """Upserts into ``tick_data`` on a private event loop thread, one transaction in flight."""

    def __init__(self, url: str, ctx: OperatorContext) -> None:
        self._url = async_url(url)
        self._masked = self._url.render_as_string(hide_password=True)
        self._secrets = secret_forms(self._url.password)
        self._node = ctx.node_id
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"recorder:{ctx.node_id}", daemon=True)
        self._thread.start()
        self._in_flight: concurrent.futures.Future | None = None
        self._in_flight_rows = 0
        self.written = 0
        try:
            self._engine = create_engine(self._url)
            self._sql = upsert_sql(tick_data, self._engine.dialect)
            self._run(self._create())
        except BaseException:
            self.close()
            raise

    async def _create(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(create_tables, [tick_data])

    async def _upsert(self, rows: list[tuple]) -> None:
        async with self._engine.begin() as connection:
            await connection.exec_driver_sql(self._sql, rows)

    def write(self, batches: list[pa.RecordBatch], wait: bool) -> None:
        """Upsert ``batches`` (after the previous write finished); block until done if ``wait``."""
        self.settle()
        rows = [row for batch in batches for row in zip(*(batch.column(c.name).to_pylist() for c in tick_data.columns))]
        if rows:
            self._in_flight = asyncio.run_coroutine_threadsafe(self._upsert(rows), self._loop)
            self._in_flight_rows = len(rows)
        if wait:
            self.settle()

    def settle(self) -> None:
        """Wait for the write in flight; count its rows or raise :class:`StoreError`."""
        if self._in_flight is None:
            return
        future, self._in_flight = self._in_flight, None
        try:
            future.result()
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as error:
            raise self._error(f"upserting {self._in_flight_rows:,} ticks into tick_data", error) from None
        self.written += self._in_flight_rows

    def close(self) -> None:
        """Wait for the write in flight, dispose the engine, stop the loop (idempotent)."""
        if self._loop.is_closed():
            return
        try:
            if self._in_flight is not None:
                concurrent.futures.wait([self._in_flight])
                self._in_flight = None
            engine = getattr(self, "_engine", None)
            if engine is not None:
                asyncio.run_coroutine_threadsafe(engine.dispose(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as error:
            raise self._error("creating tick_data", error) from None
        except ValueError as error:  # tick_data of an older layout
            raise StoreError(f"recorder {self._node!r}: {self._masked}: {error}") from None

    def _error(self, action: str, error: BaseException) -> StoreError:
        return StoreError(f"recorder {self._node!r}: {action} on {self._masked} failed: {describe_db_error(error, self._secrets)}")
