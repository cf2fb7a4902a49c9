"""Tiered read path for bars: an in-memory LRU cache in front of the database.

    cache = BarCache("sqlite:///tickgraph.db", capacity_bars=200_000)
    bars = cache.read("AMZN", "1m", start_ns, end_ns)     # Arrow table, BAR minus status

Tier 1 is this process's memory, tier 2 the database (``bars_ohlcv``). The cache unit
is a *block*: the stored bars of one (symbol, timeframe) whose open time falls in one
fixed span of ``block_bars`` bar lengths (``1d`` counts 24 h). A read maps its
``[start, end)`` range to blocks, serves cached blocks from memory (hits), loads the
missing ones from the database in one query per contiguous run (misses), and caches
them, least recently used first out once the cached bars exceed ``capacity_bars``.
Recent bars are the blocks read most, so they stay.

Consistency model (read-through, write-invalidate, bounded staleness):

* Writes through a :class:`~actors.store.SqlStore` *in this process* to the same URL
  are seen: after each committed flush the store calls :func:`notify_write`, which
  drops every cached block the written bars fall in (an upserted or corrected bar
  included). A read that starts after the flush committed (``store.flush()`` returned,
  or ``wait_for_writes``) sees the new rows: read-your-writes in one process.
* A block loaded while an invalidation of its (symbol, timeframe) happened is returned
  to that caller but not cached (a per-key generation counter), so a racing load can
  never re-insert pre-write data after the invalidation.
* Writes by other processes (a store actor on Ray, another job) are invisible to this
  cache: with ``ttl_s`` set, a cached block older than that is reloaded, which bounds
  staleness to ``ttl_s``; without it, blocks live until evicted or invalidated.
  :meth:`BarCache.invalidate` drops blocks by hand.

The cache is thread-safe (one lock; database reads run outside it).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from db.engine import absolute_sqlite_url, async_url
from db.tables import arrow_schema, bars_ohlcv
from graph.timeframes import INTRADAY_NS, check_timeframe

__all__ = ["BarCache", "CacheStats", "cache_key", "notify_write"]

_DAY_NS = 86_400 * 1_000_000_000
_SCHEMA = arrow_schema(bars_ohlcv)

#: Loads the stored bars of (symbol, timeframe) with ``start_ns <= ts < end_ns``, sorted by ts.
Loader = Callable[[str, str, int, int], Awaitable[pa.Table]]

_REGISTRY: dict[str, weakref.WeakSet[BarCache]] = {}
_REGISTRY_LOCK = threading.Lock()


def cache_key(url: str) -> str:
    """The registry key of a database URL: its async form, relative SQLite paths made absolute."""
    return async_url(absolute_sqlite_url(url)).render_as_string(hide_password=False)


def notify_write(key: str, batches: Iterable[pa.RecordBatch]) -> None:
    """Tell every cache registered for ``key`` (:func:`cache_key`) that these bars were written.

    Called by the store after each committed flush of ``bars_ohlcv`` rows; a no-op (one
    dict lookup) when no cache is registered for the URL.

    Args:
        key: :func:`cache_key` of the database URL.
        batches: the written rows (``symbol``, ``timeframe``, ``ts`` columns).
    """
    with _REGISTRY_LOCK:
        caches = list(_REGISTRY.get(key, ()))
    if not caches:
        return
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    written = pa.Table.from_batches(batches).select(["symbol", "timeframe", "ts"])
    ranges = written.group_by(["symbol", "timeframe"]).aggregate([("ts", "min"), ("ts", "max")]).to_pylist()
    for cache in caches:
        for row in ranges:
            cache.invalidate(row["symbol"], row["timeframe"], row["ts_min"], row["ts_max"])


@dataclass
class CacheStats:
    """Counters of a :class:`BarCache` (blocks, not rows).

    Attributes:
        hits: blocks served from memory.
        misses: blocks loaded from the database (absent, expired or invalidated).
        expired: of the misses, blocks present but older than ``ttl_s``.
        evictions: blocks dropped to stay within ``capacity_bars``.
        invalidations: blocks dropped because bars in them were written.
        queries: database queries made (one per contiguous run of missing blocks).
        cached_bars: bars held now.
        cached_blocks: blocks held now.
    """

    hits: int = 0
    misses: int = 0
    expired: int = 0
    evictions: int = 0
    invalidations: int = 0
    queries: int = 0
    cached_bars: int = 0
    cached_blocks: int = 0


@dataclass
class _Block:
    bars: pa.Table
    loaded_at: float
    cost: int  # capacity units: rows, at least 1


class BarCache:
    """An LRU cache of stored bars in front of the database (see the module docstring).

    Args:
        url: SQLAlchemy URL of the database holding ``bars_ohlcv``.
        capacity_bars: most bars kept in memory (an empty block counts as 1).
        block_bars: bar lengths per block (the unit of caching and loading).
        ttl_s: reload a block cached longer than this (seconds); None: never expire.
        clock: monotonic seconds, for the TTL (injectable for tests).
        loader: the database tier; default reads ``bars_ohlcv`` at ``url``.

    Raises:
        ValueError: a bad URL, capacity or block size.
    """

    def __init__(
        self,
        url: str,
        *,
        capacity_bars: int = 100_000,
        block_bars: int = 512,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Loader | None = None,
    ) -> None:
        if capacity_bars < 1 or block_bars < 1:
            raise ValueError(f"capacity_bars and block_bars must be >= 1, got {capacity_bars} and {block_bars}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s}")
        self.url = absolute_sqlite_url(url)
        self.capacity_bars = capacity_bars
        self.block_bars = block_bars
        self.ttl_s = ttl_s
        self._clock = clock
        self._loader = loader or self._load_from_database
        self._blocks: OrderedDict[tuple[str, str, int], _Block] = OrderedDict()
        self._generation: dict[tuple[str, str], int] = {}
        self._size = 0
        self._stats = CacheStats()
        self._lock = threading.RLock()
        self._key = cache_key(self.url)
        with _REGISTRY_LOCK:
            _REGISTRY.setdefault(self._key, weakref.WeakSet()).add(self)

    def close(self) -> None:
        """Stop receiving write notifications and drop every block (idempotent)."""
        with _REGISTRY_LOCK:
            registered = _REGISTRY.get(self._key)
            if registered is not None:
                registered.discard(self)
                if not registered:
                    del _REGISTRY[self._key]
        with self._lock:
            self._blocks.clear()
            self._size = 0

    def __enter__(self) -> BarCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------
    def read(self, symbol: str, timeframe: str, start_ns: int, end_ns: int) -> pa.Table:
        """Synchronous :meth:`read_async` (runs its own event loop; not from async code)."""
        return asyncio.run(self.read_async(symbol, timeframe, start_ns, end_ns))

    async def read_async(self, symbol: str, timeframe: str, start_ns: int, end_ns: int) -> pa.Table:
        """Stored bars of ``symbol``/``timeframe`` with ``start_ns <= ts < end_ns``.

        Args:
            symbol: e.g. ``AMZN``.
            timeframe: ``1s 1m 5m 15m 1h 1d``.
            start_ns, end_ns: bar open-time range, int64 ns UTC, half open.

        Returns:
            Arrow table with the ``bars_ohlcv`` columns (BAR minus status), sorted by ts.

        Raises:
            ValueError: a bad timeframe or an empty/reversed range.
        """
        check_timeframe(timeframe)
        if end_ns <= start_ns:
            raise ValueError(f"end_ns ({end_ns}) must be after start_ns ({start_ns})")
        span = self._span(timeframe)
        first, last = start_ns // span, (end_ns - 1) // span
        parts: dict[int, pa.Table] = {}
        missing: list[int] = []
        with self._lock:
            generation = self._generation.get((symbol, timeframe), 0)
            now = self._clock()
            for block in range(first, last + 1):
                entry = self._blocks.get((symbol, timeframe, block))
                if entry is not None and self.ttl_s is not None and now - entry.loaded_at > self.ttl_s:
                    self._stats.expired += 1
                    self._drop((symbol, timeframe, block))
                    entry = None
                if entry is None:
                    missing.append(block)
                    self._stats.misses += 1
                else:
                    self._blocks.move_to_end((symbol, timeframe, block))
                    self._stats.hits += 1
                    parts[block] = entry.bars
        for run in _runs(missing):
            loaded = await self._loader(symbol, timeframe, run[0] * span, (run[-1] + 1) * span)
            with self._lock:
                self._stats.queries += 1
            ts = loaded.column("ts").to_numpy()
            edges = np.searchsorted(ts, (np.asarray(run + [run[-1] + 1], dtype=np.int64)) * span)
            for i, block in enumerate(run):
                parts[block] = loaded.slice(int(edges[i]), int(edges[i + 1] - edges[i]))
            with self._lock:
                if self._generation.get((symbol, timeframe), 0) == generation:  # no write raced the load
                    for block in run:
                        self._insert((symbol, timeframe, block), parts[block])
        table = pa.concat_tables([parts[b] for b in range(first, last + 1)]) if parts else _SCHEMA.empty_table()
        ts = table.column("ts")
        inside = pc.and_(pc.greater_equal(ts, start_ns), pc.less(ts, end_ns))
        return table.filter(inside).combine_chunks()

    # -- invalidation --------------------------------------------------------------------
    def invalidate(
        self, symbol: str | None = None, timeframe: str | None = None, start_ns: int | None = None, end_ns: int | None = None
    ) -> int:
        """Drop cached blocks; returns how many.

        Args:
            symbol, timeframe: which key (None: every symbol / every timeframe).
            start_ns, end_ns: bar open times written, inclusive range (None: all blocks
                of the key). Blocks holding any of them are dropped.
        """
        with self._lock:
            keys = {(s, t) for s, t, _ in self._blocks} | set(self._generation)
            if symbol is not None and timeframe is not None:
                keys.add((symbol, timeframe))
            dropped = 0
            for s, t in keys:
                if (symbol is not None and s != symbol) or (timeframe is not None and t != timeframe):
                    continue
                self._generation[(s, t)] = self._generation.get((s, t), 0) + 1
                span = self._span(t)
                lo = None if start_ns is None else start_ns // span
                hi = None if end_ns is None else end_ns // span
                for key in [k for k in self._blocks if k[0] == s and k[1] == t]:
                    if (lo is None or key[2] >= lo) and (hi is None or key[2] <= hi):
                        self._drop(key)
                        self._stats.invalidations += 1
                        dropped += 1
            return dropped

    def stats(self) -> CacheStats:
        """A copy of the counters."""
        with self._lock:
            return CacheStats(**{**self._stats.__dict__, "cached_bars": self._size, "cached_blocks": len(self._blocks)})

    # -- internals -----------------------------------------------------------------------
    def _span(self, timeframe: str) -> int:
        return INTRADAY_NS.get(timeframe, _DAY_NS) * self.block_bars

    def _insert(self, key: tuple[str, str, int], bars: pa.Table) -> None:
        if key in self._blocks:
            self._drop(key)
        block = _Block(bars=bars, loaded_at=self._clock(), cost=max(1, bars.num_rows))
        self._blocks[key] = block
        self._size += block.cost
        while self._size > self.capacity_bars and len(self._blocks) > 1:
            oldest = next(iter(self._blocks))
            self._drop(oldest)
            self._stats.evictions += 1

    def _drop(self, key: tuple[str, str, int]) -> None:
        block = self._blocks.pop(key)
        self._size -= block.cost

    async def _load_from_database(self, symbol: str, timeframe: str, start_ns: int, end_ns: int) -> pa.Table:
        from db.read import read_range_async

        table = await read_range_async(
            self.url, bars_ohlcv, symbols=[symbol], start_ns=start_ns, end_ns=end_ns, where={"timeframe": timeframe}
        )
        return table.sort_by("ts")


def _runs(blocks: list[int]) -> list[list[int]]:
    """Split ascending block numbers into runs of consecutive ones."""
    runs: list[list[int]] = []
    for block in blocks:
        if runs and block == runs[-1][-1] + 1:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs
