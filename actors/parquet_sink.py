"""The Parquet sink: confirmed and corrected bars as a hive-partitioned dataset, quarantine rows beside it.

Layout under ``path``::

    bars/symbol=AMZN/timeframe=1m/part-1340285400000000000.parquet
    bars/symbol=EUR%2FUSD/timeframe=1s/part-....parquet     # values URI-encoded, as pyarrow does
    quarantine/part-0.parquet

* A bar file holds the BAR columns minus the partition columns (``symbol``,
  ``timeframe``, recovered from the directory names by any hive-aware reader) and minus
  ``status``, plus ``revision`` (int64): 0 for a bar as confirmed, 1, 2, ... for each
  correction of it (late policy ``amend``), as the SQL store updates the row in place.
  ``ts`` (bar open time) is stored as ``timestamp[ns, tz=UTC]``; every other column
  keeps its BAR type and nullability (:func:`parquet_schema` is the one rule).
* A partition's rows are written in arrival order, ``rows_per_file`` rows per file,
  the remainder at end of stream. A file is named after the ``ts`` of its first bar
  (int64 ns UTC), so the names and contents depend only on the sequence of confirmed
  bars: re-running a job rewrites the same files with identical bytes (idempotent).
  A name already used in this run (two files starting at the same bar) gets ``-1``,
  ``-2``, ... appended.
* Quarantine rows (stream ``quarantine``, QUARANTINE schema with ``ts`` as a timestamp)
  go to ``quarantine/part-<n>.parquet``, n = 0, 1, ... per run (``part-<shard>-<n>``
  when the node runs several shards).
* Files are written to a hidden temporary name and renamed, so a reader never sees a
  half-written file. Existing files are never deleted: a bar corrected after its file
  was written (a late-tick amendment) appears again in a later file with a higher
  ``revision``; :func:`latest_bars` keeps the highest revision per (symbol, timeframe,
  ts), which is what ``bars_ohlcv`` holds.
* Checkpoints: the sink's snapshot is its pending rows (and file counters); files already
  written are final, and a restored sink receiving the same bars writes the same files.
* With ``parallelism > 1`` key the node by symbol so that each partition has one writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from graph.operator import Emit, Operator, OperatorContext, Params, check_snapshot_version
from graph.params import OutputDir
from graph.schemas import BAR, BAR_CONFIRMED, BAR_CORRECTED, QUARANTINE

__all__ = [
    "TS_TYPE",
    "PARTITION_COLUMNS",
    "parquet_schema",
    "BAR_FILE_SCHEMA",
    "QUARANTINE_FILE_SCHEMA",
    "bars_dataset",
    "latest_bars",
    "ParquetSink",
    "ParquetSinkParams",
]

#: How ``ts`` (int64 ns UTC in the stream schemas) is stored in Parquet.
TS_TYPE = pa.timestamp("ns", tz="UTC")
#: Hive partition columns of the bar dataset, outermost first.
PARTITION_COLUMNS: tuple[str, ...] = ("symbol", "timeframe")
_BARS_DIR = "bars"
_QUARANTINE_DIR = "quarantine"


def parquet_schema(schema: pa.Schema, exclude: tuple[str, ...] = ()) -> pa.Schema:
    """The schema of the Parquet files written for a stream schema.

    Args:
        schema: a stream schema from ``graph/schemas.py``.
        exclude: fields not stored in the files (partition columns, ``status``).

    Returns:
        ``schema`` without ``exclude``, with ``ts`` as :data:`TS_TYPE`; every other
        field keeps its type and nullability.
    """
    return pa.schema(
        [
            field.with_type(TS_TYPE) if field.name == "ts" else field
            for field in schema
            if field.name not in exclude
        ]
    )


#: Columns inside a bar file: BAR without the partition columns and ``status``, plus ``revision``.
BAR_FILE_SCHEMA = parquet_schema(BAR, exclude=(*PARTITION_COLUMNS, "status")).append(
    pa.field("revision", pa.int64(), nullable=False)
)
#: Columns of a quarantine file.
QUARANTINE_FILE_SCHEMA = parquet_schema(QUARANTINE)
#: The bar dataset as read back: partition columns then the file columns.
_BAR_DATASET_SCHEMA = pa.schema([*(BAR.field(name) for name in PARTITION_COLUMNS), *BAR_FILE_SCHEMA])


def bars_dataset(path: str | Path) -> ds.Dataset:
    """The bar dataset written under ``path`` (the sink's ``path`` or its ``bars`` folder).

    Partition values are decoded (``EUR%2FUSD`` -> ``EUR/USD``) and typed as strings
    explicitly, so a numeric-looking symbol such as ``0700`` is not read as an integer.

    Returns:
        A ``pyarrow.dataset.Dataset`` with columns ``symbol``, ``timeframe`` (string)
        followed by :data:`BAR_FILE_SCHEMA`.
    """
    path = Path(path)
    if (path / _BARS_DIR).is_dir():
        path = path / _BARS_DIR
    partitioning = ds.partitioning(pa.schema([BAR.field(name) for name in PARTITION_COLUMNS]), flavor="hive")
    return ds.dataset(path, format="parquet", partitioning=partitioning, schema=_BAR_DATASET_SCHEMA)


def latest_bars(table: pa.Table) -> pa.Table:
    """One row per (symbol, timeframe, ts): the highest ``revision`` (the bar as last corrected).

    Args:
        table: rows of :func:`bars_dataset` (any order).

    Returns:
        Those rows, sorted by (symbol, timeframe, ts), ``revision`` dropped.
    """
    ordered = table.sort_by([("symbol", "ascending"), ("timeframe", "ascending"), ("ts", "ascending"), ("revision", "descending")])
    keys = [ordered[name].to_numpy(zero_copy_only=False) for name in ("symbol", "timeframe")]
    ts = ordered["ts"].cast(pa.int64()).to_numpy()
    first = np.ones(len(ts), dtype=bool)
    if len(ts) > 1:
        first[1:] = (keys[0][1:] != keys[0][:-1]) | (keys[1][1:] != keys[1][:-1]) | (ts[1:] != ts[:-1])
    return ordered.filter(pa.array(first)).drop_columns(["revision"])


class ParquetSinkParams(Params):
    """Params of the ``parquet_sink`` kind.

    Attributes:
        path: output directory (relative to the graph file); created if missing.
        rows_per_file: rows per Parquet file (per partition for bars).
    """

    path: OutputDir = Field(default=Path("out/parquet"), validate_default=True)
    rows_per_file: int = 1_000_000

    @field_validator("rows_per_file")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a positive integer, was {value}")
        return value


class _Buffer:
    """Pending rows of one output (a bar partition or the quarantine stream)."""

    __slots__ = ("batches", "rows")

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0

    def append(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self.rows += batch.num_rows

    def take(self, rows_per_file: int, everything: bool) -> list[pa.Table]:
        """Remove and return whole files' worth of rows (and the remainder if ``everything``)."""
        if self.rows == 0 or (self.rows < rows_per_file and not everything):
            return []
        table = pa.Table.from_batches(self.batches).combine_chunks()
        files = []
        start = 0
        while table.num_rows - start >= rows_per_file:
            files.append(table.slice(start, rows_per_file))
            start += rows_per_file
        rest = table.slice(start)
        if everything and rest.num_rows:
            files.append(rest)
            rest = rest.slice(0, 0)
        self.batches = rest.to_batches()
        self.rows = rest.num_rows
        return files


class ParquetSink(Operator):
    """Writes confirmed and corrected bars (stream ``bars``) and quarantine rows to Parquet.

    Forming bars are ignored (counted). See the module docstring for the layout, the
    file naming and the idempotence guarantee. Buffers are written when they reach
    ``rows_per_file`` and at :meth:`on_eof`; a run aborted by another node's failure
    closes the sink, which then writes what it has buffered (nothing received is lost).
    """

    Params: ClassVar[type[Params]] = ParquetSinkParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: ParquetSinkParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        path = Path(params.path)
        self._root = path if path.is_absolute() else Path(ctx.base_dir) / path
        self._bars: dict[tuple[str, str], _Buffer] = {}
        self._unsorted = _Buffer()  # confirmed bars not yet split into partitions
        self._quarantine = _Buffer()
        self._quarantine_files = 0
        self._names_used: set[Path] = set()
        self._rows_written = {"bars": 0, "quarantine": 0}
        self._files_written = 0
        self._forming_ignored = 0
        self._revisions: dict[tuple[str, str, int], int] = {}  # corrections so far per bar
        self._ended = False

    def __repr__(self) -> str:
        return f"ParquetSink(node_id={self.ctx.node_id!r}, path={str(self._root)!r})"

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Buffer a BAR batch (``bars``) or QUARANTINE batch (``quarantine``); write full files.

        Raises:
            ValueError: an unknown stream name, or a batch lacking a needed column.
        """
        if stream == "bars":
            self._add_bars(batch)
        elif stream == "quarantine":
            self._quarantine.append(_file_batch(batch, QUARANTINE_FILE_SCHEMA, stream, self.ctx.node_id))
            self._write_quarantine(everything=False)
        else:
            raise ValueError(
                f"parquet_sink {self.ctx.node_id!r}: unknown input stream {stream!r}; "
                "expected 'bars' or 'quarantine'"
            )
        return []

    def on_eof(self) -> list[Emit]:
        """Write every buffered row (partitions in sorted order)."""
        self._ended = True
        self._distribute()
        for key in sorted(self._bars):
            self._write_bars(key, everything=True)
        self._write_quarantine(everything=True)
        return []

    def close(self) -> None:
        """After an abort (no end-of-stream): write what is buffered, as :meth:`on_eof` would."""
        if not self._ended:
            self.on_eof()

    def discard(self) -> None:
        """Forget the pending rows (a restart: the checkpoint has them), so close writes nothing."""
        self._ended = True

    def snapshot(self) -> dict[str, Any]:
        """The pending rows (per partition, unsorted, quarantine) and the file counters."""
        return {
            "version": 1,
            "bars": {key: list(buffer.batches) for key, buffer in self._bars.items()},
            "unsorted": list(self._unsorted.batches),
            "quarantine": list(self._quarantine.batches),
            "quarantine_files": self._quarantine_files,
            "names_used": sorted(str(p) for p in self._names_used),
            "rows_written": dict(self._rows_written),
            "files_written": self._files_written,
            "forming_ignored": self._forming_ignored,
            "revisions": dict(self._revisions),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot`.

        Raises:
            ValueError: a snapshot of another version.
        """
        check_snapshot_version(state, 1, "parquet_sink")

        def buffer(batches: list[pa.RecordBatch]) -> _Buffer:
            out = _Buffer()
            for batch in batches:
                out.append(batch)
            return out

        self._bars = {tuple(key): buffer(batches) for key, batches in state["bars"].items()}
        self._unsorted, self._quarantine = buffer(state["unsorted"]), buffer(state["quarantine"])
        self._quarantine_files = state["quarantine_files"]
        self._names_used = {Path(p) for p in state["names_used"]}
        self._rows_written = dict(state["rows_written"])
        self._files_written, self._forming_ignored = state["files_written"], state["forming_ignored"]
        self._revisions = dict(state["revisions"])

    def metrics(self) -> dict[str, Any]:
        """``rows_written`` ({"bars", "quarantine"}), ``files_written``, ``forming_ignored``."""
        return {
            "rows_written": dict(self._rows_written),
            "files_written": self._files_written,
            "forming_ignored": self._forming_ignored,
        }

    # -- internals ---------------------------------------------------------------------

    def _add_bars(self, batch: pa.RecordBatch) -> None:
        if "status" not in batch.schema.names:
            raise ValueError(
                f"parquet_sink {self.ctx.node_id!r}: batch on stream 'bars' lacks column 'status' of BAR"
            )
        stored = batch.filter(pc.is_in(batch["status"], pa.array([BAR_CONFIRMED, BAR_CORRECTED])))
        self._forming_ignored += batch.num_rows - stored.num_rows
        if stored.num_rows == 0:
            return
        revision = np.zeros(stored.num_rows, dtype=np.int64)
        corrected = np.flatnonzero(pc.equal(stored["status"], BAR_CORRECTED).to_numpy(zero_copy_only=False))
        if len(corrected):
            rows = stored.take(pa.array(corrected)).select(["symbol", "timeframe", "ts"]).to_pylist()
            for position, row in zip(corrected.tolist(), rows):
                key = (row["symbol"], row["timeframe"], row["ts"])
                revision[position] = self._revisions[key] = self._revisions.get(key, 0) + 1
        stored = stored.append_column("revision", pa.array(revision))
        # Partition lazily: splitting every small batch into ~(symbols x timeframes)
        # pieces costs one `take` per piece; splitting the buffered rows once costs one.
        self._unsorted.append(_with_partition_columns(stored, self.ctx.node_id))
        if self._unsorted.rows >= self.params.rows_per_file:
            self._distribute()
            for key in sorted(self._bars):
                self._write_bars(key, everything=False)

    def _distribute(self) -> None:
        """Move the unsorted buffered bars into their (symbol, timeframe) partition buffers."""
        if self._unsorted.rows == 0:
            return
        table = pa.Table.from_batches(self._unsorted.batches).combine_chunks()
        self._unsorted = _Buffer()
        for key, rows in _partitions(table.to_batches(max_chunksize=table.num_rows)[0]):
            buffer = self._bars.get(key)
            if buffer is None:
                buffer = self._bars[key] = _Buffer()
            buffer.append(_file_batch(rows, BAR_FILE_SCHEMA, "bars", self.ctx.node_id))

    def _write_bars(self, key: tuple[str, str], everything: bool) -> None:
        symbol, timeframe = key
        folder = (
            self._root
            / _BARS_DIR
            / f"symbol={quote(symbol, safe='')}"
            / f"timeframe={quote(timeframe, safe='')}"
        )
        for table in self._bars[key].take(self.params.rows_per_file, everything):
            first_ts = table["ts"][0].cast(pa.int64()).as_py()
            self._write(folder, f"part-{first_ts}", table)
            self._rows_written["bars"] += table.num_rows

    def _write_quarantine(self, everything: bool) -> None:
        folder = self._root / _QUARANTINE_DIR
        for table in self._quarantine.take(self.params.rows_per_file, everything):
            n = self._quarantine_files
            stem = f"part-{n}" if self.ctx.num_shards == 1 else f"part-{self.ctx.shard}-{n}"
            self._write(folder, stem, table)
            self._quarantine_files += 1
            self._rows_written["quarantine"] += table.num_rows

    def _write(self, folder: Path, stem: str, table: pa.Table) -> None:
        path = folder / f"{stem}.parquet"
        suffix = 0
        while path in self._names_used:
            suffix += 1
            path = folder / f"{stem}-{suffix}.parquet"
        self._names_used.add(path)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{path.name}.tmp"  # hidden: dataset readers skip it
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
        self._files_written += 1


def _file_batch(batch: pa.RecordBatch, schema: pa.Schema, stream: str, node_id: str) -> pa.RecordBatch:
    """``batch``'s columns of ``schema``, ``ts`` cast to :data:`TS_TYPE`."""
    missing = [name for name in schema.names if name not in batch.schema.names]
    if missing:
        raise ValueError(f"parquet_sink {node_id!r}: batch on stream {stream!r} lacks column(s) {missing}")
    columns = [batch[name].cast(field.type) for name, field in zip(schema.names, schema)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _with_partition_columns(batch: pa.RecordBatch, node_id: str) -> pa.RecordBatch:
    """``batch`` reduced to the partition columns plus :data:`BAR_FILE_SCHEMA` columns."""
    names = [*PARTITION_COLUMNS, *BAR_FILE_SCHEMA.names]
    missing = [name for name in names if name not in batch.schema.names]
    if missing:
        raise ValueError(f"parquet_sink {node_id!r}: batch on stream 'bars' lacks column(s) {missing}")
    return batch.select(names)


def _partitions(batch: pa.RecordBatch) -> list[tuple[tuple[str, str], pa.RecordBatch]]:
    """Split ``batch`` by (symbol, timeframe), rows in input order within each part.

    One stable sort and one ``take`` for the whole batch; the parts are zero-copy slices.
    """
    symbols = pc.dictionary_encode(batch["symbol"])
    timeframes = pc.dictionary_encode(batch["timeframe"])
    symbol_names = symbols.dictionary.to_pylist()
    timeframe_names = timeframes.dictionary.to_pylist()
    if len(symbol_names) == 1 and len(timeframe_names) == 1:
        return [((symbol_names[0], timeframe_names[0]), batch)]
    key = symbols.indices.to_numpy().astype(np.int64) * len(timeframe_names) + timeframes.indices.to_numpy()
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    ends = np.r_[starts[1:], len(order)]
    ordered = batch.take(pa.array(order))
    parts = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        k = int(sorted_key[start])
        name = (symbol_names[k // len(timeframe_names)], timeframe_names[k % len(timeframe_names)])
        parts.append((name, ordered.slice(start, end - start)))
    return parts
