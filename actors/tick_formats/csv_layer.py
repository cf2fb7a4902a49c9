"""The CSV layer under every text tick format: a fast typed path and an exact line-by-line path.

None of the tick formats quotes its fields (Tardis, LOBSTER; a canonical CSV written by
pyarrow quotes whole string values, which :class:`CsvChunks` strips with ``unquote``), so
quotes are never special: a stray ``"`` in a field is just a character, and a row with one
is judged alone. (Reading with quote handling, a ``"buy`` on row 100 and a ``sell"`` on
row 150 made one field of rows 100-150: 50 trades gone, one chimera row kept.)

Two paths, one verdict per row:

* fast: a typed ``pyarrow.csv.open_csv`` stream (no quote handling), no Python per row;
* lines: from the first block that fails to parse, convert or decode, or whose rows a
  converter rejects, the rest of the file is read as raw bytes, split into lines at
  ``\\n``, ``\\r\\n`` and ``\\r`` (pyarrow's terminators), each line split at ``,`` and its
  fields decoded column by column, so every bad row is quarantined alone with its exact
  row number and every good row is kept.

Both paths skip empty lines and read only the needed columns; a field that is not UTF-8
in a needed column makes its row malformed on both (an unused column is not read on
either). A "data row" is a non-empty line after the header (if any), counted from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from actors.tick_formats.chunks import BLOCK_BYTES, open_input
from graph.text import first_invalid_utf8, printable_bytes

__all__ = ["RawChunk", "CsvChunks", "csv_header", "count_rows", "drive", "line_blocks", "unquote"]

_STR = pa.string()


@dataclass
class RawChunk:
    """One stretch of a CSV file, parsed but not yet converted.

    Attributes:
        start: data row of the first row of the stretch.
        rows: int64 data row of each parsed row, shape (n,).
        columns: column name -> array, typed (fast path, Parquet) or string (line path).
        raw: line bytes of each parsed row (line path only), for quarantine text.
        bad: ``(row, detail, printable line)`` of rows rejected while parsing (wrong field
            count, a needed field that is not UTF-8).
        rows_read: data rows consumed (parsed + bad).
    """

    start: int
    rows: np.ndarray
    columns: dict[str, pa.Array]
    raw: pa.Array | None = None
    bad: list[tuple[int, str, str]] = field(default_factory=list)
    rows_read: int = 0

    def raw_text(self, pos: int) -> str | None:
        """The printable line text of parsed row ``pos`` (line path), else None."""
        return None if self.raw is None else printable_bytes(self.raw[pos].as_py())


def line_blocks(path: str | Path, block_bytes: int = BLOCK_BYTES) -> Iterator[list[bytes]]:
    """The non-empty lines of a file, line terminators removed, about ``block_bytes`` at a time.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; bytes are never decoded here.

    Raises:
        FileNotFoundError: the file cannot be opened.
    """
    with open_input(path) as stream:
        carry = b""
        while True:
            data = stream.read(block_bytes)
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n")
            if cut < 0:
                cut = data.rfind(b"\r", 0, len(data) - 1)  # a final \r may be half of \r\n
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            yield [line for line in data[: cut + 1].splitlines() if line]
        if carry:
            yield [line for line in carry.splitlines() if line]


def csv_header(path: str | Path) -> list[str]:
    """The fields of the first line of a CSV file (its header, or its first data row).

    A UTF-8 byte-order mark is dropped and a field wrapped in double quotes is unwrapped;
    bytes that are not UTF-8 are shown escaped.
    """
    with open_input(path) as stream:
        head = stream.read(1 << 16)
    first = head.splitlines()[0] if head.strip() else b""
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    if not first:
        return []
    names = printable_bytes(first).split(",")
    return [name[1:-1] if len(name) >= 2 and name[0] == name[-1] == '"' else name for name in names]


def count_rows(path: str | Path) -> int:
    """Number of non-empty lines of a text file (the data rows of a header-less CSV).

    Raises:
        FileNotFoundError: the file cannot be opened.
    """
    return sum(len(lines) for lines in line_blocks(path))


def unquote(values: pa.Array) -> pa.Array:
    """String values with one surrounding pair of double quotes removed (``"AMZN"`` -> ``AMZN``).

    A lone quote (``"buy``) is kept, so the value stays invalid and its row is rejected.
    """
    if not len(values) or not pc.any(pc.starts_with(values, '"')).as_py():
        return values
    quoted = pc.and_(pc.and_(pc.starts_with(values, '"'), pc.ends_with(values, '"')),
                     pc.greater_equal(pc.utf8_length(values), 2))  # fmt: skip
    return pc.if_else(quoted, pc.utf8_slice_codeunits(values, 1, -1), values)


class CsvChunks:
    """Iterate a CSV file as :class:`RawChunk`; :meth:`fall_back` switches to the line path.

    Args:
        path: the file.
        types: needed column -> Arrow type on the fast path (the line path reads strings).
        names: every column name of a header-less file, in order; None: the first line
            is the header.
        block_bytes: bytes read per step.
        unquote_strings: strip a surrounding pair of double quotes from every needed field
            (canonical files written by pyarrow quote their string values).
    """

    def __init__(
        self,
        path: Path,
        types: dict[str, pa.DataType],
        names: list[str] | None,
        block_bytes: int = BLOCK_BYTES,
        unquote_strings: bool = False,
    ) -> None:
        self.path, self.types, self.header, self.block_bytes = path, types, names is None, block_bytes
        self.unquote_strings = unquote_strings
        first_line = csv_header(path)
        self.names, self.empty = first_line if names is None else names, not first_line
        self.slow, self.restart = False, 0

    def fall_back(self, row: int) -> None:
        """Read the rest of the file from data row ``row`` on the line path."""
        self.slow, self.restart = True, row

    def __iter__(self) -> Iterator[RawChunk]:
        if self.empty:
            return
        done = 0
        stream = open_input(self.path)
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    block_size=self.block_bytes, column_names=self.names, skip_rows=int(self.header)
                ),
                parse_options=pacsv.ParseOptions(quote_char=False),
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
                if self.unquote_strings:
                    columns = {k: unquote(v) if v.type == _STR else v for k, v in columns.items()}
                yield RawChunk(done, np.arange(done, done + n), columns, rows_read=n)
                if self.slow:
                    break
                done += n
        except pa.ArrowInvalid:  # parse, conversion or UTF-8 error somewhere in this block
            self.fall_back(done)
        finally:
            stream.close()
        if self.slow:
            yield from self._lines(self.restart)

    def _lines(self, start: int) -> Iterator[RawChunk]:
        positions = [self.names.index(name) for name in self.types]
        expected, row, header = len(self.names), 0, self.header
        for lines in line_blocks(self.path, self.block_bytes):
            if header:
                lines, header = lines[1:], False
            first, row = row, row + len(lines)
            if row <= start:
                continue
            skip = max(start - first, 0)
            raw = pa.array(lines[skip:], pa.binary())
            rows = np.arange(first + skip, row)
            parts = pc.split_pattern(raw, b",")
            counts = pc.list_value_length(parts).to_numpy()
            ok = counts == expected
            bad = [
                (int(r), f"expected {expected} fields, got {c}", printable_bytes(text))
                for r, c, text in zip(rows[~ok], counts[~ok], raw.filter(pa.array(~ok)).to_pylist())
            ]
            if not ok.all():
                keep = pa.array(ok)
                parts, raw, rows = parts.filter(keep), raw.filter(keep), rows[ok]
            fields = {name: pc.list_element(parts, p) for name, p in zip(self.types, positions)}
            undecodable = _undecodable(fields)
            if undecodable:
                bad += [(int(rows[pos]), detail, printable_bytes(raw[pos].as_py())) for pos, detail in undecodable.items()]
                keep = np.ones(len(rows), dtype=bool)
                keep[list(undecodable)] = False
                mask = pa.array(keep)
                fields = {name: values.filter(mask) for name, values in fields.items()}
                raw, rows = raw.filter(mask), rows[keep]
            columns = {name: _field(values, self.unquote_strings) for name, values in fields.items()}
            yield RawChunk(first + skip, rows, columns, raw, sorted(bad), len(ok))


def drive(reader: CsvChunks, convert: Callable[[RawChunk], tuple[Any, bool]]) -> Iterator[Any]:
    """Convert each chunk of ``reader``; a fast-path chunk with a bad row sends the reader to
    the line path from that chunk's first row (so the bad rows are found exactly) instead
    of being yielded. ``convert`` returns (result, had errors)."""
    for chunk in reader:
        result, had_errors = convert(chunk)
        if had_errors and chunk.raw is None:
            reader.fall_back(chunk.start)
            continue
        yield result


def _undecodable(fields: dict[str, pa.Array]) -> dict[int, str]:
    """Row position -> detail, for rows with a needed field that is not UTF-8 (first column wins)."""
    found: dict[int, str] = {}
    for name, values in fields.items():
        try:
            values.cast(_STR)
            continue
        except pa.ArrowInvalid:
            pass
        for pos, value in enumerate(values.to_pylist()):
            where = None if value is None or pos in found else first_invalid_utf8(value)
            if where is not None:
                offset, byte = where
                found[pos] = f"column '{name}' is not UTF-8 text (byte 0x{byte:02x} at offset {offset})"
    return found


def _field(values: pa.Array, unquote_strings: bool) -> pa.Array:
    """A split field as text (already checked to be UTF-8): unquoted if asked, empty text as null."""
    values = values.cast(_STR)
    if unquote_strings:
        values = unquote(values)
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, _STR), values)
