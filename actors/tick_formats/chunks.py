"""What every tick file reader yields (:class:`TickChunk`), how it opens files, its reason codes.

A reader is a generator of :class:`TickChunk`: a TICK batch in file row order, the
QUARANTINE rows found in the same stretch of the file, and how many data rows it read.
Readers only parse: they never sort, de-duplicate or judge values (a NaN price stays
NaN; the normalizer judges it). Memory is bounded by one chunk per open file.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

__all__ = [
    "BLOCK_BYTES",
    "PARQUET_ROWS",
    "MALFORMED",
    "MISSING",
    "BAD_TIMESTAMP",
    "TickChunk",
    "open_input",
]

BLOCK_BYTES = 4 << 20  # CSV bytes read per step (about 100k LOBSTER rows)
PARQUET_ROWS = 131_072  # Parquet rows read per step
#: A row that does not parse: wrong field count, text where a number belongs, not UTF-8.
MALFORMED = "malformed_row"
#: A row that lacks a required value (an empty field).
MISSING = "missing_value"
#: A timestamp that cannot be represented as int64 ns (a unit conversion overflows).
BAD_TIMESTAMP = "bad_timestamp"


@dataclass(frozen=True)
class TickChunk:
    """One step of a reader.

    Attributes:
        ticks: TICK schema, the good rows of this stretch of the file, in file order.
        quarantine: QUARANTINE schema, the rejected rows of the stretch, or None.
        rows_read: data rows consumed (good + rejected).
        slow_path: True if the stretch was read on the CSV line-by-line path.
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
