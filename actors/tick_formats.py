"""Tick file readers: canonical CSV/Parquet, LOBSTER, Tardis trades and Tardis quotes.

Every reader is a generator of :class:`TickChunk`: a TICK batch in file row order, the
QUARANTINE rows found in the same stretch of the file, and how many data rows it read.
Readers only parse: they never sort, de-duplicate or check values (a NaN price stays
NaN; the normalizer judges it). Memory is bounded by one chunk per open file.

CSV files are read on two paths:

* fast: a typed ``pyarrow.csv.open_csv`` stream, no Python per row;
* fallback: from the first block that fails to parse, convert or validate, the rest of
  the file is read as whole lines, split on ``,`` and cast column by column with masks,
  so every bad row is quarantined with its exact line and every good row is kept. The
  fallback does not understand commas inside quoted fields.

A "data row" is a non-empty line after the header (if any), counted from 0.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from graph.schemas import ORIGIN_REPLAY, QUARANTINE, TICK

__all__ = [
    "BLOCK_BYTES",
    "TickChunk",
    "open_input",
    "csv_header",
    "count_rows",
    "is_parquet",
    "canonical_columns",
    "lobster_midnight_ns",
    "read_canonical",
    "read_lobster",
    "read_tardis_trades",
    "read_tardis_quotes",
    "read_tick_table",
    "TARDIS_TRADE_COLUMNS",
    "TARDIS_QUOTE_COLUMNS",
]

BLOCK_BYTES = 4 << 20  # CSV block read per step (about 100k LOBSTER rows)
PARQUET_ROWS = 131_072  # Parquet rows read per step
MALFORMED = "malformed_row"
MISSING = "missing_value"

_F64, _I64, _STR = pa.float64(), pa.int64(), pa.string()
_SECONDS = pa.decimal128(18, 9)  # LOBSTER time: exact seconds, up to 9 decimals
_PATTERNS = {
    _F64: r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf|infinity))$",
    _I64: r"^-?\d{1,19}$",
    _SECONDS: r"^[+-]?(?:\d+\.?\d{0,9}|\.\d{1,9})$",
    pa.timestamp("ns", "UTC"): r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d:?\d\d)$",
}
_WHAT = {
    _F64: "is not a number",
    _I64: "is not an integer",
    _SECONDS: "is not a decimal number of seconds with at most 9 decimals",
    pa.timestamp("ns", "UTC"): "is neither int64 ns nor ISO-8601 text with a UTC offset",
}


@dataclass(frozen=True)
class TickChunk:
    """One step of a reader.

    Attributes:
        ticks: TICK schema, the good rows of this stretch of the file, in file order.
        quarantine: QUARANTINE schema, the rejected rows of the stretch, or None.
        rows_read: data rows consumed (good + rejected).
        slow_path: True if the stretch was read on the CSV fallback path.
    """

    ticks: pa.RecordBatch
    quarantine: pa.RecordBatch | None
    rows_read: int
    slow_path: bool = False


def open_input(path: str | Path) -> pa.NativeFile:
    """Open ``path`` for reading, decompressing ``.gz``/``.bz2``/``.zst`` by extension.

    Raises:
        FileNotFoundError: the file cannot be opened (e.g. it vanished after validation).
    """
    try:
        return pa.input_stream(str(path), compression="detect")
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise FileNotFoundError(errno.ENOENT, f"cannot open input file {path} ({exc})", str(path)) from exc


def csv_header(path: str | Path) -> list[str]:
    """The fields of the first line of a CSV file (its header, or its first data row)."""
    with open_input(path) as stream:
        head = stream.read(1 << 16)
    lines = head.decode("utf-8-sig", errors="replace").splitlines()
    return next(csv.reader(lines[:1]), [])


def count_rows(path: str | Path) -> int:
    """Number of non-empty lines of a text file (the data rows of a header-less CSV).

    Raises:
        FileNotFoundError: the file cannot be opened.
    """
    if not csv_header(path):
        return 0
    with open_input(path) as stream:
        reader = pacsv.open_csv(stream, **_line_options(skip_rows=0))
        return sum(batch.num_rows for batch in reader)


def is_parquet(path: str | Path) -> bool:
    """True if ``path`` ends in ``.parquet`` or ``.pq``; canonical files are CSV otherwise."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def canonical_columns(path: str | Path) -> list[str]:
    """The column names of a canonical CSV (header) or Parquet (schema) file."""
    return pq.read_schema(str(path)).names if is_parquet(path) else csv_header(path)


def lobster_midnight_ns(day: str, tz: str) -> int:
    """Local midnight of a date in a time zone, DST-correct.

    Args:
        day: ``YYYY-MM-DD``.
        tz: IANA time zone name, e.g. ``America/New_York``.

    Returns:
        int ns since the epoch, UTC (e.g. 2012-06-21 in New York: 04:00 UTC).
    """
    local = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=ZoneInfo(tz))
    delta = local - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


# ----------------------------------------------------------------------------- CSV layer


def _line_options(skip_rows: int, block_bytes: int = BLOCK_BYTES) -> dict[str, Any]:
    """open_csv options reading each line whole into one string column ``line``."""
    return {
        "read_options": pacsv.ReadOptions(column_names=["line"], skip_rows=skip_rows, block_size=block_bytes),
        "parse_options": pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
        "convert_options": pacsv.ConvertOptions(column_types={"line": _STR}, strings_can_be_null=False),
    }


@dataclass
class _RawChunk:
    start: int  # data row of the first row of the chunk
    rows: np.ndarray  # int64 data row of each parsed row
    columns: dict[str, pa.Array]  # typed (fast path, Parquet) or string (fallback)
    raw: pa.Array | None  # line text of each parsed row (fallback only)
    bad: list[tuple[int, str, str]]  # (row, detail, line) of rows with a wrong field count
    rows_read: int


class _CsvChunks:
    """Iterate a CSV file as :class:`_RawChunk`; ``fall_back(row)`` switches to line mode."""

    def __init__(self, path: Path, types: dict[str, pa.DataType], names: list[str] | None, block_bytes: int):
        self.path, self.types, self.header, self.block_bytes = path, types, names is None, block_bytes
        first_line = csv_header(path)
        self.names, self.empty = first_line if names is None else names, not first_line
        self.slow, self.restart = False, 0

    def fall_back(self, row: int) -> None:
        self.slow, self.restart = True, row

    def __iter__(self) -> Iterator[_RawChunk]:
        if self.empty:
            return
        done = 0
        stream = open_input(self.path)
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    block_size=self.block_bytes, column_names=None if self.header else self.names
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=self.types,
                    include_columns=list(self.types),
                    null_values=[""],
                    strings_can_be_null=True,
                ),
            )
            for batch in reader:
                n = batch.num_rows
                columns = dict(zip(self.types, batch.columns))
                yield _RawChunk(done, np.arange(done, done + n), columns, None, [], n)
                if self.slow:
                    break
                done += n
        except pa.ArrowInvalid:
            self.fall_back(done)
        finally:
            stream.close()
        if self.slow:
            yield from self._lines(self.restart)

    def _lines(self, start: int) -> Iterator[_RawChunk]:
        positions = [self.names.index(name) for name in self.types]
        expected, row = len(self.names), 0
        with open_input(self.path) as stream:
            for batch in pacsv.open_csv(stream, **_line_options(int(self.header), self.block_bytes)):
                first, row = row, row + batch.num_rows
                if row <= start:
                    continue
                skip = max(start - first, 0)
                lines = batch.column(0).slice(skip)
                rows = np.arange(first + skip, row)
                parts = pc.split_pattern(lines, ",")
                counts = pc.list_value_length(parts).to_numpy()
                ok = counts == expected
                bad = [
                    (int(r), f"expected {expected} fields, got {c}", text)
                    for r, c, text in zip(rows[~ok], counts[~ok], lines.filter(pa.array(~ok)).to_pylist())
                ]
                if not ok.all():
                    parts, lines, rows = parts.filter(pa.array(ok)), lines.filter(pa.array(ok)), rows[ok]
                columns = {name: _field(pc.list_element(parts, p)) for name, p in zip(self.types, positions)}
                yield _RawChunk(first + skip, rows, columns, lines, bad, len(ok))


def _field(values: pa.Array) -> pa.Array:
    """A split CSV field: surrounding quotes removed, empty text as null."""
    if len(values) and pc.any(pc.starts_with(values, '"')).as_py():
        quoted = pc.and_(pc.starts_with(values, '"'), pc.ends_with(values, '"'))
        values = pc.if_else(quoted, pc.utf8_slice_codeunits(values, 1, -1), values)
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, _STR), values)


def _drive(reader: _CsvChunks, convert: Callable[[_RawChunk], tuple[Any, bool]]) -> Iterator[Any]:
    """Convert each chunk; a fast-path chunk with bad rows sends the reader to line mode."""
    for chunk in reader:
        result, had_errors = convert(chunk)
        if had_errors and chunk.raw is None:
            reader.fall_back(chunk.start)
            continue
        yield result


# ----------------------------------------------------------------------------- conversions


class _Errors:
    """The first error of each bad row of a chunk, by position in the chunk."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self.found: dict[int, tuple[str, str]] = {}

    def add(self, mask: pa.Array | np.ndarray, reason: str, detail: Callable[[int], str]) -> None:
        if isinstance(mask, (pa.Array, pa.ChunkedArray)):
            mask = mask.fill_null(False).to_numpy(zero_copy_only=False)
        new = np.asarray(mask, dtype=bool) & ~self.bad
        for pos in np.flatnonzero(new):
            self.found[int(pos)] = (reason, detail(int(pos)))
        self.bad |= new

    def require(self, values: pa.Array, column: str) -> None:
        """Mark rows where ``values`` is null as missing a required ``column``."""
        if values.null_count:
            self.add(values.is_null(), MISSING, lambda pos: f"column '{column}' is empty")


def _cast_masked(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast strings to ``target``; values that do not parse become null."""
    ok = pc.match_substring_regex(values, _PATTERNS[target])
    candidates = pc.if_else(ok, values, pa.scalar(None, values.type))
    try:
        return candidates.cast(target)
    except pa.ArrowInvalid:  # the pattern let through text Arrow rejects: go one by one
        return pa.array([_cast_one(v, target) for v in candidates.to_pylist()], type=target)


def _to_int_or_null(values: pa.Array) -> pa.Array:
    """Integer text as int64, anything else null (no error recorded)."""
    try:
        return values.cast(_I64)
    except pa.ArrowInvalid:
        return _cast_masked(values, _I64)


def _cast_one(value: str | None, target: pa.DataType) -> Any:
    try:
        return None if value is None else pa.scalar(value).cast(target).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _parse(values: pa.Array, target: pa.DataType, column: str, errors: _Errors) -> pa.Array:
    """``values`` as ``target``; unparseable text is null and recorded as malformed."""
    values = _plain(values)
    if values.type == target or target == _STR or values.type != _STR:
        return values.cast(target)  # a typed (Parquet) column of the wrong type raises
    try:
        return values.cast(target)
    except pa.ArrowInvalid:
        parsed = _cast_masked(values, target)
    errors.add(pc.and_(values.is_valid(), parsed.is_null()), MALFORMED, _describe(values, column, target))
    return parsed


def _plain(values: pa.Array) -> pa.Array:
    """Dictionary-encoded columns decoded; large/view strings as plain strings."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_large_string(values.type) or str(values.type) == "string_view":
        values = values.cast(_STR)
    return values


def _describe(values: pa.Array, column: str, target: pa.DataType) -> Callable[[int], str]:
    return lambda pos: f"column '{column}': {values[pos].as_py()!r} {_WHAT[target]}"


def _parse_ts(values: pa.Array, column: str, errors: _Errors) -> pa.Array:
    """An event-time column as int64 ns UTC: int64 ns, a timestamp, or ISO-8601 text with offset.

    Raises:
        TypeError: the column has another type (e.g. float or date).
    """
    values = _plain(values)
    kind = values.type
    if pa.types.is_integer(kind):
        return values.cast(_I64)
    if pa.types.is_timestamp(kind):  # tz-naive timestamps are read as UTC
        return values.cast(pa.timestamp("ns", kind.tz)).cast(_I64)
    if kind != _STR:
        raise TypeError(f"column '{column}' has type {kind}; expected int64 ns, a timestamp or ISO-8601 text")
    utc = pa.timestamp("ns", "UTC")
    for target in (_I64, utc):
        try:
            return values.cast(target).cast(_I64)
        except pa.ArrowInvalid:
            pass
    is_int = pc.match_substring_regex(values, _PATTERNS[_I64])
    ints = _cast_masked(pc.if_else(is_int, values, pa.scalar(None, kind)), _I64)
    isos = _cast_masked(pc.if_else(is_int, pa.scalar(None, kind), values), utc).cast(_I64)
    parsed = pc.coalesce(ints, isos)
    errors.add(pc.and_(values.is_valid(), parsed.is_null()), MALFORMED, _describe(values, column, utc))
    return parsed


def _ticks(n: int, errors: _Errors | None, **columns: Any) -> pa.RecordBatch:
    """A TICK batch of the rows without errors; ``columns`` maps names to arrays, constants or None."""
    columns["origin"] = ORIGIN_REPLAY
    arrays = []
    for field in TICK:
        value = columns.get(field.name)
        if value is None:
            value = pa.nulls(n, field.type)
        elif isinstance(value, str):
            value = pa.repeat(value, n)
        elif isinstance(value, np.ndarray):
            value = pa.array(value, type=field.type)
        arrays.append(value if value.type == field.type else value.cast(field.type))
    batch = pa.RecordBatch.from_arrays(arrays, schema=TICK)
    return batch.filter(pa.array(~errors.bad)) if errors is not None and errors.found else batch


def _quarantine(
    source: str, chunk: _RawChunk, errors: _Errors, symbol: Any = None, ts: Any = None
) -> pa.RecordBatch | None:
    """QUARANTINE rows for the wrong-length rows and the recorded errors of a chunk."""
    known = symbol if isinstance(symbol, str) else None
    records = [
        {"source": source, "row": row, "symbol": known, "reason": MALFORMED, "detail": detail, "raw": line}
        for row, detail, line in chunk.bad
    ]
    for pos, (reason, detail) in errors.found.items():
        if chunk.raw is not None:
            raw = chunk.raw[pos].as_py()
        else:  # Parquet: no line text, so the row's values as JSON
            raw = json.dumps({k: v[pos].as_py() for k, v in chunk.columns.items()}, default=str)
        records.append({
            "source": source, "row": int(chunk.rows[pos]), "reason": reason, "detail": detail, "raw": raw,
            "symbol": known if known or symbol is None else symbol[pos].as_py(),
            "ts": None if ts is None else ts[pos].as_py(),
        })  # fmt: skip
    if not records:
        return None
    return pa.RecordBatch.from_pylist(sorted(records, key=lambda r: r["row"]), schema=QUARANTINE)


# ----------------------------------------------------------------------------- canonical

_CANONICAL_CSV_TYPES = {
    "symbol": _STR, "ts": _STR, "price": _F64, "size": _F64, "side": _STR, "bid": _F64, "ask": _F64,
    "bid_size": _F64, "ask_size": _F64, "provider": _STR, "seq": _I64,
}  # fmt: skip


def read_canonical(path: Path, provider: str | None, block_bytes: int = BLOCK_BYTES) -> Iterator[TickChunk]:
    """Read a canonical tick file: CSV with header, or Parquet, columns named as TICK.

    Args:
        path: ``.parquet``/``.pq`` is Parquet, anything else CSV (``.gz`` etc. decompressed).
        provider: used where the file has no ``provider`` column or the value is empty.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: ``symbol`` and ``ts`` required; ``ts`` int64 ns, a Parquet timestamp, or
        (CSV) ISO-8601 text with offset, all made int64 ns UTC; ``seq`` from the column, else
        the 0-based data row; absent optional columns are null; ``origin`` is "replay".

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

    def convert(chunk: _RawChunk) -> tuple[TickChunk, bool]:
        n, cols = len(chunk.rows), chunk.columns
        errors = _Errors(n)
        symbol = _parse(cols["symbol"], _STR, "symbol", errors)
        errors.require(symbol, "symbol")
        ts = _parse_ts(cols["ts"], "ts", errors)
        errors.require(ts, "ts")
        vendor: Any = provider
        if "provider" in cols:
            vendor = _parse(cols["provider"], _STR, "provider", errors)
            vendor = vendor if provider is None else vendor.fill_null(provider)
            errors.require(vendor, "provider")
        rows = pa.array(chunk.rows)
        seq = pc.coalesce(_parse(cols["seq"], _I64, "seq", errors), rows) if "seq" in cols else rows
        values = {
            name: _parse(cols[name], _STR if name == "side" else _F64, name, errors)
            for name in ("price", "size", "side", "bid", "ask", "bid_size", "ask_size")
            if name in cols
        }
        ticks = _ticks(n, errors, symbol=symbol, ts=ts, provider=vendor, seq=seq, **values)
        bad = _quarantine(source, chunk, errors, symbol, ts)
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
                chunk = _RawChunk(done, np.arange(done, done + n), columns, None, [], n)
                yield convert(chunk)[0]
                done += n
        return
    types = {name: _CANONICAL_CSV_TYPES[name] for name in present}
    yield from _drive(_CsvChunks(path, types, None, block_bytes), convert)


# ----------------------------------------------------------------------------- LOBSTER

_MESSAGE_COLUMNS = ["time", "type", "order_id", "size", "price", "direction"]
_MESSAGE_TYPES = {"time": _SECONDS, "type": _I64, "size": _F64, "price": _F64, "direction": _I64}
_BOOK_COLUMNS = ("ask_price", "ask_size", "bid_price", "bid_size")
_EMPTY_LEVEL = 9_999_999_999  # LOBSTER's dummy price of an unoccupied level
_TRADE_TYPES = pa.array([4, 5])


def read_lobster(
    message_file: Path,
    orderbook_file: Path,
    symbol: str,
    midnight_ns: int,
    provider: str = "lobster",
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[TickChunk]:
    """Read a LOBSTER message file and its orderbook file (any level count) in lockstep.

    Args:
        message_file: no header; time (s after local midnight, 0-9 decimals), type,
            order_id, size (shares), price ($ x 10000), direction (resting order: -1 sell, 1 buy).
        orderbook_file: no header; ask_price_1, ask_size_1, bid_price_1, bid_size_1, ...;
            row i is the book after message i.
        symbol: the instrument, e.g. "AMZN".
        midnight_ns: local midnight of the file's date, int ns UTC (:func:`lobster_midnight_ns`).
        provider: the TICK ``provider`` value.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: one tick per message; types 4/5 are trades (price $, size, aggressor side
        "buy" for direction -1, "sell" for 1), other types quote ticks (price/size null); all
        carry the level-1 book ($, shares), null for an empty level (+-9999999999). ``ts`` =
        midnight_ns + exact decimal time; ``seq`` = 0-based message row. A malformed orderbook
        row is quarantined and its message keeps a null book.

    Raises:
        ValueError: the two files differ in row count, or the orderbook is not 4 x levels wide.
        FileNotFoundError: a file cannot be opened.
    """
    width = len(csv_header(orderbook_file)) or 4  # an empty file has no first line
    if width % 4:
        raise ValueError(f"{orderbook_file}: expected 4 x levels columns, got {width}")
    book_names = [f"{name}_{level}" for level in range(1, width // 4 + 1) for name in _BOOK_COLUMNS]
    book_types = {f"{name}_1": _F64 for name in _BOOK_COLUMNS}
    messages = _drive(
        _CsvChunks(message_file, _MESSAGE_TYPES, _MESSAGE_COLUMNS, block_bytes),
        lambda chunk: _lobster_messages(chunk, str(message_file), symbol, midnight_ns),
    )
    books = _drive(
        _CsvChunks(orderbook_file, book_types, book_names, block_bytes),
        lambda chunk: _lobster_book(chunk, str(orderbook_file)),
    )
    book, end = _BookBuffer(books, message_file, orderbook_file), 0
    for rows, end, cols, bad, rows_read, slow in messages:  # see _lobster_messages
        book_bad, (ask, ask_size, bid, bid_size) = book.take(rows, end)
        is_trade = pc.is_in(cols["type"], _TRADE_TYPES)
        direction = cols["direction"]
        side = pc.if_else(pc.equal(direction, -1), "buy", pc.if_else(pc.equal(direction, 1), "sell", None))
        none = pa.scalar(None, _STR)
        ticks = _ticks(
            len(rows), None, symbol=symbol, ts=cols["ts"], provider=provider, seq=rows,
            price=pc.if_else(is_trade, pc.divide(cols["price"], 10_000.0), None),
            size=pc.if_else(is_trade, cols["size"], None), side=pc.if_else(is_trade, side, none),
            bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size,
        )  # fmt: skip
        found = [b for b in (bad, book_bad) if b is not None]
        quarantine = pa.Table.from_batches(found).combine_chunks().to_batches()[0] if found else None
        yield TickChunk(ticks, quarantine, rows_read, slow)
    book.finish(end)


def _lobster_messages(chunk: _RawChunk, source: str, symbol: str, midnight_ns: int) -> tuple[tuple, bool]:
    """((good rows, end row, {ts, type, size, price, direction}, quarantine, rows read, slow), had errors)."""
    errors = _Errors(len(chunk.rows))
    cols = {name: _parse(chunk.columns[name], kind, name, errors) for name, kind in _MESSAGE_TYPES.items()}
    for name, values in cols.items():
        errors.require(values, name)
    seconds = cols.pop("time")
    start = seconds.offset * 2  # decimal128 little-endian: the low int64 is the unscaled value
    unscaled = np.frombuffer(seconds.buffers()[1], dtype="<i8")[start : start + 2 * len(seconds) : 2]
    cols["ts"] = pa.array(unscaled + midnight_ns, mask=seconds.is_null().to_numpy(zero_copy_only=False))
    bad = _quarantine(source, chunk, errors, symbol, cols["ts"])
    good = pa.array(~errors.bad)
    if errors.found:
        cols = {name: values.filter(good) for name, values in cols.items()}
    end = chunk.start + chunk.rows_read
    result = (chunk.rows[~errors.bad], end, cols, bad, chunk.rows_read, chunk.raw is not None)
    return result, bool(errors.found or chunk.bad)


def _lobster_book(chunk: _RawChunk, source: str) -> tuple[tuple, bool]:
    """((good rows, end row, [ask $, ask size, bid $, bid size], quarantine), had errors)."""
    errors = _Errors(len(chunk.rows))
    cols = [_parse(chunk.columns[f"{name}_1"], _F64, f"{name}_1", errors) for name in _BOOK_COLUMNS]
    for name, values in zip(_BOOK_COLUMNS, cols):
        errors.require(values, f"{name}_1")
    ask, ask_size, bid, bid_size = cols
    no_ask, no_bid = pc.greater_equal(ask, _EMPTY_LEVEL), pc.less_equal(bid, -_EMPTY_LEVEL)
    book = [
        pc.if_else(no_ask, None, pc.divide(ask, 10_000.0)), pc.if_else(no_ask, None, ask_size),
        pc.if_else(no_bid, None, pc.divide(bid, 10_000.0)), pc.if_else(no_bid, None, bid_size),
    ]  # fmt: skip
    bad = _quarantine(source, chunk, errors)
    if errors.found:
        book = [values.filter(pa.array(~errors.bad)) for values in book]
    result = (chunk.rows[~errors.bad], chunk.start + chunk.rows_read, book, bad)
    return result, bool(errors.found or chunk.bad)


class _BookBuffer:
    """Orderbook rows read ahead of the messages, matched to them by data row."""

    def __init__(self, parts: Iterator[tuple], message_file: Path, orderbook_file: Path) -> None:
        self.parts, self.files = parts, (message_file, orderbook_file)
        self.rows = np.zeros(0, dtype=np.int64)
        self.book = [pa.array([], _F64) for _ in range(4)]
        self.end, self.done = 0, False

    def take(self, rows: np.ndarray, end: int) -> tuple[pa.RecordBatch | None, list[pa.Array]]:
        """The book after each message row in ``rows`` (null where the book row was bad)."""
        found = []
        while self.end < end and not self.done:
            part = next(self.parts, None)
            if part is None:
                self.done = True
                break
            part_rows, self.end, book, bad = part
            self.rows = np.concatenate([self.rows, part_rows])
            self.book = [pa.concat_arrays([old, new]) for old, new in zip(self.book, book)]
            found += [bad] if bad is not None else []
        if self.end < end:
            self._mismatch()
        pos = np.minimum(np.searchsorted(self.rows, rows), max(len(self.rows) - 1, 0))
        hit = (self.rows[pos] == rows) if len(self.rows) else np.zeros(len(rows), dtype=bool)
        index = pa.array(pos, mask=~hit)
        taken = [values.take(index) for values in self.book]
        keep = int(np.searchsorted(self.rows, end))
        self.rows, self.book = self.rows[keep:], [values.slice(keep) for values in self.book]
        bad = pa.Table.from_batches(found).combine_chunks().to_batches()[0] if found else None
        return bad, taken

    def finish(self, end: int) -> None:
        """Check that the orderbook has no rows beyond the last message row ``end``."""
        if self.end > end or (not self.done and next(self.parts, None) is not None):
            self._mismatch()

    def _mismatch(self) -> None:
        message_file, orderbook_file = self.files
        raise ValueError(
            f"LOBSTER files differ in row count: message file {message_file} has "
            f"{count_rows(message_file)} rows, orderbook file {orderbook_file} has "
            f"{count_rows(orderbook_file)}; row i of the orderbook must be the book after message i"
        )


# ----------------------------------------------------------------------------- Tardis

TARDIS_TRADE_COLUMNS = {
    "exchange": _STR, "symbol": _STR, "timestamp": _I64, "id": _STR, "side": _STR, "price": _F64, "amount": _F64,
}  # fmt: skip
TARDIS_QUOTE_COLUMNS = {
    "exchange": _STR, "symbol": _STR, "timestamp": _I64,
    "ask_amount": _F64, "ask_price": _F64, "bid_price": _F64, "bid_amount": _F64,
}  # fmt: skip


def _read_tardis(path: Path, types: dict[str, pa.DataType], block_bytes: int, trades: bool) -> Iterator[TickChunk]:
    source = str(path)
    missing = [name for name in types if name not in csv_header(path)]
    if missing:
        kind = "trades" if trades else "quotes"
        raise ValueError(f"{source}: Tardis {kind} file lacks column(s) {', '.join(missing)}")

    def convert(chunk: _RawChunk) -> tuple[TickChunk, bool]:
        n = len(chunk.rows)
        errors = _Errors(n)
        cols = {name: _parse(chunk.columns[name], kind, name, errors) for name, kind in types.items()}
        for name in ("exchange", "symbol", "timestamp", *(("price", "amount") if trades else ())):
            errors.require(cols[name], name)
        ts = pc.multiply(cols["timestamp"], 1_000)  # us -> ns
        rows = pa.array(chunk.rows)
        if trades:  # seq = the integer trade id; the data row where the venue gives none
            seq = pc.coalesce(_to_int_or_null(cols["id"]), rows)
            side = pc.if_else(pc.is_in(cols["side"], pa.array(["buy", "sell"])), cols["side"], None)
            values = {"price": cols["price"], "size": cols["amount"], "side": side}
        else:
            seq = rows
            values = {
                "bid": cols["bid_price"], "ask": cols["ask_price"],
                "bid_size": cols["bid_amount"], "ask_size": cols["ask_amount"],
            }  # fmt: skip
        ticks = _ticks(n, errors, symbol=cols["symbol"], ts=ts, provider=cols["exchange"], seq=seq, **values)
        bad = _quarantine(source, chunk, errors, cols["symbol"], ts)
        return TickChunk(ticks, bad, chunk.rows_read, chunk.raw is not None), bool(errors.found or chunk.bad)

    yield from _drive(_CsvChunks(path, types, None, block_bytes), convert)


def read_tardis_trades(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[TickChunk]:
    """Read a Tardis.dev ``trades`` CSV.

    Args:
        path: header ``exchange, symbol, timestamp, local_timestamp, id, side, price, amount``
            (extra columns ignored); ``.gz`` is decompressed.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: ``provider`` = exchange; ``ts`` = timestamp (us) x 1000, ns UTC; price,
        size = amount (base units); side = taker side ("buy"/"sell", else null); seq = id
        (the 0-based data row where id is empty or not an integer).

    Raises:
        ValueError: a required column is missing from the header.
        FileNotFoundError: the file cannot be opened.
    """
    return _read_tardis(path, TARDIS_TRADE_COLUMNS, block_bytes, trades=True)


def read_tardis_quotes(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[TickChunk]:
    """Read a Tardis.dev ``quotes`` CSV (ask fields first).

    Args:
        path: header ``exchange, symbol, timestamp, local_timestamp, ask_amount, ask_price,
            bid_price, bid_amount`` (extra columns ignored); ``.gz`` is decompressed.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: quote ticks (price/size null); bid, ask, bid_size, ask_size (empty -> null);
        ``provider`` = exchange; ``ts`` = timestamp (us) x 1000, ns UTC; seq = 0-based data row.

    Raises:
        ValueError: a required column is missing from the header.
        FileNotFoundError: the file cannot be opened.
    """
    return _read_tardis(path, TARDIS_QUOTE_COLUMNS, block_bytes, trades=False)


# ----------------------------------------------------------------------------- tick_data table


def read_tick_table(
    url: str,
    *,
    symbols: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    chunk_rows: int = PARQUET_ROWS,
) -> Iterator[TickChunk]:
    """Read the store's ``tick_data`` table (``db/tables.py``) in event-time order, in chunks.

    One query, streamed with a server-side cursor on a private event loop, so memory
    holds one chunk whatever the table size; closing the generator closes the cursor.

    Args:
        url: SQLAlchemy URL of the store (``sqlite:///tickgraph.db``, ``postgresql://...``).
        symbols: only these symbols (SQL ``IN``); None reads every symbol.
        start_ns: only ticks with ``ts >= start_ns`` (int64 ns UTC); None: no lower bound.
        end_ns: only ticks with ``ts < end_ns`` (int64 ns UTC); None: no upper bound.
        chunk_rows: rows per chunk, > 0.

    Yields:
        TickChunk: TICK rows ordered by (ts, provider, symbol, seq); ``origin`` as stored;
        no quarantine (rows were validated when they were written); ``rows_read`` = rows.

    Raises:
        db.engine.StoreError: the database cannot be read (no ``tick_data`` table, bad
            credentials, ...); the message names the masked URL, never the password.
    """
    import asyncio

    import sqlalchemy as sa

    from db.engine import StoreError, create_engine, mask_url
    from db.read import in_range
    from db.tables import tick_data

    table = tick_data
    statement = sa.select(*(table.c[name] for name in TICK.names)).order_by(
        table.c.ts, table.c.provider, table.c.symbol, table.c.seq
    )
    statement = in_range(statement, table, symbols, start_ns, end_ns)
    where = f"tick_data on {mask_url(url)}"

    loop = asyncio.new_event_loop()
    engine = connection = partitions = None
    try:
        try:
            engine = create_engine(url)
            connection = loop.run_until_complete(engine.connect())
            result = loop.run_until_complete(connection.stream(statement))
            partitions = result.partitions(chunk_rows)
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise StoreError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        while True:
            try:
                rows = loop.run_until_complete(anext(partitions, None))  # noqa: F821 (builtin since 3.10)
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                raise StoreError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
            if rows is None:
                return
            columns = list(zip(*rows))
            arrays = [pa.array(values, type=field.type) for field, values in zip(TICK, columns)]
            yield TickChunk(pa.RecordBatch.from_arrays(arrays, schema=TICK), None, len(rows))
    finally:
        if partitions is not None:
            loop.run_until_complete(partitions.aclose())
        if connection is not None:
            loop.run_until_complete(connection.close())
        if engine is not None:
            loop.run_until_complete(engine.dispose())
        loop.close()
