"""The recorder (kind ``recorder``): live canonical ticks to rolling Parquet files and ``tick_data``.

Put it on a live source's ``ticks`` stream (``inputs: [source]``) and every session can
be replayed later with the same graph: swap the source for a ``file_replay`` node
whose ``files`` are :func:`replay_files` of the recorder's ``path``.

Parquet: ``<path>/ticks-<start ns>-<n>.parquet`` (``n`` = 000000, 000001, ... in write
order; ``start`` = the recorder's start, wall clock ns UTC, so sessions never overwrite
each other). Columns are exactly TICK (``ts`` int64 ns UTC), rows in arrival order, so
the ``file_replay`` kind's ``canonical`` format reads them as they are. A new file starts
after ``rows_per_file`` rows, or at the first tick whose ``ts`` is ``seconds_per_file``
or more past the first tick of the current file (event time). Because of that time
rule a tick in a later file is never earlier than every tick of the previous file, and
the replay's event-time merge keeps the recorded order across files (a row-count roll
between two out-of-order ticks is the one case where a replay may reorder them). Files
are written whole to a hidden temporary name and renamed; the open file is written at
end of stream and on ``close()`` (a stop or an abort), so nothing received is lost.

SQL: every recorded tick is upserted into ``tick_data`` (primary key provider, symbol,
ts, seq: re-recording the same ticks changes nothing), in background transactions of
at most ``sql_batch_rows`` rows, at most one in flight, flushed on a watermark once
``flush_interval_ms`` passed and at end of stream. ``url: null`` disables SQL.

Only ticks whose ``origin`` is in ``origins`` (default ``[live]``) are recorded: the same
graph with its source swapped to a replay records nothing (counted as ``skipped``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from pydantic import ConfigDict, Field, field_validator

from db.engine import StoreError, async_url, create_engine, describe_db_error, mask_url, secret_forms, upsert_sql
from db.engine import writable_store_url
from db.tables import create_tables, tick_data
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import OutputDir
from graph.schemas import ORIGIN_LIVE, TICK

__all__ = ["Recorder", "RecorderParams", "recorded_files", "replay_files"]

_NS_PER_S = 1_000_000_000


def recorded_files(path: str | Path) -> list[Path]:
    """The Parquet files a recorder wrote under ``path``, in recording order (sessions, then ``n``)."""
    return sorted(Path(path).glob("ticks-*.parquet"))


def replay_files(path: str | Path) -> list[dict[str, str]]:
    """The ``files`` param of a ``file_replay`` node replaying every recording under ``path``."""
    return [{"format": "canonical", "path": str(file)} for file in recorded_files(path)]


class RecorderParams(Params):
    """Params of the ``recorder`` kind.

    Attributes:
        path: directory of the Parquet files (relative to the graph file); created if missing.
        rows_per_file: at most this many ticks per file.
        seconds_per_file: a tick this many seconds of event time after the file's first
            tick starts a new file.
        url: SQLAlchemy URL of the database holding ``tick_data``; null: no SQL.
            Its password is masked in ``repr`` and errors.
        sql_batch_rows: upsert once this many ticks are buffered.
        flush_interval_ms: on a watermark, upsert if this long passed since the last upsert.
        origins: record ticks of these origins only (``live``, ``replay``).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    path: OutputDir = Field(default=Path("out/live/ticks"), validate_default=True)
    rows_per_file: int = Field(100_000, ge=1)
    seconds_per_file: float = Field(60.0, gt=0)
    url: str | None = "sqlite:///tickgraph.db"
    sql_batch_rows: int = Field(10_000, ge=1)
    flush_interval_ms: int = Field(1000, ge=0)
    origins: list[str] = Field(default_factory=lambda: [ORIGIN_LIVE], min_length=1)

    @field_validator("url")
    @classmethod
    def _parse_url(cls, value: str | None) -> str | None:
        return None if value is None else writable_store_url(value)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" and value is not None else value


class Recorder(Operator):
    """Writes TICK batches to rolling Parquet files and ``tick_data`` (see the module docstring).

    Input: the ``ticks`` stream of a source (TICK). No outputs.
    """

    Params: ClassVar[type[Params]] = RecorderParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: RecorderParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        clock = ctx.clock_ns
        self._session = clock() if clock is not None else 0
        self._prefix = f"ticks-{self._session}" + (f"-{ctx.shard}" if ctx.num_shards > 1 else "")
        params.path.mkdir(parents=True, exist_ok=True)
        self._origins = pa.array(params.origins, pa.string())
        self._current: list[pa.RecordBatch] = []
        self._current_rows = 0
        self._first_ts: int | None = None
        self._files: list[str] = []
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
        self._append(kept)
        if self._table is not None:
            self._pending.append(kept)
            self._pending_rows += kept.num_rows
            if self._pending_rows >= self.params.sql_batch_rows:
                self._flush_sql(wait=False)
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Upsert buffered ticks if ``flush_interval_ms`` passed since the last upsert."""
        if self._pending_rows and (
            self.ctx.clock_ns is None or self.ctx.clock_ns() - self._last_flush_ns >= self.params.flush_interval_ms * 1_000_000
        ):
            self._flush_sql(wait=False)
        return []

    def on_eof(self) -> list[Emit]:
        """Write the open Parquet file and every buffered tick, and wait for the database."""
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
        """At a checkpoint: commit the ticks buffered for ``tick_data``; the open Parquet file's
        rows, the file sequence and the counters are the state (written files are final).

        Raises:
            StoreError: the commit failed.
        """
        self._flush_sql(wait=True)
        return {
            "version": 1, "prefix": self._prefix, "current": list(self._current), "first_ts": self._first_ts,
            "files": list(self._files), "recorded": self._recorded, "skipped": self._skipped,
            "rows_written": self._table.written if self._table is not None else 0,
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the session of a :meth:`snapshot` (same file names, same sequence).

        Raises:
            ValueError: a snapshot of another version.
        """
        if state.get("version") != 1:
            raise ValueError(f"recorder snapshot version {state.get('version')!r}, expected 1")
        self._prefix, self._current, self._first_ts = state["prefix"], list(state["current"]), state["first_ts"]
        self._current_rows = sum(batch.num_rows for batch in self._current)
        self._files, self._recorded, self._skipped = list(state["files"]), state["recorded"], state["skipped"]
        if self._table is not None:
            self._table.written = state["rows_written"]

    def discard(self) -> None:
        """Forget what is buffered (a restart: the checkpoint holds it), so close writes nothing."""
        self._ended = True

    def metrics(self) -> dict[str, Any]:
        """``recorded`` (ticks), ``skipped`` (other origins), ``files`` (Parquet names), ``rows_written`` (tick_data)."""
        return {
            "recorded": self._recorded,
            "skipped": self._skipped,
            "files": list(self._files),
            "rows_written": self._table.written if self._table is not None else 0,
        }

    # -- Parquet ------------------------------------------------------------------------

    def _append(self, batch: pa.RecordBatch) -> None:
        span = int(self.params.seconds_per_file * _NS_PER_S)
        ts = batch.column("ts").to_numpy()
        start = 0
        while start < len(ts):
            if self._first_ts is None:
                self._first_ts = int(ts[start])
            room = self.params.rows_per_file - self._current_rows
            crossing = np.flatnonzero(ts[start:] >= self._first_ts + span)
            cut = min(room, int(crossing[0]) if crossing.size else len(ts) - start)
            if cut:
                self._current.append(batch.slice(start, cut))
                self._current_rows += cut
                start += cut
            if self._current_rows >= self.params.rows_per_file or start < len(ts):
                self._write_file()

    def _write_file(self) -> None:
        if not self._current_rows:
            self._first_ts = None
            return
        table = pa.Table.from_batches(self._current, schema=TICK)
        name = f"{self._prefix}-{len(self._files):06d}.parquet"
        final = self.params.path / name
        temporary = self.params.path / f".{name}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        self._files.append(name)
        self._current, self._current_rows, self._first_ts = [], 0, None

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
        self._write_file()
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
