"""Canonical tick files: CSV with a header, or Parquet, whose columns are named as TICK.

This is the layout tickgraph writes (``run.py export ticks``, the recorder), so a
session can be replayed from its own output. Fields are never quoted in the CSV sense:
a value wrapped whole in double quotes (pyarrow's CSV writer quotes string values) is
unwrapped, any other quote is part of the value (``"buy`` is a malformed ``side``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.tick_formats.chunks import BLOCK_BYTES, PARQUET_ROWS, TickChunk, open_input
from actors.tick_formats.csv_layer import CsvChunks, RawChunk, csv_header, drive
from actors.tick_formats.values import BOOL, F64, I64, STR, Errors, parse, parse_choice, parse_ts, rejections, ticks_batch

__all__ = ["CANONICAL_SIDES", "canonical_columns", "is_parquet", "read_canonical"]

_CANONICAL_CSV_TYPES = {
    "symbol": STR, "ts": STR, "price": F64, "size": F64, "side": STR, "bid": F64, "ask": F64,
    "bid_size": F64, "ask_size": F64, "provider": STR, "seq": I64, "advances_watermark": BOOL,
}  # fmt: skip
#: Canonical ``side`` values (the aggressor side); an empty field is null (unknown).
CANONICAL_SIDES: dict[str, str | None] = {"buy": "buy", "sell": "sell"}


def is_parquet(path: str | Path) -> bool:
    """True if ``path`` ends in ``.parquet`` or ``.pq``; canonical files are CSV otherwise."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def canonical_columns(path: str | Path) -> list[str]:
    """The column names of a canonical CSV (header) or Parquet (schema) file."""
    return pq.read_schema(str(path)).names if is_parquet(path) else csv_header(path)


def read_canonical(path: Path, provider: str | None, block_bytes: int = BLOCK_BYTES) -> Iterator[TickChunk]:
    """Read a canonical tick file: CSV with header, or Parquet, columns named as TICK.

    Args:
        path: ``.parquet``/``.pq`` is Parquet, anything else CSV (``.gz`` etc. decompressed).
        provider: used where the file has no ``provider`` column or the value is empty.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: ``symbol`` and ``ts`` required; ``ts`` int64 ns, a Parquet timestamp, or
        (CSV) ISO-8601 text with offset, all made int64 ns UTC; ``side`` buy, sell or empty;
        ``advances_watermark`` (optional) true, false or empty;
        ``seq`` from the column, else the 0-based data row; absent optional columns are
        null; ``origin`` is "replay".

    Raises:
        ValueError: ``symbol``/``ts`` missing, or no ``provider`` column and no param.
        FileNotFoundError: the file cannot be opened.
    """
    source = str(path)
    present = [name for name in canonical_columns(path) if name in _CANONICAL_CSV_TYPES]
    missing = [name for name in ("symbol", "ts") if name not in present]
    if "provider" not in present and provider is None:
        missing.append("provider (or the 'provider' param)")
    if missing:
        raise ValueError(f"{source}: canonical tick file lacks column(s) {', '.join(missing)}")

    def convert(chunk: RawChunk) -> tuple[TickChunk, bool]:
        n, cols = len(chunk.rows), chunk.columns
        errors = Errors(n)
        symbol = parse(cols["symbol"], STR, "symbol", errors)
        errors.require(symbol, "symbol")
        ts = parse_ts(cols["ts"], "ts", errors)
        errors.require(ts, "ts")
        vendor: Any = provider
        if "provider" in cols:
            vendor = parse(cols["provider"], STR, "provider", errors)
            vendor = vendor if provider is None else vendor.fill_null(provider)
            errors.require(vendor, "provider")
        rows = pa.array(chunk.rows)
        seq = pc.coalesce(parse(cols["seq"], I64, "seq", errors), rows) if "seq" in cols else rows
        values = {
            name: parse(cols[name], F64, name, errors)
            for name in ("price", "size", "bid", "ask", "bid_size", "ask_size")
            if name in cols
        }
        if "side" in cols:
            values["side"] = parse_choice(cols["side"], CANONICAL_SIDES, "side", errors)
        if "advances_watermark" in cols:  # a recording's mark (true/false; empty: true)
            values["advances_watermark"] = parse(cols["advances_watermark"], BOOL, "advances_watermark", errors)
        ticks = ticks_batch(n, errors, symbol=symbol, ts=ts, provider=vendor, seq=seq, **values)
        bad = rejections(source, chunk, errors, symbol, ts)
        return TickChunk(ticks, bad, chunk.rows_read, chunk.raw is not None), bool(errors.found or chunk.bad)

    if is_parquet(path):
        try:
            parquet = pq.ParquetFile(open_input(path))
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{source}: not a readable Parquet file ({exc})") from exc
        done = 0
        with parquet:
            for batch in parquet.iter_batches(batch_size=PARQUET_ROWS, columns=present):
                n = batch.num_rows
                columns = dict(zip(present, batch.columns))
                yield convert(RawChunk(done, np.arange(done, done + n), columns, rows_read=n))[0]
                done += n
        return
    types = {name: _CANONICAL_CSV_TYPES[name] for name in present}
    yield from drive(CsvChunks(path, types, None, block_bytes, unquote_strings=True), convert)
