"""Source shards: a replay node with ``parallelism: N`` reads its inputs as N actors.

Each shard (``ctx.shard`` of ``ctx.num_shards``) replays one part of the input, chosen by
the node's ``partition`` param:

* ``symbols`` (default): shard ``k`` replays the symbols with ``crc32(symbol) % N == k``
  (``graph.runtime.shard_of``, the hash keyed edges route by, so a downstream node with
  the same parallelism keyed by ``symbol`` gets each source shard's ticks in one of its
  shards). An input whose symbol is known before reading (a LOBSTER pair, a catalog
  symbol) is read by its symbol's shard only; any other input (a canonical or Tardis
  file, ``tick_data``) is read by every shard, each keeping its symbols' rows.
* ``files``: input ``i`` is read by shard ``i % N`` only, whole. Use it when no symbol
  spans inputs of different shards (e.g. one file per symbol); else that symbol's ticks
  would interleave in arrival order downstream.

Semantics per symbol are those of the unsharded replay: a symbol's ticks come from one
shard, in the same merged event-time order (merge keys are computed on the whole input
before the shard keeps its rows: ``actors.file_replay.TickMerge``'s ``partition``). Each
shard emits its own watermarks (the largest event time *it* emitted, minus the allowed
lateness); downstream nodes align them (the minimum over their input channels). Each
shard's batches carry the schema metadata ``tickgraph.source_shard`` (:data:`SHARD_KEY`),
so the normalizer judges late ticks against that shard's own running maximum: a verdict
that never depends on how the shards' batches interleave. A malformed input row is
quarantined by one shard only (input ``i``'s quarantine rows by shard ``i % N``), so
``ticks read = accepted + quarantined`` still adds up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors.tick_formats import TickChunk
from graph.operator import OperatorContext
from graph.partition import shard_of

__all__ = ["Partition", "SHARD_KEY", "ShardPlan", "source_shard"]

#: How a sharded source splits its inputs.
Partition = Literal["symbols", "files"]
#: Schema metadata key on a sharded source's batches: the shard index (decimal text).
SHARD_KEY = "tickgraph.source_shard"


def source_shard(batch: pa.RecordBatch) -> str | None:
    """The ``tickgraph.source_shard`` a sharded source attached to ``batch``, or None."""
    value = (batch.schema.metadata or {}).get(SHARD_KEY.encode())
    return value.decode() if value is not None else None


class ShardPlan:
    """What one shard of a source node reads.

    Args:
        ctx: the shard's context (``shard``, ``num_shards``).
        partition: ``symbols`` or ``files`` (module docstring).
        known_symbols: per input, its one symbol if known before reading (else None).
    """

    def __init__(self, ctx: OperatorContext, partition: Partition, known_symbols: list[str | None]) -> None:
        self.shard, self.num_shards, self.partition = ctx.shard, ctx.num_shards, partition
        self._known = known_symbols
        self._cache: dict[str, bool] = {}

    @property
    def sharded(self) -> bool:
        """True when the node runs more than one shard."""
        return self.num_shards > 1

    def reads(self, index: int) -> bool:
        """Whether this shard reads input ``index`` at all."""
        if not self.sharded:
            return True
        if self.partition == "files":
            return index % self.num_shards == self.shard
        symbol = self._known[index]
        return symbol is None or shard_of(symbol, self.num_shards) == self.shard

    def owns_rejections(self, index: int) -> bool:
        """Whether this shard emits input ``index``'s quarantine rows (exactly one shard does)."""
        if not self.sharded or self.partition == "files":
            return True
        symbol = self._known[index]
        owner = shard_of(symbol, self.num_shards) if symbol is not None else index % self.num_shards
        return owner == self.shard

    def row_mask(self, ticks: pa.RecordBatch) -> np.ndarray | None:
        """``symbols`` partition: bool per row, True for this shard's symbols; None keeps all."""
        if not self.sharded or self.partition == "files":
            return None
        encoded = pc.dictionary_encode(ticks.column("symbol"))
        names = encoded.dictionary.to_pylist()
        mine = np.fromiter((self._mine(name) for name in names), dtype=bool, count=len(names))
        if mine.all():
            return None
        return mine[encoded.indices.to_numpy(zero_copy_only=False)]

    def _mine(self, symbol: str) -> bool:
        found = self._cache.get(symbol)
        if found is None:
            found = self._cache[symbol] = shard_of(symbol, self.num_shards) == self.shard
        return found

    def stamp(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` with :data:`SHARD_KEY` in its schema metadata when sharded (other keys kept)."""
        if not self.sharded:
            return batch
        metadata = dict(batch.schema.metadata or {})
        metadata[SHARD_KEY.encode()] = str(self.shard).encode()
        return batch.replace_schema_metadata(metadata)

    def chunks(self, index: int, chunks: Iterator[TickChunk]) -> Iterator[TickChunk]:
        """Input ``index``'s reader, without the quarantine rows another shard emits."""
        if self.owns_rejections(index):
            yield from chunks
            return
        try:
            for chunk in chunks:
                yield TickChunk(chunk.ticks, None, chunk.rows_read, chunk.slow_path)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
