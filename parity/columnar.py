"""Canonical row bytes built column by column: the same bytes as one ``orjson.dumps`` per row, faster.

:func:`parity.canonical.encode_rows` defines a row's canonical bytes as the orjson JSON
array of its canonical field values. Dumping a tuple per row costs a Python tuple, an
orjson call and (worst) the cyclic GC's scans of the millions of objects a burst replay
creates: ~3-6 us a tick. Here each column's values are turned into their JSON text at
once, and the texts are joined row by row in Arrow (``binary_join_element_wise``):

* strings: each distinct value dumped once by orjson (so escaping is orjson's), then taken
  by the column's dictionary indices;
* integers (and timestamps, durations, dates as their int64/int32 values): Arrow's decimal
  cast, which is JSON's integer text;
* booleans: ``true`` / ``false``;
* floats: the whole column's canonical values (``round_significand``) dumped by orjson as
  one list and split at the commas (a float's text has none); non-finite values, which
  orjson writes as ``null``, are given their canonical strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` afterwards;
* nulls: ``null``.

A field of another type (a list, a struct) returns None from :func:`json_texts`, and the
caller uses the row-by-row path. ``tests/unit/test_parity_canonical.py`` checks both paths
give identical bytes on real and adversarial batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["json_texts", "row_texts"]

_NULL = pa.scalar(b"null", pa.binary())
_NON_FINITE = {True: b'"Infinity"', False: b'"-Infinity"'}


def _floats(column: pa.Array, bits: int) -> pa.Array:
    from parity.canonical import round_significand

    values = round_significand(column.cast(pa.float64()).to_numpy(zero_copy_only=False), bits)  # nulls -> NaN
    text = orjson.dumps(values.tolist())  # non-finite -> null
    parts = text[1:-1].split(b",") if len(values) else []
    odd = ~np.isfinite(values)
    if column.null_count:
        odd &= column.is_valid().to_numpy(zero_copy_only=False)  # a null stays null
    for i in np.flatnonzero(odd).tolist():  # NaN and infinities that are values: rare
        value = values[i]
        parts[i] = b'"NaN"' if value != value else _NON_FINITE[bool(value > 0)]
    return pa.array(parts, pa.binary())


def _strings(column: pa.Array) -> pa.Array:
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    texts = pa.array([orjson.dumps(v) for v in encoded.dictionary.to_pylist()], pa.binary())
    return pc.fill_null(texts.take(encoded.indices), _NULL)


def json_texts(column: pa.Array, bits: int) -> pa.Array | None:
    """The canonical JSON text of each value of ``column`` (binary array), or None for a
    type only the row-by-row path handles."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        if pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type):
            return _strings(column)
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_floating(kind):
        return _floats(column, bits)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _strings(column)
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind) or pa.types.is_date64(kind):
        column, kind = pc.cast(column, pa.int64()), pa.int64()
    elif pa.types.is_date32(kind):
        column, kind = pc.cast(column, pa.int32()), pa.int32()
    if pa.types.is_integer(kind):
        return pc.fill_null(pc.cast(column, pa.string()).cast(pa.binary()), _NULL)
    if pa.types.is_boolean(kind):
        return pc.fill_null(pc.if_else(column, pa.scalar(b"true"), pa.scalar(b"false")), _NULL)
    return None


def row_texts(columns: Sequence[pa.Array]) -> list[bytes]:
    """``[t1,t2,...]`` per row from the columns' texts (:func:`json_texts`), as Python bytes."""
    inner = pc.binary_join_element_wise(*columns, pa.scalar(b","))
    return pc.binary_join_element_wise(pa.scalar(b"["), inner, pa.scalar(b"]"), pa.scalar(b"")).to_pylist()
