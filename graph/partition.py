"""Keyed partitioning: which shard of a node gets which rows (a stable hash of the key).

A keyed node (bar engines, signals, strategies) runs ``parallelism: N`` shards; a symbol
always reaches the same shard, in every process and every run: ``crc32(utf-8 symbol) % N``
(never Python's salted ``hash``). A :class:`Route` is one downstream node's subscription:
which of the sender's streams it takes and how rows split across its shards.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Route", "shard_of", "partition_batch"]

_SHARD_CACHE: dict[tuple[str, int], int] = {}


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard of ``key``: ``crc32(utf-8 key) % num_shards`` (same in every process/run)."""
    cached = _SHARD_CACHE.get((key, num_shards))
    if cached is None:
        cached = zlib.crc32(key.encode("utf-8")) % num_shards
        _SHARD_CACHE[(key, num_shards)] = cached
    return cached


def partition_batch(batch: pa.RecordBatch, key: str, num_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """Split ``batch`` by the stable hash of string column ``key``.

    Row order within each part is the batch's order. Cost: one dictionary encoding
    of the key column, one stable argsort and one ``take``; the parts are slices.

    Returns:
        ``[(shard, sub_batch), ...]`` for the shards that receive rows, ascending.

    Raises:
        KeyError: ``key`` is not a column of ``batch``.
    """
    column = batch.column(key)  # raises KeyError with the column name
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    values = encoded.dictionary.to_pylist()
    shard_per_value = np.fromiter((shard_of(v, num_shards) for v in values), dtype=np.int64, count=len(values))
    present = np.unique(shard_per_value)
    if len(present) == 1:
        return [(int(present[0]), batch)]
    shards = shard_per_value[encoded.indices.to_numpy(zero_copy_only=False)]
    order = np.argsort(shards, kind="stable")
    counts = np.bincount(shards, minlength=num_shards)
    ordered = batch.take(pa.array(order))
    parts, start = [], 0
    for shard in range(num_shards):
        if counts[shard]:
            parts.append((shard, ordered.slice(start, int(counts[shard]))))
            start += int(counts[shard])
    return parts


@dataclass
class Route:
    """Where one node's outputs go: one downstream node (all its shards).

    Attributes:
        target: downstream node id.
        streams: which of this node's output streams the target subscribes to.
        key: partition column for a keyed target (``"symbol"``); None = round-robin.
        num_shards: the target's parallelism.
    """

    target: str
    streams: frozenset[str]
    key: str | None
    num_shards: int
    _next: int = 0

    def split(self, batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch]]:
        """The (shard, rows) parts of ``batch`` for this route."""
        if self.num_shards == 1:
            return [(0, batch)]
        if self.key is not None:
            return partition_batch(batch, self.key, self.num_shards)
        shard = self._next
        self._next = (self._next + 1) % self.num_shards
        return [(shard, batch)]
