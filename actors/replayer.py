"""The replayer (node kind ``replay``): tick files, the tick catalog or ``tick_data``, paced in event time.

Inputs are the file formats of ``file_replay`` (canonical CSV/Parquet, LOBSTER, Tardis),
the ticks stored in a tick catalog (``catalog``: one input per symbol, read through
``catalog/reader.py``, pruned by ``symbols`` and ``[start, end)`` before any file is
opened) and the store's ``tick_data`` table, merged in event time by the same
:class:`~actors.file_replay.TickMerge`, filtered by ``symbols`` and ``[start, end)``.
Inputs are ordered files, then catalog symbols (sorted), then ``tick_data``: ties in
event time go to the earlier input. With ``parallelism: N`` the node runs N source shards
(``actors/source_shards.py``).

Output, a pure function of the data and the params (never of ``speed``, the wall clock or
pauses), so a burst and a paced replay emit the very same stream::

    merged ticks:   t0 t1 t2 | t3 | t4 t5 ...        grid cells of batch_interval_ms
    batches:       [t0 t1 t2] [t3] [t4 t5 ...]       (by merge key; <= batch_rows each)
    stream:        batch, Watermark(w), batch, Watermark(w), ...,  end-of-stream

Each batch holds the ticks of one epoch-aligned cell ``[k * interval, (k + 1) * interval)``
of merge key (the running max of ``ts`` within its input), at most ``batch_rows`` of them.
After each batch comes ``Watermark(max ts emitted - allowed lateness)``, from the
replayer's :class:`~actors.clock.MarketClock` (exact with the default lateness 0).

Pacing: ``speed`` 0 emits batches as fast as the graph takes them. With ``speed > 0`` a
VIRTUAL market clock starts at the first tick's time and runs at ``speed`` x the wall
clock; a batch leaves once the clock reaches its newest tick (so no tick leaves before
its time, and none later than one ``batch_interval_ms / speed``). While the next batch
is not due, ``events()`` sleeps at most 50 ms and yields :data:`~graph.operator.IDLE`,
so the host ends its step and the driver stays responsive; the CPU is not spun. A graph
slower than the pace makes the replay fall behind; it then catches up as fast as the
graph takes (the clock keeps running), like a live feed after a stall. ``max_gap_ms``
skips long gaps (nights, files of different days) instead of waiting them out.

Pause and resume: :meth:`Replayer.pause` / :meth:`Replayer.resume` (in-process, and the
hook for a host or driver control call), or from outside any process: with the
``pause_file`` param set, the replay pauses while that file exists
(``touch replay.pause`` ... ``rm replay.pause``). A paused replay emits nothing and its
clock is frozen: on resume it continues where it stopped, without a catch-up burst.

Every emitted batch carries the run's id as Arrow schema metadata
``tickgraph.replay_run_id`` (:data:`REPLAY_RUN_ID_KEY`; the ``job_runs.id`` of the replay,
or a uuid4 hex without a job table), which survives slicing, filtering, partitioning and
Ray transport; rows carry ``origin = "replay"``. The id is kept out of the rows so that
two replays of the same data give byte-identical tick streams (parity hashes).

Job bookkeeping (``job_database_url``): the driver records the run in ``job_runs`` there
(``graph/run_record.py``); the replayer only reports what it emitted (``ticks``,
``min_ts``/``max_ts``, ``providers_seen``, ``symbols_seen`` in its metrics).

Checkpoints: the replayer's offset is how many tick rows and quarantine rows it has
emitted. The merged stream is a pure function of the files and params, so a restored
replayer re-reads its inputs and skips that many rows of each (``skip_merged``): the
rest of the stream is exactly the rest of the uninterrupted one, at any speed. Each
source shard snapshots its own offset (its part of the merged stream); the driver sums
the shards' metrics into the one job row.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field, field_validator, model_validator

from actors import tick_formats as formats
from actors.clock import ClockMode, MarketClock
from actors.file_replay import FileSpec, TickMerge, input_keys, new_stats, skip_merged, take_rows
from actors.source_shards import Partition, ShardPlan
from db.engine import absolute_sqlite_url, mask_url, writable_store_url
from graph.operator import IDLE, Emit, OperatorContext, Source, Watermark, _Idle, check_snapshot_version
from graph.operator import Params as BaseParams
from graph.params import OutputPath
from graph.schemas import ORIGIN_REPLAY, QUARANTINE, TICK
from graph.times import parse_time_ns

__all__ = ["Replayer", "ReplayerParams", "REPLAY_RUN_ID_KEY", "parse_time_ns", "replay_run_id"]

_log = logging.getLogger("tickgraph.replayer")

#: Arrow schema metadata key on every batch a replayer emits: the replay's run id.
REPLAY_RUN_ID_KEY = "tickgraph.replay_run_id"
#: Longest single sleep inside ``events()`` while waiting (pacing or paused), ns.
MAX_SLEEP_NS = 50_000_000


def replay_run_id(batch: pa.RecordBatch) -> str | None:
    """The ``tickgraph.replay_run_id`` a replayer attached to ``batch``, or None."""
    metadata = batch.schema.metadata or {}
    value = metadata.get(REPLAY_RUN_ID_KEY.encode())
    return value.decode() if value is not None else None


class ReplayerParams(BaseParams):
    """Params of the ``replay`` kind.

    Attributes:
        files: tick files (formats of ``file_replay``: canonical, lobster, tardis_trades,
            tardis_quotes); merged in event time, ties to the earlier file.
        catalog: also (or only) replay the ticks of this tick catalog directory (relative
            to the graph file; ``catalog/layout.py``).
        database_url: also (or only) replay the ``tick_data`` table of this store.
        symbols: only these symbols; None replays every symbol.
        start: only ticks with ``ts >= start``: int ns UTC or ISO-8601 with offset.
        end: only ticks with ``ts < end`` (same forms); must be after ``start``.
        speed: 1.0 keeps the original inter-arrival times, 10.0 is ten times faster,
            0 (default) emits as fast as the graph takes.
        batch_rows: most rows per batch.
        batch_interval_ms: a batch never spans two cells of this much event time
            (epoch-aligned); the pacing granularity. 0: cut by ``batch_rows`` only (the
            fastest burst). Same value, same stream, whatever the speed. Default:
            0 for a burst (``speed: 0``), 100 for a paced replay.
        max_gap_ms: paced only: when the next batch starts more than this much event time
            after the clock (a night, a weekend, files of different days), the clock jumps
            to it instead of waiting; None (default) keeps every gap.
        pause_file: while this file exists the replay is paused (relative to the graph file).
        job_database_url: the run's ``job_runs`` row goes there (written by the driver,
            ``graph/run_record.py``); None: no job row.
        job_id: the run id to stamp on batches when the launcher names it (the service's
            replay driver, ``service/driver.py``); None: the graph run's id.
        partition: with ``parallelism`` > 1: ``symbols`` or ``files`` (``actors/source_shards.py``;
            a catalog symbol and a LOBSTER pair are inputs of known symbol).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    files: list[FileSpec] = Field(default_factory=list)
    catalog: OutputPath | None = None
    database_url: str | None = None
    symbols: list[str] | None = None
    start: int | None = None
    end: int | None = None
    speed: float = Field(0.0, ge=0, allow_inf_nan=False)
    batch_rows: int = Field(65_536, gt=0)
    batch_interval_ms: int | None = Field(None, ge=0)
    max_gap_ms: int | None = Field(None, gt=0)
    pause_file: OutputPath | None = None
    job_database_url: str | None = None
    job_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    partition: Partition = "symbols"

    @field_validator("catalog")
    @classmethod
    def _catalog_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"no tick catalog directory at {value} (run a job with a 'catalog' sink first)")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> int | None:
        return None if value is None else parse_time_ns(value)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        """Check the URL (never echoing it); pin a relative SQLite path to the loading cwd."""
        return None if value is None else absolute_sqlite_url(value)

    @field_validator("job_database_url")
    @classmethod
    def _check_job_url(cls, value: str | None) -> str | None:
        """Check the URL and, for SQLite, that the file can be written (never echoing the URL)."""
        return None if value is None else writable_store_url(value)

    @field_validator("symbols")
    @classmethod
    def _some_symbols(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must list at least one symbol (omit it to replay every symbol)")
        return value

    @model_validator(mode="after")
    def _check(self) -> ReplayerParams:
        if not self.files and self.database_url is None and self.catalog is None:
            raise ValueError("a replay needs 'files', 'catalog' (a tick catalog), 'database_url' (the tick_data table) or several")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end} ns) must be after start ({self.start} ns)")
        return self

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in ("database_url", "job_database_url") and value else value


class Replayer(Source):
    """Replay tick files and/or ``tick_data`` at a speed, with filters, pause/resume and a job row.

    Outputs:
        ticks: TICK batches (see the module docstring for the batching rule), each
            followed by a ``Watermark``; schema metadata ``tickgraph.replay_run_id``.
        quarantine: QUARANTINE rows of malformed file rows, as they are found.

    Args:
        params: :class:`ReplayerParams`.
        ctx: the host context: ``clock_ns`` (wall clock; required when ``speed > 0``),
            ``allowed_lateness_ns`` (watermark lag), ``node_id``, ``graph_file``.
        block_bytes: CSV bytes read per step (tests use small blocks).
        sleep_ns: how to wait ``ns`` nanoseconds (default ``time.sleep``); tests inject a
            fake that advances their fake clock.

    Raises:
        ValueError: ``speed > 0`` without ``ctx.clock_ns``.
    """

    Params: ClassVar[type[ReplayerParams]] = ReplayerParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"ticks": TICK, "quarantine": QUARANTINE}
    #: May run as several source shards (``parallelism``), each reading its part.
    shardable: ClassVar[bool] = True

    def __init__(
        self,
        params: ReplayerParams,
        ctx: OperatorContext,
        *,
        block_bytes: int = formats.BLOCK_BYTES,
        sleep_ns: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(params, ctx)
        if params.speed > 0 and ctx.clock_ns is None:
            raise ValueError(f"replay {ctx.node_id!r}: speed {params.speed} needs a wall clock (ctx.clock_ns)")
        self.block_bytes = block_bytes
        self._sleep_ns = sleep_ns or (lambda ns: time.sleep(ns / 1e9))
        #: The replay's market clock (VIRTUAL); tests freeze and step it.
        self.clock = MarketClock(
            ClockMode.VIRTUAL,
            wall_clock_ns=ctx.clock_ns,
            speed=params.speed,
            allowed_lateness_ns=ctx.allowed_lateness_ns,
        )
        sources = [spec.source for spec in params.files]
        kinds = [spec.format for spec in params.files]
        symbols: list[str | None] = [getattr(spec, "symbol", None) for spec in params.files]
        self._catalog_inputs = self._catalog_readers()
        for name, symbol, _ in self._catalog_inputs:
            sources.append(name)
            kinds.append("catalog")
            symbols.append(symbol)
        if params.database_url is not None:
            sources.append(f"tick_data@{mask_url(params.database_url)}")
            kinds.append("tick_data")
            symbols.append(None)
        self._plan = ShardPlan(ctx, params.partition, symbols)
        self._keys = input_keys(sources)
        self._stats = {key: new_stats(kind) for key, kind in zip(self._keys, kinds)}
        self._merge: TickMerge | None = None
        self._paused = False
        self._paused_by_file = False
        self._started = False
        self._exhausted = False
        self.run_id: str | None = None  # set at the first step
        self._skip = (0, 0)  # (tick rows, quarantine rows) a restored replayer skips
        self._emitted = 0
        self._quarantine_emitted = 0
        self._min_ts: int | None = None
        self._max_ts: int | None = None
        self._providers: set[str] = set()
        self._symbols_seen: set[str] = set()
        self._last_watermark: int | None = None
        self._clock_started = False

    # -- control ---------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop emitting (the clock freezes) until :meth:`resume`. Idempotent."""
        self._paused = True
        self.clock.freeze()

    def resume(self) -> None:
        """Continue a paused replay from where it stopped. Idempotent."""
        self._paused = False
        if not self._paused_by_file:
            self.clock.unfreeze()

    @property
    def paused(self) -> bool:
        """True while paused by :meth:`pause` or by the ``pause_file``."""
        return self._paused or self._paused_by_file

    def control(self, command: str) -> dict[str, Any]:
        """Entry point for a host/driver control call: ``"pause"``, ``"resume"`` or ``"status"``.

        Returns:
            ``{"paused": bool, "ticks": emitted so far, "clock_ns": virtual time}``.

        Raises:
            ValueError: an unknown command.
        """
        if command == "pause":
            self.pause()
        elif command == "resume":
            self.resume()
        elif command != "status":
            raise ValueError(
                f"replay {self.ctx.node_id!r}: unknown control command {command!r} (pause, resume, status)"
            )
        return {"paused": self.paused, "ticks": self._emitted, "clock_ns": self.clock.now_ns()}

    # -- the stream ----------------------------------------------------------------------------
    def events(self) -> Iterator[Emit | Watermark | _Idle]:
        """Yield ticks batches with their watermarks, quarantine batches and IDLE, until the end.

        Raises:
            FileNotFoundError: an input file is missing or disappeared during the replay.
            ValueError: a file's content contradicts its format.
            db.engine.StoreError: ``tick_data`` cannot be read.
        """
        self._start()
        for event in self._paced():
            if isinstance(event, tuple) and event[0] == "quarantine":
                self._quarantine_emitted += event[1].num_rows
            yield event
        self._exhausted = True

    def _paced(self) -> Iterator[Emit | Watermark | _Idle]:
        for event in self._batches():
            if event[0] == "quarantine":
                yield event
                continue
            _, batch, first, due = event
            if not self._clock_started:
                self._clock_started = True
                if self.params.speed > 0:  # the virtual clock starts at the first tick's time
                    self.clock.seek(max(first, self.clock.now_ns()))
            elif self.params.speed > 0 and self.params.max_gap_ms is not None:
                if first - self.clock.now_ns() > self.params.max_gap_ms * 1_000_000:
                    self.clock.seek(first)  # skip the gap
            yield from self._wait_until(due)
            yield "ticks", self._stamp(batch)
            self.clock.observe(due)
            watermark = self.clock.watermark()
            if watermark is not None and (self._last_watermark is None or watermark > self._last_watermark):
                self._last_watermark = watermark
                yield Watermark(watermark)

    def _wait_until(self, due: int) -> Iterator[_Idle]:
        """Sleep (<= 50 ms at a time) and yield IDLE until ``due`` and not paused."""
        while True:
            if self._check_paused():
                self._sleep_ns(MAX_SLEEP_NS)
                yield IDLE
                continue
            if self.params.speed == 0 or self.clock.due(due):
                return
            wait = self.clock.wall_wait_ns(due)
            self._sleep_ns(MAX_SLEEP_NS if wait is None else min(wait, MAX_SLEEP_NS))
            if not self._check_paused() and self.clock.due(due):
                return
            yield IDLE

    def _check_paused(self) -> bool:
        path = self.params.pause_file
        if path is not None:
            exists = path.exists()
            if exists and not self._paused_by_file:
                self._paused_by_file = True
                self.clock.freeze()
            elif not exists and self._paused_by_file:
                self._paused_by_file = False
                if not self._paused:
                    self.clock.unfreeze()
        return self.paused

    def _batches(self) -> Iterator[tuple]:
        """``("quarantine", batch)`` as found; ``("ticks", batch, first_ts, due_ts)`` per complete batch.

        ``first_ts`` is the batch's smallest merge key, ``due_ts`` its largest (= the largest ``ts`` emitted once it is
        out). A batch is complete when the next tick falls in another cell, when it has
        ``batch_rows`` rows, or at the end of the input.
        """
        params = self.params
        readers: list[Iterator[formats.TickChunk]] = [
            _watch(_paths(spec), spec.read(self.block_bytes)) for spec in params.files
        ]
        readers += [_catalog_chunks(batches) for _, _, batches in self._catalog_inputs]
        if params.database_url is not None:
            readers.append(
                formats.read_tick_table(
                    params.database_url,
                    symbols=params.symbols,
                    start_ns=params.start,
                    end_ns=params.end,
                    chunk_rows=params.batch_rows,
                )  # fmt: skip
            )
        plan = self._plan
        read = [i for i in range(len(readers)) if plan.reads(i)]
        stats = list(self._stats.values())
        self._merge = TickMerge(
            [plan.chunks(i, readers[i]) for i in read], [stats[i] for i in read], self._filter(),
            self.ctx.event_time_range, partition=plan.row_mask,
        )  # fmt: skip
        resumed = skip_merged(self._merge, *self._skip)
        interval_ms = params.batch_interval_ms
        if interval_ms is None:
            interval_ms = 0 if params.speed == 0 else 100
        interval = interval_ms * 1_000_000
        limit = params.batch_rows
        pending: list[pa.RecordBatch] = []
        pending_keys: list[np.ndarray] = []
        pending_rows, pending_cell = 0, None
        ready: deque[tuple] = deque()

        def flush(count: int) -> None:
            nonlocal pending, pending_keys, pending_rows
            batch, pending = take_rows(pending, count)
            keys = np.concatenate(pending_keys) if len(pending_keys) > 1 else pending_keys[0]
            pending_keys = [keys[count:]] if count < len(keys) else []
            pending_rows -= count
            ready.append(("ticks", batch, int(keys[0]), int(keys[count - 1])))

        for stream, merged, keys in resumed:
            if stream == "quarantine":
                yield stream, merged
                continue
            cells = keys // interval if interval else np.zeros(len(keys), dtype=np.int64)
            cuts = np.flatnonzero(cells[1:] != cells[:-1]) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(keys)]):
                cell = int(cells[lo])
                if pending_rows and cell != pending_cell:
                    flush(pending_rows)
                pending_cell = cell
                pending.append(merged.slice(lo, hi - lo))
                pending_keys.append(keys[lo:hi])
                pending_rows += hi - lo
                while pending_rows >= limit:
                    flush(limit)
            while ready:
                yield ready.popleft()
        if pending_rows:
            flush(pending_rows)
        while ready:
            yield ready.popleft()

    def _filter(self) -> Callable[[pa.RecordBatch], np.ndarray | None] | None:
        """The symbols / [start, end) filter for file inputs (tick_data filters in SQL)."""
        params = self.params
        if params.symbols is None and params.start is None and params.end is None:
            return None
        symbols = pa.array(params.symbols, pa.string()) if params.symbols is not None else None

        def keep(ticks: pa.RecordBatch) -> np.ndarray:
            mask = np.ones(ticks.num_rows, dtype=bool)
            if symbols is not None:
                mask &= pc.is_in(ticks.column("symbol"), value_set=symbols).to_numpy(zero_copy_only=False)
            if params.start is not None or params.end is not None:
                ts = ticks.column("ts").to_numpy()
                if params.start is not None:
                    mask &= ts >= params.start
                if params.end is not None:
                    mask &= ts < params.end
            return mask

        return keep

    def _stamp(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``origin = replay``, the run id as metadata; updates the emitted-tick counters."""
        origin = batch.column("origin")
        if pc.any(pc.not_equal(origin, ORIGIN_REPLAY)).as_py():
            index = TICK.get_field_index("origin")
            batch = batch.set_column(index, TICK.field("origin"), pa.repeat(ORIGIN_REPLAY, batch.num_rows))
        self._emitted += batch.num_rows
        bounds = pc.min_max(batch.column("ts")).as_py()
        self._min_ts = bounds["min"] if self._min_ts is None else min(self._min_ts, bounds["min"])
        self._max_ts = bounds["max"] if self._max_ts is None else max(self._max_ts, bounds["max"])
        self._providers.update(pc.unique(batch.column("provider")).to_pylist())
        self._symbols_seen.update(pc.unique(batch.column("symbol")).to_pylist())
        return self._plan.stamp(batch.replace_schema_metadata({REPLAY_RUN_ID_KEY: self.run_id}))

    def _catalog_readers(self) -> list[tuple[str, str, Iterator[pa.RecordBatch]]]:
        """``(input name, symbol, batches)`` of the ``catalog`` param's ticks (none without it).

        Listed once, when the node is built (pruned by ``symbols``, ``start``, ``end``;
        ``StoreReader.tick_inputs`` bounds the ticks the merge holds whatever the number
        of symbols).
        """
        params = self.params
        if params.catalog is None:
            return []
        from catalog.reader import StoreReader

        return StoreReader(params.catalog).tick_inputs(params.symbols, params.start, params.end, max_rows=params.batch_rows)

    # -- run id, checkpoints -----------------------------------------------------------------
    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self.run_id = self.params.job_id or self.ctx.run_id or uuid.uuid4().hex

    def snapshot(self) -> dict[str, Any]:
        """The replay's offset (tick and quarantine rows emitted) and its emitted-tick record."""
        return {
            "version": 1,
            "emitted": self._emitted,
            "quarantine_emitted": self._quarantine_emitted,
            "min_ts": self._min_ts,
            "max_ts": self._max_ts,
            "providers": sorted(self._providers),
            "symbols": sorted(self._symbols_seen),
            "last_watermark": self._last_watermark,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue after a :meth:`snapshot`: the inputs are re-read and the emitted rows skipped.

        Raises:
            ValueError: a snapshot of another version, or taken after the stream started here.
        """
        check_snapshot_version(state, 1, "replay")
        if self._started:
            raise ValueError("a replay can only be restored before it starts")
        self._emitted, self._quarantine_emitted = state["emitted"], state["quarantine_emitted"]
        self._skip = (state["emitted"], state["quarantine_emitted"])
        self._min_ts, self._max_ts = state["min_ts"], state["max_ts"]
        self._providers, self._symbols_seen = set(state["providers"]), set(state["symbols"])
        self._last_watermark = state["last_watermark"]
        if self._max_ts is not None:
            self.clock.observe(int(self._max_ts))

    def close(self) -> None:
        """Close the readers."""
        if self._merge is not None:
            self._merge.close()

    # -- metrics --------------------------------------------------------------------------------
    def metrics_totals(self) -> dict[str, int]:
        """``rows_read``, ``ticks`` (emitted), ``quarantined``, ``filtered`` over every input."""
        names = ("rows_read", "quarantined", "filtered")
        totals = {name: sum(stats[name] for stats in self._stats.values()) for name in names}
        return {**totals, "ticks": self._emitted}

    def metrics(self) -> dict[str, Any]:
        """Counters for the run summary.

        Returns:
            :meth:`metrics_totals`, plus ``inputs`` (per input: ``format``, ``slow_path``,
            ``rows_read``, ``ticks`` read and kept, ``quarantined``, ``filtered``),
            ``replay_run_id``, ``speed``, ``paused``, ``clock_ns`` (virtual time),
            ``min_ts``/``max_ts`` of the emitted ticks (int ns UTC), ``providers_seen`` and
            ``symbols_seen`` (sorted).
        """
        return {
            **self.metrics_totals(),
            "inputs": {key: dict(stats) for key, stats in self._stats.items()},
            "replay_run_id": self.run_id,
            "speed": self.params.speed,
            "paused": self.paused,
            "clock_ns": self.clock.now_ns(),
            "min_ts": self._min_ts,
            "max_ts": self._max_ts,
            "providers_seen": sorted(self._providers),
            "symbols_seen": sorted(self._symbols_seen),
        }


def _catalog_chunks(batches: Iterator[pa.RecordBatch]) -> Iterator[formats.TickChunk]:
    """A catalog input's TICK batches as reader chunks (stored ticks: nothing to quarantine)."""
    for batch in batches:
        yield formats.TickChunk(batch, None, batch.num_rows)


def _paths(spec: Any) -> list[Path]:
    """The files an input spec reads (LOBSTER: message and orderbook file)."""
    if spec.format == "lobster":
        return [Path(spec.message_file), Path(spec.orderbook_file)]
    return [Path(spec.path)]


def _watch(paths: list[Path], chunks: Iterator[formats.TickChunk]) -> Iterator[formats.TickChunk]:
    """``chunks``, failing as soon as one of ``paths`` disappears (an open file stays
    readable on POSIX, so a removed input would otherwise replay to its end unnoticed)."""
    rows = 0
    try:
        while True:
            gone = [path for path in paths if not path.exists()]
            if gone:
                raise FileNotFoundError(
                    2, f"input file {gone[0]} disappeared during the replay (after {rows:,} rows)", str(gone[0])
                )
            chunk = next(chunks, None)
            if chunk is None:
                return
            rows += chunk.rows_read
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
