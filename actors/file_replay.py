"""FileReplay: replay tick files (canonical, LOBSTER, Tardis) as one event-time ordered stream.

Each file is read in chunks by its format reader (``actors/tick_formats.py``) and the
files are k-way merged by :class:`TickMerge`, so memory stays bounded whatever the file
sizes. The paced ``replay`` kind (``actors/replayer.py``) reuses the same file specs and
the same merge.

Merge order: every row gets a merge key, the running max of ``ts`` within its file (over
plausible timestamps only: a tick dated 2264 or 1970 is a unit mistake, quarantined by the
normalizer, and must not push the rest of its file behind every other file; and only over
ticks that may move the watermark, ``graph.schemas.watermark_rows``), so a
file's own row order is always kept (an out-of-order row replays where the file put it,
and downstream sees it as a late tick). Rows are emitted by (key, file position in
``files``, file row): equal timestamps come from the earlier file first, and the output
is identical on every run and for every ``batch_rows``::

    file 0:  t1 t3 t3          merged:  t1(0) t2(1) t3(0) t3(0) t3(1) t3(2) t4(1)
    file 1:  t2 t3 t4
    file 2:  t3
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from actors import tick_formats as formats
from graph.operator import Emit, OperatorContext, Source, Watermark
from graph.operator import Params as BaseParams
from graph.params import InputFile
from graph.schemas import QUARANTINE, TICK, empty_batch, watermark_rows
from graph.times import EventTimeRange
from graph.watermarks import WatermarkGenerator

__all__ = [
    "FileReplay",
    "CanonicalFile",
    "LobsterFiles",
    "TardisTradesFile",
    "TardisQuotesFile",
    "FileSpec",
    "TickMerge",
    "TickFilter",
    "symbol_filter",
    "new_stats",
    "input_keys",
    "take_rows",
    "skip_merged",
]


class CanonicalFile(BaseParams):
    """A CSV (with header) or Parquet file whose columns are named as TICK.

    ``symbol`` and ``ts`` are required columns; ``provider`` comes from its column or this
    param (one is required); ``seq`` from its column or the 0-based data row.
    """

    format: Literal["canonical"]
    path: InputFile
    provider: str | None = None

    @model_validator(mode="after")
    def _check_columns(self) -> CanonicalFile:
        columns = formats.canonical_columns(self.path)
        missing = [name for name in ("symbol", "ts") if name not in columns]
        if "provider" not in columns and self.provider is None:
            missing.append("provider (or set the 'provider' param)")
        if missing:
            raise ValueError(f"{self.path}: canonical tick file lacks column(s) {', '.join(missing)}; has {columns}")
        return self

    @property
    def source(self) -> str:
        """The file path, as quarantine ``source`` and metrics key."""
        return str(self.path)

    def read(self, block_bytes: int = formats.BLOCK_BYTES) -> Iterator[formats.TickChunk]:
        """The file's ticks in row order (see :func:`actors.tick_formats.read_canonical`)."""
        return formats.read_canonical(self.path, self.provider, block_bytes)


class LobsterFiles(BaseParams):
    """A LOBSTER message file and its orderbook file for one symbol and date."""

    format: Literal["lobster"]
    message_file: InputFile
    orderbook_file: InputFile
    symbol: str = Field(min_length=1)
    date: str  # YYYY-MM-DD, the exchange-local trading date
    tz: str = "America/New_York"
    provider: str = "lobster"

    @field_validator("date")
    @classmethod
    def _check_date(cls, value: str) -> str:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date in YYYY-MM-DD form, e.g. '2012-06-21'") from None
        return value

    @field_validator("tz")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name, e.g. 'America/New_York'") from None
        return value

    @model_validator(mode="after")
    def _check_row_counts(self) -> LobsterFiles:
        messages, books = formats.count_rows(self.message_file), formats.count_rows(self.orderbook_file)
        if messages != books:
            raise ValueError(
                f"LOBSTER files differ in row count: message file {self.message_file} has {messages} "
                f"rows, orderbook file {self.orderbook_file} has {books}; row i of the orderbook must "
                "be the book after message i"
            )
        return self

    @property
    def source(self) -> str:
        """The message file path, as metrics key."""
        return str(self.message_file)

    def read(self, block_bytes: int = formats.BLOCK_BYTES) -> Iterator[formats.TickChunk]:
        """The files' ticks in row order (see :func:`actors.tick_formats.read_lobster`)."""
        midnight_ns = formats.lobster_midnight_ns(self.date, self.tz)
        return formats.read_lobster(
            self.message_file, self.orderbook_file, self.symbol, midnight_ns, self.provider, block_bytes
        )


class _TardisFile(BaseParams):
    path: InputFile
    _columns: ClassVar[dict[str, pa.DataType]] = {}

    @model_validator(mode="after")
    def _check_header(self) -> _TardisFile:
        header = formats.csv_header(self.path)
        missing = [name for name in self._columns if name not in header]
        if missing:
            lacks = ", ".join(missing)
            raise ValueError(f"{self.path}: not a Tardis {self.format} CSV, lacks column(s) {lacks}")
        return self

    @property
    def source(self) -> str:
        """The file path, as quarantine ``source`` and metrics key."""
        return str(self.path)


class TardisTradesFile(_TardisFile):
    """A Tardis.dev ``trades`` CSV (see :func:`actors.tick_formats.read_tardis_trades`)."""

    format: Literal["tardis_trades"]
    _columns: ClassVar[dict[str, pa.DataType]] = formats.TARDIS_TRADE_COLUMNS

    def read(self, block_bytes: int = formats.BLOCK_BYTES) -> Iterator[formats.TickChunk]:
        """The file's trade ticks in row order."""
        return formats.read_tardis_trades(self.path, block_bytes)


class TardisQuotesFile(_TardisFile):
    """A Tardis.dev ``quotes`` CSV (see :func:`actors.tick_formats.read_tardis_quotes`)."""

    format: Literal["tardis_quotes"]
    _columns: ClassVar[dict[str, pa.DataType]] = formats.TARDIS_QUOTE_COLUMNS

    def read(self, block_bytes: int = formats.BLOCK_BYTES) -> Iterator[formats.TickChunk]:
        """The file's quote ticks in row order."""
        return formats.read_tardis_quotes(self.path, block_bytes)


#: One input of a replay, chosen by its ``format`` key.
FileSpec = Annotated[CanonicalFile | LobsterFiles | TardisTradesFile | TardisQuotesFile, Field(discriminator="format")]


_COUNTERS = ("rows_read", "ticks", "quarantined", "filtered")


def new_stats(format_name: str) -> dict[str, Any]:
    """Zeroed per-input counters: ``format``, ``slow_path`` and every name in ``_COUNTERS``."""
    return {"format": format_name, "slow_path": False, **dict.fromkeys(_COUNTERS, 0)}


class _Feed:
    """One input in the merge: its reader and the ticks read but not yet emitted."""

    def __init__(self, index: int, chunks: Iterator[formats.TickChunk], plausible: EventTimeRange) -> None:
        self.index, self.chunks, self.plausible = index, chunks, plausible
        self.ticks = empty_batch(TICK)
        self.keys = np.zeros(0, dtype=np.int64)  # merge key of each pending tick
        self.carry = _NO_KEY  # running max of (plausible) ts so far
        self.done = False

    def push(self, ticks: pa.RecordBatch) -> None:
        ts = ticks.column("ts").to_numpy()
        counted = self.plausible.contains(ts) & watermark_rows(ticks)
        keys = np.maximum.accumulate(ts if counted.all() else np.where(counted, ts, _NO_KEY))
        np.maximum(keys, self.carry, out=keys)
        self.carry = int(keys[-1])
        self.ticks, self.keys = ticks, keys

    def pop(self, count: int) -> tuple[pa.RecordBatch, np.ndarray]:
        head = self.ticks.slice(0, count), self.keys[:count]
        self.ticks, self.keys = self.ticks.slice(count), self.keys[count:]
        return head


_NO_KEY = int(np.iinfo(np.int64).min)

#: A filter applied to each chunk of ticks as read: TICK batch -> bool mask of rows to keep
#: (numpy, shape (n,)), or None to keep all. Rows not kept are counted as ``filtered``.
TickFilter = Callable[[pa.RecordBatch], "np.ndarray | None"]


class TickMerge:
    """K-way event-time merge of tick readers, in the order of the module docstring.

    Shared by :class:`FileReplay` and the paced replayer (``actors/replayer.py``).
    Iterating yields, in stream order, ``("quarantine", batch, None)`` for rejected rows
    as their reader finds them, and ``("ticks", batch, keys)`` for merged ticks: a TICK
    batch of any size and its merge keys (int64 ns, the running max of ``ts`` within the
    tick's input; non-decreasing across everything yielded).

    Args:
        readers: one iterator of :class:`~actors.tick_formats.TickChunk` per input, in
            input order (ties in merge key go to the earlier input).
        stats: one counter dict per input (:func:`new_stats`), updated in place:
            ``rows_read``, ``ticks`` (read and kept), ``quarantined``, ``filtered``, ``slow_path``.
        keep: optional :data:`TickFilter` (symbols, time range).
        plausible: the plausible event times; ticks outside never advance a merge key.
    """

    def __init__(
        self,
        readers: list[Iterator[formats.TickChunk]],
        stats: list[dict[str, Any]],
        keep: TickFilter | None = None,
        plausible: EventTimeRange | None = None,
    ) -> None:
        self._readers = readers
        self._stats = stats
        self._keep = keep
        self._plausible = plausible or EventTimeRange()
        self._feeds: list[_Feed] = []

    def __iter__(self) -> Iterator[tuple[str, pa.RecordBatch, np.ndarray | None]]:
        self._feeds = [_Feed(i, reader, self._plausible) for i, reader in enumerate(self._readers)]
        while True:
            for feed in self._feeds:
                yield from self._refill(feed)
            merged = self._merge_step()
            if merged is None:
                return
            yield "ticks", merged[0], merged[1]

    def _refill(self, feed: _Feed) -> Iterator[tuple[str, pa.RecordBatch, None]]:
        """Read chunks into an empty feed until it has ticks or its input ends."""
        stats = self._stats[feed.index]
        while not feed.done and not feed.keys.size:
            chunk = next(feed.chunks, None)
            if chunk is None:
                feed.done = True
                return
            ticks = chunk.ticks
            stats["rows_read"] += chunk.rows_read
            stats["slow_path"] |= chunk.slow_path
            if chunk.quarantine is not None and chunk.quarantine.num_rows:
                stats["quarantined"] += chunk.quarantine.num_rows
                yield "quarantine", chunk.quarantine, None
            if self._keep is not None and ticks.num_rows:
                mask = self._keep(ticks)
                if mask is not None and not mask.all():
                    kept = ticks.filter(pa.array(mask))
                    stats["filtered"] += ticks.num_rows - kept.num_rows
                    ticks = kept
            stats["ticks"] += ticks.num_rows
            if ticks.num_rows:
                feed.push(ticks)

    def _merge_step(self) -> tuple[pa.RecordBatch, np.ndarray] | None:
        """Every pending tick that no unread row can precede; None when all is emitted.

        ``bound`` is the smallest last key among inputs still being read: their unread rows
        have keys >= it. Keys < bound are safe; key == bound is safe for an input unless an
        earlier input still being read also sits at ``bound``. The first input at ``bound``
        always empties, so every step makes progress.
        """
        last = [int(f.keys[-1]) for f in self._feeds if not f.done]  # refilled: none is empty
        bound = min(last, default=None)
        at_bound = [f.index for f in self._feeds if not f.done and int(f.keys[-1]) == bound]
        parts = []
        for feed in self._feeds:
            if not feed.keys.size:
                continue
            if bound is None:
                count = feed.keys.size
            else:
                blocked = at_bound[0] < feed.index
                count = int(np.searchsorted(feed.keys, bound, side="left" if blocked else "right"))
            if count:
                parts.append(feed.pop(count))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        keys = np.concatenate([k for _, k in parts])
        order = np.argsort(keys, kind="stable")  # parts are in input order: ties keep input, then row order
        table = pa.Table.from_batches([b for b, _ in parts]).combine_chunks()
        return table.take(pa.array(order)).to_batches()[0], keys[order]

    def close(self) -> None:
        """Close every open reader (idempotent)."""
        for feed in self._feeds:
            close = getattr(feed.chunks, "close", None)
            if close is not None:
                close()
        self._feeds = []


def skip_merged(
    events: Iterator[tuple[str, pa.RecordBatch, np.ndarray | None]], ticks: int, quarantine: int
) -> Iterator[tuple[str, pa.RecordBatch, np.ndarray | None]]:
    """``events`` of a :class:`TickMerge` without their first ``ticks`` tick rows and first
    ``quarantine`` quarantine rows (a restored source resuming after what it emitted).

    The merge's output rows are the same every run, whatever the chunking, so skipping
    counts of rows resumes exactly where the snapshot was taken.
    """
    for stream, batch, keys in events:
        if stream == "ticks" and ticks:
            cut = min(ticks, batch.num_rows)
            ticks -= cut
            batch, keys = batch.slice(cut), keys[cut:]
        elif stream == "quarantine" and quarantine:
            cut = min(quarantine, batch.num_rows)
            quarantine -= cut
            batch = batch.slice(cut)
        if batch.num_rows:
            yield stream, batch, keys


def symbol_filter(symbols: list[str] | None) -> TickFilter | None:
    """A :data:`TickFilter` keeping only ``symbols`` (None: no filter)."""
    if symbols is None:
        return None
    value_set = pa.array(symbols, pa.string())
    return lambda ticks: pc.is_in(ticks.column("symbol"), value_set=value_set).to_numpy(zero_copy_only=False)


class FileReplay(Source):
    """Replay tick files as one stream of TICK batches in event-time order, as fast as possible.

    Outputs:
        ticks: TICK batches of at most ``batch_rows`` rows, each followed by a
            ``Watermark``: the largest plausible ``ts`` emitted so far minus the graph's
            ``event_time.allowed_lateness_ms`` (exact with the default 0).
        quarantine: QUARANTINE rows (malformed input), emitted as they are found.

    For pacing (``speed``), time filters, pause/resume and job bookkeeping use the
    ``replay`` kind (:class:`actors.replayer.Replayer`), which reads the same files.
    """

    class Params(BaseParams):
        """FileReplay params.

        Attributes:
            files: the inputs, merged in event-time order; ties go to the earlier file.
            symbols: keep only these symbols (others are counted as ``filtered``); None keeps all.
            batch_rows: maximum rows per emitted ticks batch.
        """

        files: list[FileSpec] = Field(min_length=1)
        symbols: list[str] | None = None
        batch_rows: int = Field(65_536, gt=0)

    outputs: ClassVar[dict[str, pa.Schema]] = {"ticks": TICK, "quarantine": QUARANTINE}

    def __init__(self, params: FileReplay.Params, ctx: OperatorContext, block_bytes: int = formats.BLOCK_BYTES) -> None:
        super().__init__(params, ctx)
        self.block_bytes = block_bytes
        self._keys = input_keys([spec.source for spec in params.files])
        self._stats = {key: new_stats(spec.format) for key, spec in zip(self._keys, params.files)}
        self._merge: TickMerge | None = None
        self._emitted = 0
        self._quarantine_emitted = 0
        self._newest: int | None = None  # the newest watermark-moving ts emitted
        self._skip = (0, 0)
        self._started = False

    def snapshot(self) -> dict[str, Any]:
        """The offset: tick and quarantine rows emitted, and the newest event time emitted."""
        return {"version": 1, "emitted": self._emitted, "quarantine_emitted": self._quarantine_emitted, "newest": self._newest}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue after a :meth:`snapshot` (the files are re-read and the emitted rows skipped).

        Raises:
            ValueError: a snapshot of another version, or the replay has started.
        """
        if state.get("version") != 1 or self._started:
            raise ValueError("file_replay: cannot restore this snapshot here (version or already started)")
        self._emitted, self._quarantine_emitted, self._newest = state["emitted"], state["quarantine_emitted"], state["newest"]
        self._skip = (self._emitted, self._quarantine_emitted)

    def events(self) -> Iterator[Emit | Watermark]:
        """Yield ``("ticks", batch)`` + ``Watermark`` pairs and ``("quarantine", batch)`` until the end.

        Raises:
            FileNotFoundError: a file vanished after validation.
            ValueError: a file's content contradicts its format (e.g. LOBSTER row counts differ).
        """
        self._started = True
        readers = [spec.read(self.block_bytes) for spec in self.params.files]
        plausible = self.ctx.event_time_range
        self._merge = TickMerge(readers, list(self._stats.values()), symbol_filter(self.params.symbols), plausible)
        watermarks = WatermarkGenerator("replay", allowed_lateness_ns=self.ctx.allowed_lateness_ns)
        if self._newest is not None:
            watermarks.observe(self._newest)
        pending: list[pa.RecordBatch] = []
        pending_rows, limit = 0, self.params.batch_rows
        for stream, merged, _ in _chain(skip_merged(self._merge, *self._skip), ("end", None, None)):
            if stream == "quarantine":
                self._quarantine_emitted += merged.num_rows
                yield stream, merged
                continue
            if merged is not None:
                pending.append(merged)
                pending_rows += merged.num_rows
            while pending_rows >= limit or (merged is None and pending_rows):
                batch, pending = take_rows(pending, min(limit, pending_rows))
                pending_rows -= batch.num_rows
                self._emitted += batch.num_rows
                ts = batch.column("ts").to_numpy()
                newest = plausible.plausible_max(ts[watermark_rows(batch)])
                if newest is not None:
                    watermarks.observe(newest)
                    self._newest = newest if self._newest is None else max(self._newest, newest)
                yield "ticks", batch
                watermark = watermarks.current()
                if watermark is not None:
                    yield Watermark(watermark)

    def close(self) -> None:
        """Close every open file reader."""
        if self._merge is not None:
            self._merge.close()

    def metrics(self) -> dict[str, Any]:
        """Counters for the run summary.

        Returns:
            ``rows_read`` (data rows, good + quarantined + filtered), ``ticks`` (emitted so far),
            ``quarantined``, ``filtered``, and ``files``: per file (keyed by path) its
            ``format``, ``slow_path`` (CSV fallback used) and the same counters, where
            ``ticks`` counts rows read and kept (equal to emitted once the replay ends).
        """
        totals = {name: sum(stats[name] for stats in self._stats.values()) for name in _COUNTERS}
        totals["ticks"] = self._emitted
        return {**totals, "files": {key: dict(stats) for key, stats in self._stats.items()}}


def input_keys(sources: list[str]) -> list[str]:
    """Metrics keys of inputs: their path, suffixed `` (files[i])`` where a path repeats."""
    return [key if sources.count(key) == 1 else f"{key} (files[{i}])" for i, key in enumerate(sources)]


def _chain(first: Iterator, last: tuple) -> Iterator:
    yield from first
    yield last


def take_rows(batches: list[pa.RecordBatch], count: int) -> tuple[pa.RecordBatch, list[pa.RecordBatch]]:
    """The first ``count`` rows of ``batches`` as one batch, and the rest."""
    first = batches[0]
    if first.num_rows >= count:
        rest = [first.slice(count)] if first.num_rows > count else []
        return first.slice(0, count), rest + batches[1:]
    table = pa.Table.from_batches(batches)
    head = table.slice(0, count).combine_chunks().to_batches()[0]
    rest = table.slice(count).to_batches()
    return head, [b for b in rest if b.num_rows]
