"""Canonical encoding of stream rows and the SHA-256 hash chain over them.

A *message* is one row of a stream (a tick, a bar, a signal), never a batch, so the way
rows are cut into micro-batches can never change a hash. A row is encoded as the orjson
JSON array of its canonical field values:

* **field order** is fixed per schema: the declared order of the stream's schema in
  ``graph/schemas.py`` (BAR, TICK, SIGNAL, QUARANTINE, recognised by their columns),
  minus the provenance fields :data:`PROVENANCE_FIELDS`, which say how a row arrived
  rather than what it is: a tick's ``origin`` (live or replay) and ``advances_watermark``
  (a live feed's receive-time quote), and a bar's ``status`` (``confirmed``, ``corrected``
  or ``partial`` depends on when the watermark passed, i.e. on batching and on where a
  session started; the bar's values do not). A batch's column order and extra columns never matter. A stream of an
  unknown schema uses its column names in sorted order.
* **floats** are hashed at full precision by default (``float_bits`` 53: every bit of
  the IEEE-754 double), written by orjson as the shortest repr that reads back to the
  same double. The bar engine's volume and notional sums are exact fixed-point sums
  (``actors/bar_kernels.py``), so a bar is bit-identical for every batching, sharding and
  speed, and two bars that differ by one lot never hash equal. ``float_bits`` < 53
  rounds the significand to that many bits (to nearest, ties away from zero, with
  integer operations on the raw bits: the same on every platform), for comparing
  streams that only agree to a tolerance (another system's bars). ``-0.0`` becomes
  ``0.0``; NaN and infinities become the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` (orjson would write ``null``, which is a missing value).
* **timestamps** are int64 ns; **strings**, ints and booleans as JSON; null as ``null``.

The chain (as in a hash-linked log, e.g. Certificate Transparency's, RFC 6962)::

    h_0 = SHA-256("tickgraph-parity/2\\n" + stream + "\\n" + orjson(fields) + "\\n" + float_bits)
    h_i = SHA-256(h_{i-1} || encode(row_i))          # h_{i-1}: 32 raw bytes

``h_n`` is the stream hash after ``n`` messages. Every ``checkpoint_every`` messages
``(i, h_i)`` is recorded, so two runs can be compared checkpoint by checkpoint down to
the first divergence, and a segment can be re-verified from the checkpoint before it.
SHA-256 is FIPS 180-4.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from graph.schemas import BAR, QUARANTINE, SIGNAL, TICK

__all__ = [
    "CANONICAL_VERSION",
    "DEFAULT_FLOAT_BITS",
    "round_significand",
    "PROVENANCE_FIELDS",
    "schema_kind",
    "canonical_fields",
    "canonical_float",
    "canonical_columns",
    "encode_rows",
    "genesis",
    "chain",
    "StreamHasher",
]

#: Version tag of the canonical form; part of every chain's genesis and of every proof.
CANONICAL_VERSION = "tickgraph-parity/2"
#: Significant bits kept of every float's significand (53 = exact, the default).
DEFAULT_FLOAT_BITS = 53
#: Fields that say where a row came from rather than what it is; never hashed.
PROVENANCE_FIELDS = frozenset({"origin", "replay_run_id", "advances_watermark", "status"})

#: Known stream schemas, most specific first (a BAR batch is recognised before a TICK one).
_KNOWN_SCHEMAS: tuple[tuple[str, pa.Schema], ...] = (
    ("bar", BAR),
    ("tick", TICK),
    ("signal", SIGNAL),
    ("quarantine", QUARANTINE),
)


def schema_kind(names: Iterable[str]) -> str | None:
    """Which known schema a set of column names carries.

    Args:
        names: column names of a batch.

    Returns:
        ``"bar"``, ``"tick"``, ``"signal"`` or ``"quarantine"`` when every column of
        that schema except provenance fields is present (extra columns allowed), else None.
    """
    present = set(names)
    for kind, schema in _KNOWN_SCHEMAS:
        if set(schema.names) - PROVENANCE_FIELDS <= present:
            return kind
    return None


def canonical_fields(schema: pa.Schema) -> tuple[str, ...]:
    """The hashed fields of a stream whose batches have ``schema``, in canonical order.

    Args:
        schema: the schema of the stream's first batch.

    Returns:
        The declared field order of the recognised schema (see :func:`schema_kind`),
        else the sorted column names; :data:`PROVENANCE_FIELDS` removed.
    """
    kind = schema_kind(schema.names)
    if kind is not None:
        declared = dict(_KNOWN_SCHEMAS)[kind].names
        return tuple(name for name in declared if name not in PROVENANCE_FIELDS)
    return tuple(sorted(name for name in schema.names if name not in PROVENANCE_FIELDS))


def round_significand(values: np.ndarray, bits: int = DEFAULT_FLOAT_BITS) -> np.ndarray:
    """Round float64 values to ``bits`` significant bits (round half away from zero).

    Adds half of the dropped unit to the raw IEEE-754 bits and clears the dropped
    bits; a carry out of the significand correctly bumps the exponent. NaN stays NaN,
    infinities stay infinite, ``-0.0`` becomes ``0.0``; a finite value that would round
    past the largest double is kept as is.

    Args:
        values: float64 array, any shape.
        bits: significant bits kept, 1..53 (53 returns the values unchanged).

    Returns:
        A new float64 array of the same shape.

    Raises:
        ValueError: ``bits`` outside 1..53.
    """
    if not 1 <= bits <= 53:
        raise ValueError(f"float_bits must be within 1..53, was {bits}")
    values = np.asarray(values, dtype=np.float64)
    drop = 53 - bits
    if drop == 0:
        out = values.copy()
    else:
        raw = values.view(np.uint64)
        keep_mask = np.uint64((~((1 << drop) - 1)) & 0xFFFF_FFFF_FFFF_FFFF)
        out = ((raw + np.uint64(1 << (drop - 1))) & keep_mask).view(np.float64)
        out = np.where(np.isfinite(values) & ~np.isfinite(out), values, out)
        out = np.where(np.isnan(values), values, out)
    out[out == 0.0] = 0.0  # -0.0 -> 0.0
    return out


def canonical_float(value: float, bits: int = DEFAULT_FLOAT_BITS) -> float | str:
    """One float in canonical form (:func:`round_significand`, non-finite as strings).

    Args:
        value: any float.
        bits: significant bits kept (1..53).

    Returns:
        The rounded float, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
    """
    return _json_floats(round_significand(np.array([value]), bits))[0]


def _json_floats(rounded: np.ndarray) -> list[Any]:
    """Rounded floats as Python values for orjson; non-finite ones as strings."""
    out = rounded.tolist()
    if not np.isfinite(rounded).all():
        for i in np.flatnonzero(~np.isfinite(rounded)).tolist():
            v = out[i]
            out[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return out


def _float_column(column: pa.Array, bits: int) -> list[Any]:
    """Canonical floats of one column (nulls as None), vectorised."""
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    out = _json_floats(round_significand(values, bits))
    if column.null_count:
        for position in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
            out[position] = None
    return out


def _plain_column(column: pa.Array) -> list[Any]:
    """Non-float values as JSON-ready Python values (timestamps as int64 ns)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind) or pa.types.is_date64(kind):
        column = pc.cast(column, pa.int64())
    elif pa.types.is_date32(kind):
        column = pc.cast(column, pa.int32())
    return column.to_pylist()


def canonical_columns(batch: pa.RecordBatch, fields: Sequence[str], bits: int = DEFAULT_FLOAT_BITS) -> list[list[Any]]:
    """The canonical values of ``fields``, column by column.

    Args:
        batch: any Arrow batch holding ``fields``.
        fields: hashed field names, in canonical order.
        bits: significant bits kept of floats' significands.

    Returns:
        One Python list per field, each of ``batch.num_rows`` values.

    Raises:
        KeyError: a field is not a column of ``batch``; the message lists its columns.
    """
    names = batch.schema.names
    columns = []
    for name in fields:
        if name not in names:
            raise KeyError(f"column {name!r} is missing from the batch (columns: {', '.join(names)})")
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_floating(column.type):
            columns.append(_float_column(column, bits))
        else:
            columns.append(_plain_column(column))
    return columns


def encode_rows(batch: pa.RecordBatch, fields: Sequence[str], bits: int = DEFAULT_FLOAT_BITS) -> list[bytes]:
    """Each row of ``batch`` as canonical bytes: the orjson array of its field values.

    Args:
        batch: any Arrow batch holding ``fields``.
        fields: hashed field names, in canonical order (:func:`canonical_fields`).
        bits: significant bits kept of floats' significands.

    Returns:
        ``batch.num_rows`` byte strings, e.g. ``b'["AMZN","1m",1340285400000000000,...]'``.

    Raises:
        KeyError: a field is not a column of ``batch``.
    """
    dumps = orjson.dumps
    return [dumps(row) for row in zip(*canonical_columns(batch, fields, bits))]


def genesis(stream: str, fields: Sequence[str], bits: int = DEFAULT_FLOAT_BITS) -> bytes:
    """``h_0`` of a stream's chain: binds the version, stream name, fields and float bits.

    Returns:
        32 bytes.
    """
    text = f"{CANONICAL_VERSION}\n{stream}\n".encode() + orjson.dumps(list(fields)) + f"\n{bits}".encode()
    return hashlib.sha256(text).digest()


def chain(previous: bytes, encoded_rows: Iterable[bytes]) -> bytes:
    """Extend a chain: ``h_i = SHA-256(h_{i-1} || row_i)`` for each row in order.

    Args:
        previous: the 32-byte hash before the first row.
        encoded_rows: canonical rows (:func:`encode_rows`).

    Returns:
        The 32-byte hash after the last row.
    """
    sha256 = hashlib.sha256
    current = previous
    for row in encoded_rows:
        current = sha256(current + row).digest()
    return current


class StreamHasher:
    """The running hash chain of one stream, with a checkpoint every N messages.

    Args:
        stream: the stream name (part of the genesis).
        fields: hashed field names in canonical order.
        float_bits: significant bits kept of floats' significands.
        checkpoint_every: record ``(messages, hash)`` each time the message count is a
            multiple of this (>= 1).

    Raises:
        ValueError: ``checkpoint_every`` < 1.
    """

    def __init__(self, stream: str, fields: Sequence[str], float_bits: int = DEFAULT_FLOAT_BITS,
                 checkpoint_every: int = 10_000) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, was {checkpoint_every}")
        self.stream = stream
        self.fields = tuple(fields)
        self.float_bits = float_bits
        self.checkpoint_every = checkpoint_every
        self.messages = 0
        self._hash = genesis(stream, self.fields, float_bits)
        self.checkpoints: list[tuple[int, str]] = []

    @property
    def hexdigest(self) -> str:
        """The current chain hash ``h_messages``, 64 lowercase hex digits."""
        return self._hash.hex()

    def update(self, encoded_rows: Sequence[bytes]) -> None:
        """Hash canonical rows in order, recording checkpoints as the count passes multiples."""
        every = self.checkpoint_every
        start = 0
        while start < len(encoded_rows):
            room = every - self.messages % every  # rows until the next checkpoint
            part = encoded_rows[start:start + room]
            self._hash = chain(self._hash, part)
            self.messages += len(part)
            start += len(part)
            if self.messages % every == 0:
                self.checkpoints.append((self.messages, self._hash.hex()))

    def to_dict(self) -> dict[str, Any]:
        """``{"fields", "messages", "hash", "checkpoints": [{"messages", "hash"}, ...]}``."""
        return {
            "fields": list(self.fields),
            "messages": self.messages,
            "hash": self.hexdigest,
            "checkpoints": [{"messages": n, "hash": h} for n, h in self.checkpoints],
        }
