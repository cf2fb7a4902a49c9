"""The order in which a stream's rows are hashed: independent of batching, sharding and timing.

Three orders (``ParityTracker`` param ``order``, per stream):

``arrival``
    Rows are hashed as they arrive. Deterministic when the stream comes over ONE
    channel from a deterministic upstream: e.g. ``ticks`` from a single normalizer,
    which forwards the source's rows in source order whatever the batching (burst or
    paced replay cut the same rows into different batches; a message is one row, so
    the hash is the same). The default for every stream that is not a bar stream.

``bar_end`` (default for BAR streams)
    For a stream from N shards (``bars`` with ``parallelism: N``) the interleaving of
    the shards' batches at the tracker depends on timing. So the stream is hashed as
    the *final value of every bar*, sorted by ``(B, symbol, timeframe, ts)`` where
    ``B`` is the bar's release bound: its end ``ts + timeframe`` (intraday) or
    ``ts + 26 h`` (``1d``: a session is at most 24 h of local wall-clock time plus at
    most 2 h of daylight-saving shift, so ``ts + 26 h`` >= the session close).
    Rows are buffered per bar (a later row of the same bar replaces the earlier one)
    and a bar is released -- hashed -- at the tracker's aligned watermark ``W`` (the
    host gives it the MIN over its input channels) once ``B + A <= W``, ``A`` being the
    amend window (0 under ``late_policy: drop``); each release is hashed in key order
    and end-of-stream releases everything.

    *Why the hashed sequence is the sorted set of final bars.* Take a bar row with end
    ``E <= B`` emitted by shard ``k``, and let ``w'`` be the last watermark that shard
    forwarded before it. (1) A ``confirmed`` row: the engine confirms a bar on the
    first watermark ``w >= E`` and emits it before forwarding ``w``; the bar was still
    open at ``w'``, so ``E > w'`` (a trade whose bar ended at or before ``w'`` opens no
    bar; end-of-stream confirms only open bars). (2) Under ``amend``, a ``corrected``
    row, or a ``confirmed`` row for a bar created by late trades only, is caused by a
    trade with ``ts >= w' - A`` (older trades cannot amend and are quarantined), and
    ``ts < E``, so ``E + A > w'``. When the row reaches the tracker, that shard's
    channel has delivered at most ``w'``, so ``W <= w' < B + A``: no row ever arrives
    for a bar already released. A release at ``W`` hashes exactly the buffered bars
    with ``B + A <= W`` and every bar hashed later has ``B + A > W``: the releases
    concatenate to the key-sorted set of final bar values. A bar's rows all come from
    one shard over one FIFO channel, so its last row is well defined. Batch
    boundaries, shard count, interleaving, Ray vs in-process and the watermark values
    (burst vs paced) cannot change that sequence.

    *Forming rows are not hashed* (counted as ``forming_skipped``): how many forming
    updates a bar gets depends on where watermarks fall between batches. Under
    ``drop`` every bar is hashed as its one confirmed row.

``event_time``
    Like ``bar_end`` with ``B`` = the row's ``ts``: for a sharded stream whose rows
    are emitted before the watermark passes their ``ts`` (e.g. a signal computed per
    tick by a keyed node); rows are not merged, each is hashed.

In ``bar_end`` and ``event_time`` a row that arrives after the tracker already hashed
a row sorting after it (an upstream that breaks the contract above, or an amend window
shorter than the bar engine's) cannot be placed: it is counted as ``out_of_order`` and
hashed at end-of-stream, sorted. The stream is then only deterministic if those rows
are; ``out_of_order`` > 0 in the metrics or proof is the explanation to look for when
two runs differ.
"""

from __future__ import annotations

import heapq
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph.schemas import BAR_CORRECTED, BAR_FORMING
from graph.timeframes import DAILY, INTRADAY_NS, TIMEFRAMES
from parity.canonical import (
    DEFAULT_FLOAT_BITS,
    StreamHasher,
    canonical_fields,
    encode_rows,
    schema_kind,
)

__all__ = ["ORDERS", "Order", "DAILY_BOUND_NS", "bar_release_bounds", "OrderedStream"]

Order = Literal["arrival", "bar_end", "event_time"]
ORDERS: tuple[str, ...] = ("arrival", "bar_end", "event_time")

#: Release bound of a ``1d`` bar past its open time: 26 h (24 h session + 2 h DST), ns.
DAILY_BOUND_NS = 26 * 3600 * 1_000_000_000
_TF_RANK = {tf: i for i, tf in enumerate(TIMEFRAMES)}
_BOUND_OFFSET_NS = {**INTRADAY_NS, DAILY: DAILY_BOUND_NS}
_INT64_MAX = int(np.iinfo(np.int64).max)


def bar_release_bounds(ts: np.ndarray, timeframes: list[str]) -> np.ndarray:
    """Release bound of each bar: an upper bound of its end, int64 ns UTC.

    Args:
        ts: bar open times, int64 ns UTC, shape (n,).
        timeframes: the bars' timeframes, n strings.

    Returns:
        ``ts + timeframe`` (intraday) or ``ts + 26 h`` (``1d``), int64 shape (n,),
        saturated at int64 max.

    Raises:
        ValueError: a timeframe is not one of ``1s 1m 5m 15m 1h 1d``.
    """
    offsets = np.empty(len(timeframes), dtype=np.int64)
    for i, tf in enumerate(timeframes):
        try:
            offsets[i] = _BOUND_OFFSET_NS[tf]
        except KeyError:
            raise ValueError(f"bar timeframe {tf!r} is not a timeframe ({', '.join(TIMEFRAMES)})") from None
    ts = np.asarray(ts, dtype=np.int64)
    with np.errstate(over="ignore"):  # overflowing sums are replaced by the saturation
        return np.where(ts > _INT64_MAX - offsets, _INT64_MAX, ts + offsets)


class OrderedStream:
    """Hashes one stream in its canonical order (see the module docstring).

    Args:
        stream: the stream name.
        schema: the schema of the stream's first batch (picks fields and the default order).
        order: ``arrival``, ``bar_end`` or ``event_time``; None = ``bar_end`` for a BAR
            stream, else ``arrival``.
        float_bits: significant bits kept of floats' significands.
        checkpoint_every: messages between checkpoints.
        amend_window_ns: ``bar_end`` only: how long after its bound a bar may still be
            corrected (the bar engine's ``amend_window_ms`` under ``late_policy: amend``;
            0 under ``drop``), int ns >= 0.

    Raises:
        ValueError: ``bar_end`` for a stream that is not a BAR stream, ``event_time``
            for one without ``ts``, an unknown order, or a negative window.
    """

    def __init__(self, stream: str, schema: pa.Schema, order: str | None = None,
                 float_bits: int = DEFAULT_FLOAT_BITS, checkpoint_every: int = 10_000,
                 amend_window_ns: int = 0) -> None:
        is_bar = schema_kind(schema.names) == "bar"
        order = order or ("bar_end" if is_bar else "arrival")
        if order not in ORDERS:
            raise ValueError(f"stream {stream!r}: order {order!r} is not one of {', '.join(ORDERS)}")
        if order == "bar_end" and not is_bar:
            raise ValueError(
                f"stream {stream!r}: order 'bar_end' needs BAR rows (symbol, timeframe, ts, ..., status); "
                f"the stream has columns {', '.join(schema.names)}"
            )
        if order == "event_time" and "ts" not in schema.names:
            raise ValueError(f"stream {stream!r}: order 'event_time' needs a 'ts' column; has {', '.join(schema.names)}")
        if amend_window_ns < 0:
            raise ValueError(f"stream {stream!r}: amend_window_ns must be >= 0, was {amend_window_ns}")
        self.stream = stream
        self.order = order
        self.fields = canonical_fields(schema)
        self.float_bits = float_bits
        self.amend_window_ns = amend_window_ns if order == "bar_end" else 0
        self.hasher = StreamHasher(stream, self.fields, float_bits, checkpoint_every)
        self._heap: list[tuple[Any, ...]] = []  # bar_end: (bound, symbol, rank, ts); event_time: (bound, row)
        self._latest: dict[tuple[Any, ...], bytes] = {}  # bar_end: heap key -> the bar's last row
        self._last_released: tuple[Any, ...] | None = None
        self._late: list[tuple[Any, ...]] = []  # out-of-order (key..., row), hashed at the end
        self.forming_skipped = 0
        self.out_of_order = 0
        self.corrections = 0
        self.finished = False

    # -- input ---------------------------------------------------------------------------
    def add(self, batch: pa.RecordBatch) -> None:
        """Take one batch of the stream: hash it now (``arrival``) or buffer its rows.

        Raises:
            RuntimeError: after :meth:`finish`.
            KeyError: the batch lacks a hashed field.
            ValueError: a bar row with an unknown timeframe.
        """
        if self.finished:
            raise RuntimeError(f"stream {self.stream!r}: a batch arrived after end-of-stream")
        if batch.num_rows == 0:
            return
        if self.order == "arrival":
            self.hasher.update(encode_rows(batch, self.fields, self.float_bits))
            return
        if self.order == "event_time":
            self._add_events(batch)
            return
        status = batch.column("status")
        forming = pc.equal(status, BAR_FORMING)
        skipped = pc.sum(forming).as_py() or 0
        if skipped:
            self.forming_skipped += skipped
            batch = batch.filter(pc.invert(forming))
            if batch.num_rows == 0:
                return
        self.corrections += pc.sum(pc.equal(batch.column("status"), BAR_CORRECTED)).as_py() or 0
        rows = encode_rows(batch, self.fields, self.float_bits)
        timeframes = batch.column("timeframe").to_pylist()
        ts = batch.column("ts")
        bounds = bar_release_bounds(ts.to_numpy(), timeframes).tolist()
        ranks = [_TF_RANK[tf] for tf in timeframes]
        latest = self._latest
        for key, row in zip(zip(bounds, batch.column("symbol").to_pylist(), ranks, ts.to_pylist()), rows):
            if key in latest:
                latest[key] = row  # a later row of a buffered bar: the last one wins
            elif self._last_released is not None and key <= self._last_released:
                self.out_of_order += 1
                self._late.append((*key, row))
            else:
                latest[key] = row
                heapq.heappush(self._heap, key)

    def _add_events(self, batch: pa.RecordBatch) -> None:
        """``event_time``: buffer every row under bound = its ``ts`` (null: end-of-stream)."""
        rows = encode_rows(batch, self.fields, self.float_bits)
        ts = batch.column("ts")
        if pa.types.is_timestamp(ts.type):
            ts = ts.cast(pa.int64())
        for bound, row in zip(ts.to_pylist(), rows):
            entry = (_INT64_MAX if bound is None else bound, row)
            if self._last_released is not None and entry < self._last_released:
                self.out_of_order += 1
                self._late.append(entry)
            else:
                heapq.heappush(self._heap, entry)

    # -- release -------------------------------------------------------------------------
    def release(self, watermark: int) -> int:
        """Hash every buffered row whose bound (+ amend window) is ``<= watermark``, in order.

        Args:
            watermark: the tracker's aligned watermark, int ns UTC.

        Returns:
            Rows hashed.
        """
        heap = self._heap
        limit = watermark - self.amend_window_ns
        if not heap or heap[0][0] > limit:
            return 0
        out = []
        entry = None
        while heap and heap[0][0] <= limit:
            entry = heapq.heappop(heap)
            out.append(self._latest.pop(entry) if self.order == "bar_end" else entry[-1])
        self._last_released = entry
        self.hasher.update(out)
        return len(out)

    def finish(self) -> None:
        """End-of-stream: hash every buffered row, then the out-of-order rows (sorted)."""
        if self.finished:
            return
        self.amend_window_ns = 0
        self.release(_INT64_MAX)
        self.hasher.update([entry[-1] for entry in sorted(self._late)])
        self._late.clear()
        self.finished = True

    # -- reporting -----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Rows buffered, not hashed yet."""
        return len(self._heap) + len(self._late)

    def counters(self) -> dict[str, Any]:
        """``order``, ``pending``, ``forming_skipped``, ``corrections``, ``out_of_order``."""
        return {
            "order": self.order,
            "pending": self.pending,
            "forming_skipped": self.forming_skipped,
            "corrections": self.corrections,
            "out_of_order": self.out_of_order,
        }
