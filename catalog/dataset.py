"""Listing and reading the tick catalog, with partition and file-name pruning.

A read names a stream, optionally symbols and a half-open event-time range
``[start_ns, end_ns)``. Directories are pruned by ``symbol=`` and ``date=`` and files by
the ``first``/``last`` ts in their names before any file is opened; rows are then cut
to the range exactly. Rows come back in the stream schema (``TICK`` / ``SIGNAL``: the
partition's ``symbol`` restored, ``ts`` int64 ns UTC) in *catalog order*: by symbol
(sorted), then the file order of the layout (ticks ``ts, seq``; signals ``ts, name``) --
the order the files store, so reading a symbol is concatenating its files. Files of one
symbol whose ranges overlap (two jobs over overlapping ranges) are merged by a stable
sort on the same keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.writer import read_file
from catalog.layout import NS_PER_DAY, SORT_KEYS, CatalogFile, date_start_ns, file_schema, parse_file_name, stream_schema

__all__ = ["list_files", "catalog_symbols", "read_rows", "iter_rows", "file_chains"]


def catalog_symbols(root: Path, stream: str) -> list[str]:
    """The symbols with at least one file of ``stream`` under ``root``, sorted."""
    return sorted({f.symbol for f in list_files(root, stream)})


def list_files(
    root: Path,
    stream: str,
    symbols: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> list[CatalogFile]:
    """The files of ``stream`` that may hold rows of ``symbols`` in ``[start_ns, end_ns)``.

    Args:
        root: the catalog directory (missing: no files).
        stream: ``ticks`` or ``signals``.
        symbols: only these symbols (None: all).
        start_ns, end_ns: event-time range, int64 ns UTC (None: unbounded).

    Returns:
        :class:`~catalog.layout.CatalogFile` entries sorted by (symbol, first ts, last ts, suffix).
    """
    stream_schema(stream)  # raises ValueError for an unknown stream
    base = Path(root) / stream
    if not base.is_dir():
        return []
    wanted = None if symbols is None else set(symbols)
    found: list[CatalogFile] = []
    for symbol_dir in base.iterdir():
        if not symbol_dir.name.startswith("symbol=") or not symbol_dir.is_dir():
            continue
        if wanted is not None and unquote(symbol_dir.name[len("symbol="):]) not in wanted:
            continue
        for date_dir in symbol_dir.iterdir():
            if not date_dir.name.startswith("date=") or not date_dir.is_dir():
                continue
            try:
                day = date_start_ns(date_dir.name[len("date="):])
            except ValueError:
                continue
            if (end_ns is not None and day >= end_ns) or (start_ns is not None and day + NS_PER_DAY <= start_ns):
                continue
            for path in date_dir.iterdir():
                entry = parse_file_name(path)
                if entry is not None and entry.overlaps(start_ns, end_ns):
                    found.append(entry)
    return sorted(found)


def file_chains(files: Sequence[CatalogFile]) -> list[list[CatalogFile]]:
    """Files of one symbol as chains of non-overlapping files, each in time order.

    Normally one chain (a job's files never overlap); files of jobs with overlapping
    ranges go to further chains (greedy interval partitioning), which a reader merges.
    """
    chains: list[list[CatalogFile]] = []
    for entry in sorted(files, key=lambda f: (f.first_ts, f.last_ts, f.suffix, str(f.path))):
        for chain in chains:
            if chain[-1].last_ts < entry.first_ts:
                chain.append(entry)
                break
        else:
            chains.append([entry])
    return chains


def _cut(table: pa.Table, start_ns: int | None, end_ns: int | None) -> pa.Table:
    ts = table.column("ts")
    mask = None
    if start_ns is not None:
        mask = pc.greater_equal(ts, pa.scalar(start_ns, ts.type))
    if end_ns is not None:
        below = pc.less(ts, pa.scalar(end_ns, ts.type))
        mask = below if mask is None else pc.and_(mask, below)
    return table if mask is None else table.filter(mask)


def _as_stream(stream: str, symbol: str, table: pa.Table) -> pa.Table:
    """File rows of ``symbol`` in the stream schema (``symbol`` restored, ``ts`` int64)."""
    schema = stream_schema(stream)
    columns = []
    for field in schema:
        if field.name == "symbol":
            columns.append(pa.repeat(pa.scalar(symbol, pa.string()), table.num_rows))
        else:
            columns.append(table.column(field.name).cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _read_file(entry: CatalogFile, stream: str, start_ns: int | None, end_ns: int | None) -> pa.Table:
    table = read_file(entry.path).cast(file_schema(stream))
    if not entry.overlaps(start_ns, end_ns):
        return table.slice(0, 0)
    if (start_ns is not None and entry.first_ts < start_ns) or (end_ns is not None and entry.last_ts >= end_ns):
        table = _cut(table, start_ns, end_ns)
    return table


def _symbol_rows(stream: str, symbol: str, files: Sequence[CatalogFile], start_ns, end_ns) -> pa.Table:
    chains = file_chains(files)
    tables = [_read_file(f, stream, start_ns, end_ns) for chain in chains for f in chain]
    table = pa.concat_tables(tables) if tables else file_schema(stream).empty_table()
    if len(chains) > 1 and table.num_rows > 1:  # overlapping jobs: restore file order
        keys = [table.column(name).cast(pa.int64()) if name == "ts" else table.column(name) for name in SORT_KEYS[stream]]
        order = pc.sort_indices(pa.table(dict(zip(SORT_KEYS[stream], keys))),
                                sort_keys=[(name, "ascending") for name in SORT_KEYS[stream]])  # fmt: skip
        table = table.take(order)
    return _as_stream(stream, symbol, table)


def read_rows(
    root: Path,
    stream: str,
    symbols: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> pa.Table:
    """Every stored row of ``stream`` for ``symbols`` in ``[start_ns, end_ns)``, in catalog order.

    Returns:
        A table of the stream schema (TICK or SIGNAL: ``ts`` int64 ns UTC, every column's
        type and nullability as in ``graph/schemas.py``).
    """
    files = list_files(root, stream, symbols, start_ns, end_ns)
    by_symbol: dict[str, list[CatalogFile]] = {}
    for entry in files:
        by_symbol.setdefault(entry.symbol, []).append(entry)
    tables = [_symbol_rows(stream, symbol, by_symbol[symbol], start_ns, end_ns) for symbol in sorted(by_symbol)]
    return pa.concat_tables(tables) if tables else stream_schema(stream).empty_table()


def iter_rows(
    stream: str,
    chain: Sequence[CatalogFile],
    start_ns: int | None = None,
    end_ns: int | None = None,
    chunk_rows: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """The rows of one chain of one symbol's files (:func:`file_chains`), streamed.

    One file is open at a time and about one row group of it is decoded at a time, so
    memory does not grow with the data. Batches are in the stream schema, file order,
    cut to ``[start_ns, end_ns)``, at most ``chunk_rows`` rows each.
    """
    schema = file_schema(stream)
    for entry in chain:
        if not entry.overlaps(start_ns, end_ns):
            continue
        cut = (start_ns is not None and entry.first_ts < start_ns) or (end_ns is not None and entry.last_ts >= end_ns)
        with pq.ParquetFile(entry.path) as parquet:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=schema.names):
                table = pa.Table.from_batches([batch]).cast(schema)
                if cut:
                    table = _cut(table, start_ns, end_ns)
                if table.num_rows:
                    yield from _as_stream(stream, entry.symbol, table).to_batches(max_chunksize=chunk_rows)
