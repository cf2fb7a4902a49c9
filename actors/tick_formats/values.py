"""Column conversions shared by the tick formats: text to numbers and timestamps, errors per row.

A converter turns one :class:`~actors.tick_formats.csv_layer.RawChunk` into TICK rows. It
parses each needed column with :func:`parse` / :func:`parse_ts` / :func:`checked_scale`,
which never raise on bad values: a value that does not parse becomes null and its row is
recorded in an :class:`Errors` (first error of a row wins, with a reason code and a
sentence naming the column and the value). :func:`ticks_batch` builds the TICK batch of
the rows without errors and :func:`rejections` the QUARANTINE rows of the others.

Unit conversions are checked: a microsecond timestamp whose nanosecond value does not fit
in int64 is a ``bad_timestamp`` row naming the likely unit mistake, never a wrapped
number (``x 1000`` on int64 wraps silently: ns read as us gave ticks dated 1840).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors.tick_formats.chunks import BAD_TIMESTAMP, MALFORMED, MISSING
from actors.tick_formats.csv_layer import RawChunk
from graph.schemas import ORIGIN_REPLAY, QUARANTINE_ROW, TICK
from graph.text import shorten
from graph.times import DEFAULT_EARLIEST_NS, DEFAULT_LATEST_NS, unit_mistake

__all__ = [
    "F64",
    "I64",
    "STR",
    "BOOL",
    "SECONDS",
    "Errors",
    "parse",
    "parse_ts",
    "parse_choice",
    "checked_scale",
    "int_or_null",
    "ticks_batch",
    "rejections",
]

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
SECONDS = pa.decimal128(18, 9)  # LOBSTER time: exact seconds, up to 9 decimals
_UTC_NS = pa.timestamp("ns", "UTC")
_INT64_MAX = (1 << 63) - 1
_PATTERNS = {
    F64: r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf|infinity))$",
    I64: r"^-?\d{1,19}$",
    SECONDS: r"^[+-]?(?:\d+\.?\d{0,9}|\.\d{1,9})$",
    BOOL: r"^(?i:true|false|1|0)$",
    _UTC_NS: r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d:?\d\d)$",
}
_WHAT = {
    F64: "is not a number",
    I64: "is not an integer",
    SECONDS: "is not a decimal number of seconds with at most 9 decimals",
    BOOL: "is not true or false",
    _UTC_NS: "is neither int64 ns nor ISO-8601 text with a UTC offset",
}


class Errors:
    """The first error of each bad row of a chunk, by position in the chunk.

    Attributes:
        bad: bool per row, shape (n,): the row has an error.
        found: position -> (reason code, detail sentence).
    """

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self.found: dict[int, tuple[str, str]] = {}

    def add(self, mask: pa.Array | np.ndarray, reason: str, detail: Callable[[int], str]) -> None:
        """Record ``reason`` for the rows of ``mask`` that have no error yet."""
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


def _cast_one(value: str | None, target: pa.DataType) -> Any:
    try:
        return None if value is None else pa.scalar(value).cast(target).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def int_or_null(values: pa.Array) -> pa.Array:
    """Integer text as int64, anything else null (no error recorded)."""
    try:
        return values.cast(I64)
    except pa.ArrowInvalid:
        return _cast_masked(values, I64)


def _plain(values: pa.Array) -> pa.Array:
    """Dictionary-encoded columns decoded; large/view strings as plain strings."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_large_string(values.type) or str(values.type) == "string_view":
        values = values.cast(STR)
    return values


def _describe(values: pa.Array, column: str, what: str) -> Callable[[int], str]:
    return lambda pos: f"column '{column}': {shorten(repr(values[pos].as_py()))} {what}"


def parse(values: pa.Array, target: pa.DataType, column: str, errors: Errors) -> pa.Array:
    """``values`` as ``target``; unparseable text is null and recorded as malformed."""
    values = _plain(values)
    if values.type == target or target == STR or values.type != STR:
        return values.cast(target)  # a typed (Parquet) column of the wrong type raises
    try:
        return values.cast(target)
    except pa.ArrowInvalid:
        parsed = _cast_masked(values, target)
    errors.add(pc.and_(values.is_valid(), parsed.is_null()), MALFORMED, _describe(values, column, _WHAT[target]))
    return parsed


def parse_choice(values: pa.Array, choices: dict[str, str | None], column: str, errors: Errors) -> pa.Array:
    """Text that must be one of ``choices`` (value -> what it becomes; None: null).

    Anything else (e.g. ``"buy`` with a stray quote) is malformed; empty fields are null.
    """
    values = _plain(values).cast(STR)
    allowed = pa.array(list(choices), STR)
    unknown = pc.and_(values.is_valid(), pc.invert(pc.is_in(values, value_set=allowed)))
    if pc.any(unknown).as_py():
        listed = ", ".join(repr(c) for c in choices)
        errors.add(unknown, MALFORMED, _describe(values, column, f"is not one of {listed}"))
    mapped = {key: value for key, value in choices.items() if key != value}
    for key, value in mapped.items():
        values = pc.if_else(pc.equal(values, key), pa.scalar(value, STR), values)
    return values


def checked_scale(values: pa.Array, factor: int, unit: str, column: str, errors: Errors) -> pa.Array:
    """int64 ``values`` x ``factor`` (a unit conversion, e.g. us -> ns x 1000), overflow-checked.

    A value whose product leaves int64 becomes null and its row ``bad_timestamp``, with
    a detail naming the likely unit mistake (:func:`graph.times.unit_mistake`).
    """
    raw = values.to_numpy(zero_copy_only=False) if values.null_count == 0 else values.fill_null(0).to_numpy()
    limit = _INT64_MAX // factor
    overflow = (raw > limit) | (raw < -limit)
    if overflow.any():
        def detail(pos: int) -> str:
            value = int(raw[pos])
            return (
                f"column '{column}': {value} {unit} overflows int64 nanoseconds; "
                f"{unit_mistake(value, unit, DEFAULT_EARLIEST_NS, DEFAULT_LATEST_NS)}"
            )

        errors.add(overflow, BAD_TIMESTAMP, detail)
        values = pc.if_else(pa.array(overflow), pa.scalar(None, I64), values)
        raw = np.where(overflow, 0, raw)
    return pa.array(raw * factor, type=I64, mask=values.is_null().to_numpy(zero_copy_only=False))


def parse_ts(values: pa.Array, column: str, errors: Errors) -> pa.Array:
    """An event-time column as int64 ns UTC: int64 ns, a timestamp, or ISO-8601 text with offset.

    Timestamps in s/ms/us are scaled with :func:`checked_scale` (no silent wrap).

    Raises:
        TypeError: the column has another type (e.g. float or date).
    """
    values = _plain(values)
    kind = values.type
    if pa.types.is_integer(kind):
        return values.cast(I64)
    if pa.types.is_timestamp(kind):  # tz-naive timestamps are read as UTC
        factor = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[kind.unit]
        as_int = values.cast(pa.timestamp(kind.unit)).cast(I64)
        return as_int if factor == 1 else checked_scale(as_int, factor, kind.unit, column, errors)
    if kind != STR:
        raise TypeError(f"column '{column}' has type {kind}; expected int64 ns, a timestamp or ISO-8601 text")
    for target in (I64, _UTC_NS):
        try:
            return values.cast(target).cast(I64)
        except pa.ArrowInvalid:
            pass
    is_int = pc.match_substring_regex(values, _PATTERNS[I64])
    ints = _cast_masked(pc.if_else(is_int, values, pa.scalar(None, kind)), I64)
    isos = _cast_masked(pc.if_else(is_int, pa.scalar(None, kind), values), _UTC_NS).cast(I64)
    parsed = pc.coalesce(ints, isos)
    errors.add(pc.and_(values.is_valid(), parsed.is_null()), MALFORMED, _describe(values, column, _WHAT[_UTC_NS]))
    return parsed


def ticks_batch(n: int, errors: Errors | None, **columns: Any) -> pa.RecordBatch:
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


def rejections(
    source: str, chunk: RawChunk, errors: Errors, symbol: Any = None, ts: Any = None
) -> pa.RecordBatch | None:
    """QUARANTINE_ROW rows for a chunk's unparsed rows and recorded errors, in row order.

    ``raw`` is the row's line (line path, escaped where not printable) or, for Parquet,
    its values as JSON. None when the chunk has no bad row.
    """
    known = symbol if isinstance(symbol, str) else None
    records = [
        {"source": source, "row": row, "symbol": known, "reason": MALFORMED, "detail": detail, "raw": line}
        for row, detail, line in chunk.bad
    ]
    for pos, (reason, detail) in errors.found.items():
        raw = chunk.raw_text(pos)
        if raw is None:  # Parquet: no line text, so the row's values as JSON
            raw = json.dumps({k: v[pos].as_py() for k, v in chunk.columns.items()}, default=str)
        records.append({
            "source": source, "row": int(chunk.rows[pos]), "reason": reason, "detail": detail, "raw": raw,
            "symbol": known if known or symbol is None else symbol[pos].as_py(),
            "ts": None if ts is None else ts[pos].as_py(),
        })  # fmt: skip
    if not records:
        return None
    return pa.RecordBatch.from_pylist(sorted(records, key=lambda r: r["row"]), schema=QUARANTINE_ROW)
