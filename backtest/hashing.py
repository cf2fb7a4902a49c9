"""Canonical JSON and the run hash.

Canonical JSON: keys sorted at every level, no whitespace (``","`` and ``":"``),
UTF-8, no NaN or infinity, floats in Python's shortest round-trip form (``repr``:
the fewest digits that read back to the same float, so one value always has one
spelling; integral floats keep ``.0``: ``100000.0``), a trailing newline.

Run hash = SHA-256 (hex) of ``canonical config JSON`` + ``"\\n"`` + the input data's
content hash + ``"\\n"`` + ``tickgraph <version>``: the same config on the same data
with the same release is the same run, whatever the file order or spelling of the
config was; changed data or a new release is a new run.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["canonical_json", "sha256_hex", "file_sha256", "table_sha256", "tickgraph_version", "run_hash"]


def canonical_json(value: Any) -> str:
    """``value`` (JSON-compatible) as canonical JSON text (see the module docstring).

    Raises:
        ValueError: NaN or infinity in ``value``.
        TypeError: a value JSON cannot represent.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


def sha256_hex(data: bytes | str) -> str:
    """SHA-256 of ``data`` (str as UTF-8), lowercase hex."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_sha256(table: pa.Table) -> str:
    """A content hash of an Arrow table that does not depend on its chunking or pyarrow's version.

    Per column, in schema order: the name, then the values: int64 and float64 as
    little-endian bytes (NaN/null as NaN), strings as UTF-8 joined by ``\\x1f``.
    """
    digest = hashlib.sha256()
    for name in table.schema.names:
        column = table.column(name).combine_chunks() if table.num_rows else table.column(name)
        digest.update(f"\x1e{name}\x1d".encode())
        kind = table.schema.field(name).type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            digest.update("\x1f".join("" if v is None else v for v in column.to_pylist()).encode("utf-8"))
        elif pa.types.is_integer(kind):
            digest.update(np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype="<i8").tobytes())
        else:
            values = column.to_numpy(zero_copy_only=False).astype("<f8")
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def tickgraph_version() -> str:
    """The installed tickgraph version (``0.1.0``); ``unknown`` when not installed."""
    try:
        return metadata.version("tickgraph")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_hash(config_json: str, data_hash: str, version: str | None = None) -> str:
    """The run hash of a canonical config and its input's content hash (see the module docstring)."""
    return sha256_hex(f"{config_json}\n{data_hash}\ntickgraph {version or tickgraph_version()}")
