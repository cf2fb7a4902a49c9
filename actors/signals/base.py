"""The machinery every signal kind shares (the rules are in the package docstring).

* :class:`Signal`: key ids per (provider, symbol), metadata, output batches, counters,
  checkpoints.
* :class:`TickSignal`: on ticks; late-tick quarantine, last value per timestamp, rows
  held until the watermark passes them, conflation.
* :class:`BarSignal`: on confirmed/corrected bars of one timeframe; per-symbol history,
  vectorized rounds, recomputation on corrections.
* The params bases and the column helpers (:func:`encode`, :func:`floats`).
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from actors import indicators as ind
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import Timeframe
from graph.schemas import BAR_CONFIRMED, BAR_CORRECTED, QUARANTINE, QUARANTINE_ROW, SIGNAL, quarantine_row, stream_source

__all__ = [
    "NO_WATERMARK",
    "TICK_COLUMNS",
    "BAR_COLUMNS",
    "SignalParams",
    "ConflatedParams",
    "BarSignalParams",
    "Signal",
    "TickSignal",
    "BarSignal",
    "encode",
    "floats",
]

#: The watermark before any has arrived (int64 min).
NO_WATERMARK = int(np.iinfo(np.int64).min)
#: Columns a tick signal's input must have (more are allowed).
TICK_COLUMNS = ("symbol", "ts", "provider", "seq")
#: Columns a bar signal's input must have (more are allowed).
BAR_COLUMNS = ("symbol", "timeframe", "ts", "close", "status")


class SignalParams(Params):
    """Params every signal kind has.

    Attributes:
        name: the ``signals.name`` of its rows; default derived from the kind and its
            parameters (``spread_bps``, ``rsi_14_1m``, ...). Two nodes writing the same
            table need different names.
    """

    name: str | None = Field(default=None, min_length=1, max_length=200)


class ConflatedParams(SignalParams):
    """Params of a tick signal that can be conflated.

    Attributes:
        conflate_ms: 0 (default): a row for every timestamp with a value. N > 0: per
            key, only the last row in each epoch-aligned N ms interval (a subset of the
            N = 0 rows: same ts, same value), emitted once the watermark passes the
            interval's end. At most one day (86,400,000).
    """

    conflate_ms: int = Field(default=0, ge=0, le=86_400_000)


class Signal(Operator):
    """Common machinery: key ids, metadata, output batches, counters, checkpoints."""

    outputs: ClassVar[dict[str, pa.Schema]] = {"signals": SIGNAL, "quarantine": QUARANTINE}
    keyed: ClassVar[bool] = True
    _required: ClassVar[tuple[str, ...]] = TICK_COLUMNS
    #: attributes that make up the state (``snapshot``/``restore``)
    _state: ClassVar[tuple[str, ...]] = ("_keys", "_key_ids", "_metadata", "_counts")

    def __init__(self, params: SignalParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self.name = params.name or self.default_name(params)
        self._keys: list[tuple[str, str]] = []  # key id -> (provider, symbol)
        self._key_ids: dict[tuple[str, str], int] = {}
        self._metadata: list[str] = []  # key id -> JSON text
        self._counts: dict[str, int] = {"rows_in": 0, "signals": 0, "late": 0}
        self._key_columns: tuple[pa.Array, pa.Array, pa.Array] | None = None  # provider, symbol, metadata by key id

    @classmethod
    def default_name(cls, params: Any) -> str:
        """The signal name when the ``name`` param is not set."""
        raise NotImplementedError

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """The ``metadata`` object of a key's rows (the parameters that produced them)."""
        return {}

    # -- keys ----------------------------------------------------------------------------
    def _codes(self, providers: pa.Array, symbols: pa.Array) -> np.ndarray:
        """Key ids (int32, shape (n,)) of (provider, symbol) columns; registers new keys."""
        prov_names, prov_index = encode(providers)
        sym_names, sym_index = encode(symbols)
        pair = sym_index.astype(np.int64)
        if len(prov_names) > 1:
            pair = pair + prov_index.astype(np.int64) * len(sym_names)
        present = np.flatnonzero(np.bincount(pair, minlength=len(prov_names) * len(sym_names)))
        lookup = np.zeros(len(prov_names) * len(sym_names), dtype=np.int32)
        for code in present.tolist():  # distinct keys of the batch
            key = (prov_names[code // len(sym_names)], sym_names[code % len(sym_names)])
            kid = self._key_ids.get(key)
            if kid is None:
                kid = self._key_ids[key] = len(self._keys)
                self._keys.append(key)
                self._metadata.append(json.dumps(self.metadata_for(*key), sort_keys=True, separators=(",", ":")))
                self._on_new_key(kid, key)
            lookup[code] = kid
        return lookup[pair]

    def _on_new_key(self, kid: int, key: tuple[str, str]) -> None:
        """Grow per-key state for a newly registered key id."""

    def _check_columns(self, stream: str, batch: pa.RecordBatch) -> None:
        missing = [name for name in self._required if name not in batch.schema.names]
        if missing:
            raise ValueError(
                f"{type(self).__name__} node {self.ctx.node_id!r}: batch on stream {stream!r} lacks "
                f"column(s) {missing}; expected a {'BAR' if 'timeframe' in self._required else 'TICK'} batch"
            )

    # -- output ----------------------------------------------------------------------------
    def _signals(self, kid: np.ndarray, ts: np.ndarray, value: np.ndarray, score: np.ndarray | None) -> list[Emit]:
        """A SIGNAL batch (rows in the given order), or nothing for zero rows."""
        if len(kid) == 0:
            return []
        self._counts["signals"] += len(kid)
        if self._key_columns is None or len(self._key_columns[0]) != len(self._keys):
            self._key_columns = (
                pa.array([p for p, _ in self._keys], type=pa.string()),
                pa.array([s for _, s in self._keys], type=pa.string()),
                pa.array(self._metadata, type=pa.string()),
            )
        providers, symbols, metadata = self._key_columns
        index = pa.array(kid.astype(np.int32))
        columns = [
            providers.take(index),
            symbols.take(index),
            pa.array(ts, type=pa.int64()),
            pa.repeat(self.name, len(kid)),
            pa.array(value, type=pa.float64()),
            pa.nulls(len(kid), pa.float64()) if score is None else pa.array(score, type=pa.float64()),
            metadata.take(index),
        ]
        return [("signals", pa.RecordBatch.from_arrays(columns, schema=SIGNAL))]

    def _quarantine(self, rows: list[dict[str, Any]]) -> list[Emit]:
        return [("quarantine", pa.RecordBatch.from_pylist(rows, schema=QUARANTINE_ROW))] if rows else []

    # -- metrics and checkpoints -----------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Counters: ``rows_in``, ``signals`` (rows emitted), ``late`` and kind-specific ones."""
        return {"name": self.name, **self._counts}

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the state (picklable)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self._state}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` of an operator of the same kind and params."""
        for name in self._state:
            setattr(self, name, copy.deepcopy(state[name]))
        self._key_columns = None


class TickSignal(Signal):
    """A signal computed on ticks: late-tick handling, sorting, last-per-timestamp, held rows.

    Subclasses implement :meth:`_select` (which ticks count, and the numeric columns
    needed, as numpy) and :meth:`_compute` (the value after each selected tick, rows in
    (key, ts, arrival) order). Only those columns are ever reordered; the batch itself
    is never filtered or copied.
    """

    _state = (*Signal._state, "_watermark", "_held")

    def __init__(self, params: SignalParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        # conflation interval (ns); 1 = none: one row per timestamp
        self._bucket_ns = max(1, getattr(params, "conflate_ms", 0) * 1_000_000)
        self._watermark = NO_WATERMARK
        # values waiting for the watermark to pass their ts: (key, ts, value), sorted by
        # (key, ts) within each of the two parts (older held rows, then the newest batch)
        self._held: tuple[np.ndarray, np.ndarray, np.ndarray] = _no_rows()

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """(bool mask of the rows used, None: all; {column: float64 numpy} the formula needs)."""
        raise NotImplementedError

    def _compute(self, kid: np.ndarray, ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Value after each tick (NaN: none); rows sorted by (key, ts, arrival)."""
        raise NotImplementedError

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Apply a TICK batch to the state; its values wait for the watermark.

        Returns:
            ``quarantine`` rows for late ticks, if any.
        """
        self._check_columns(stream, batch)
        self._counts["rows_in"] += batch.num_rows
        if batch.num_rows == 0:
            return []
        mask, cols = self._select(batch)
        if mask is not None and not mask.any():
            return []
        ts = batch.column("ts").to_numpy()
        mask, late = self._split_late(batch, ts, mask)
        kid = self._codes(batch.column("provider"), batch.column("symbol"))
        if mask is not None:
            rows = np.flatnonzero(mask)
            kid, ts = kid[rows], ts[rows]
            cols = {name: column[rows] for name, column in cols.items()}
        if len(kid):
            order = ind.sort_by_key_ts(kid, ts)
            if order is not None:
                kid, ts = kid[order], ts[order]
                cols = {name: column[order] for name, column in cols.items()}
            value = self._compute(kid, ts, cols)
            keep = ind.last_of_runs(kid, ts) & np.isfinite(value)
            kid, ts, value = kid[keep], ts[keep], value[keep]
            if self._bucket_ns > 1:  # conflation: the last of those rows per interval
                keep = ind.last_of_runs(kid, ts // self._bucket_ns)
                kid, ts, value = kid[keep], ts[keep], value[keep]
            self._hold(kid, ts, value)
        return self._quarantine(late)

    def on_watermark(self, ts: int) -> list[Emit]:
        """Emit the held values whose ``ts`` < the watermark (final: no more ticks there)."""
        if ts <= self._watermark:
            return []
        self._watermark = int(ts)
        return self._release(self._watermark)

    def on_eof(self) -> list[Emit]:
        """Emit every held value."""
        return self._release(None)

    def _conflation(self) -> dict[str, int]:
        """``{"conflate_ms": N}`` for the metadata of a conflated signal, else ``{}``."""
        return {"conflate_ms": self._bucket_ns // 1_000_000} if self._bucket_ns > 1 else {}

    def _bucket(self, ts: np.ndarray) -> np.ndarray:
        """The interval a row's value stands for: its ts, or its conflation interval."""
        return ts if self._bucket_ns == 1 else ts // self._bucket_ns

    def _hold(self, kid: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        """Add a batch's values (sorted by (key, ts), one per (key, bucket)) to the held rows.

        A held value in the same (key, bucket) as a new one (same ts, or same
        conflation interval) is replaced: the new one comes after it in the stream.
        Held rows are few (those at or after the watermark), so each is looked up in
        the new rows by binary search.
        """
        old_kid, old_ts, old_value = self._held
        if len(old_kid) == 0:
            self._held = (kid, ts, value)
            return
        if len(old_kid) > 4096:  # no watermark for a long while: one stable sort instead
            all_kid, all_ts = np.concatenate([old_kid, kid]), np.concatenate([old_ts, ts])
            all_value = np.concatenate([old_value, value])
            order = ind.sort_by_key_ts(all_kid, all_ts)
            if order is not None:
                all_kid, all_ts, all_value = all_kid[order], all_ts[order], all_value[order]
            last = ind.last_of_runs(all_kid, self._bucket(all_ts))
            self._held = (all_kid[last], all_ts[last], all_value[last])
            return
        lo = np.searchsorted(kid, old_kid, side="left")
        hi = np.searchsorted(kid, old_kid, side="right")
        bucket, old_bucket = self._bucket(ts), self._bucket(old_ts)
        replaced = np.zeros(len(old_kid), dtype=bool)
        for i in np.flatnonzero(hi > lo).tolist():  # held rows whose key has new values
            j = lo[i] + int(np.searchsorted(bucket[lo[i] : hi[i]], old_bucket[i]))
            replaced[i] = j < hi[i] and bucket[j] == old_bucket[i]
        keep = ~replaced
        self._held = (
            np.concatenate([old_kid[keep], kid]),
            np.concatenate([old_ts[keep], ts]),
            np.concatenate([old_value[keep], value]),
        )

    def _release(self, watermark: int | None) -> list[Emit]:
        kid, ts, value = self._held
        if len(kid) == 0:
            return []
        if watermark is None:
            self._held = _no_rows()
            return self._signals(kid, ts, value, None)
        # final: no more ticks can reach the row's bucket (ts < watermark without conflation)
        final = self._bucket(ts) < watermark // self._bucket_ns
        if not final.any():
            return []
        if final.all():
            self._held = _no_rows()
            return self._signals(kid, ts, value, None)
        held = ~final
        self._held = (kid[held], ts[held], value[held])
        return self._signals(kid[final], ts[final], value[final], None)

    def _late_mask(self, ts: np.ndarray) -> np.ndarray:
        return ts < self._watermark

    def _split_late(
        self, batch: pa.RecordBatch, ts: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
        """(mask without the late ticks, quarantine rows for them)."""
        if self._watermark == NO_WATERMARK:
            return mask, []
        late = self._late_mask(ts)
        if mask is not None:
            late &= mask
        if not late.any():
            return mask, []
        self._counts["late"] += int(late.sum())
        rows = []
        for raw in batch.filter(pa.array(late)).to_pylist():
            detail = (
                f"late tick {raw['symbol']} ts={raw['ts']}: behind watermark {self._watermark}; "
                f"not applied to signal {self.name!r} (signals never rewrite emitted values)"
            )
            rows.append(quarantine_row(self.ctx.node_id, raw, "late", detail))
        return (~late if mask is None else mask & ~late), rows


def _no_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No held tick-signal rows: (key ids int32, ts int64 ns, value float64), all length 0."""
    return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64)


_ENCODED: list[tuple[pa.Array, list[str], np.ndarray]] = []  # the last few encodings, see encode
#: Encodings remembered: the in-process transport hands a node up to ``pump_events`` (8)
#: batches before the next node sees them, two string columns each.
_ENCODED_KEEP = 32


def _same_buffers(a: pa.Array, b: pa.Array) -> bool:
    """Whether two arrays view the very same memory (addresses: the memo keeps ``a`` alive)."""
    return all(
        (x is None and y is None) or (x is not None and y is not None and x.address == y.address and x.size == y.size)
        for x, y in zip(a.buffers(), b.buffers())
    )


def encode(column: pa.Array) -> tuple[list[str], np.ndarray]:
    """(distinct values, int32 index of each row's value) of a string column.

    A column with one value (the usual ``provider``) costs one comparison pass. The last
    32 encodings are remembered by column identity (the same Arrow buffers, kept alive
    by the memo so they cannot be reused): in-process, every tick signal node receives
    the normalizer's very batch, and only the first one hashes its symbols.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        return column.dictionary.to_pylist(), column.indices.to_numpy(zero_copy_only=False)
    for source, names, index in _ENCODED:
        if source.offset == column.offset and len(source) == len(column) and _same_buffers(source, column):
            return names, index
    first = column[0]
    if column.null_count == 0 and pc.all(pc.equal(column, first)).as_py():
        names, index = [first.as_py()], np.zeros(len(column), dtype=np.int32)
    else:
        encoded = pc.dictionary_encode(column)
        names, index = encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)
    _ENCODED.insert(0, (column, names, index))
    del _ENCODED[_ENCODED_KEEP:]
    return names, index


def floats(column: pa.Array) -> np.ndarray:
    """A float64 column as numpy, nulls as NaN."""
    return column.to_numpy(zero_copy_only=False)


# ======================================================================================
# bar signals
# ======================================================================================


class BarSignalParams(SignalParams):
    """Params every bar signal has.

    Attributes:
        timeframe: the bars it reads (``1s 1m 5m 15m 1h 1d``).
        period: bars in the indicator's window.
        provider: ``signals.provider`` of its rows (bars carry no provider).
        history_bars: bars kept per symbol (at least; up to twice as many between
            compactions) so that a corrected bar can be recomputed; > period. Older
            corrections are quarantined.
    """

    timeframe: Timeframe = "1m"
    period: int = Field(default=14, ge=1, le=100_000)
    provider: str = Field(default="tickgraph", min_length=1)
    history_bars: int = Field(default=512, ge=2, le=1_000_000)

    @model_validator(mode="after")
    def _history_covers_period(self) -> BarSignalParams:
        if self.history_bars <= self.period:
            raise ValueError(f"history_bars ({self.history_bars}) must be > period ({self.period})")
        return self


class BarSignal(Signal):
    """A signal on confirmed/corrected bars of one timeframe, recomputed on corrections.

    State: per symbol the last bars (at least ``history_bars``, at most twice that):
    ``ts``, ``close`` and the kind's own per-bar state columns (e.g. RSI's smoothed
    averages), enough to restart the computation at any kept bar. They live in 2-D
    arrays ``[key id, bar]`` with ``_length[key]`` bars used, so the usual case, each
    symbol's newer bars, runs for every symbol at once: the batch is processed in rounds,
    round r appending the r-th new bar of every symbol (:meth:`_step`, vectorized over
    symbols). A symbol with a corrected, repeated or out-of-order bar takes the per-symbol
    path: merge, then :meth:`_recompute` from the first changed bar to the newest.
    """

    _required = BAR_COLUMNS
    _state = (*Signal._state, "_cols", "_length", "_pruned")
    _aux: ClassVar[tuple[str, ...]] = ()  # per-bar state columns, float64

    def __init__(self, params: BarSignalParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._capacity = 2 * params.history_bars  # bars per symbol row
        self._cols: dict[str, np.ndarray] = {
            name: np.empty((0, self._capacity), dtype=np.int64 if name == "ts" else np.float64)
            for name in ("ts", "close", *self._aux)
        }
        self._length = np.zeros(0, dtype=np.int64)  # key id -> bars in use
        self._pruned = np.zeros(0, dtype=bool)  # key id -> older bars were dropped
        self._counts.update(bars=0, ignored=0, corrections=0, correction_too_old=0, undefined=0)

    def _on_new_key(self, kid: int, key: tuple[str, str]) -> None:
        if kid >= len(self._length):  # grow the key dimension by doubling
            rows = max(8, 2 * len(self._length))
            for name, column in self._cols.items():
                grown = np.zeros((rows, self._capacity), dtype=column.dtype)
                grown[: len(column)] = column
                self._cols[name] = grown
            self._length = np.concatenate([self._length, np.zeros(rows - len(self._length), dtype=np.int64)])
            self._pruned = np.concatenate([self._pruned, np.zeros(rows - len(self._pruned), dtype=bool)])

    def _min_restart(self) -> int:
        """Smallest history position a recomputation can restart from once bars were pruned."""
        return 1

    def _recompute(self, h: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, np.ndarray]:
        """One symbol: fill ``h``'s state columns from ``start`` on; return (value, score) of
        those bars (NaN: none)."""
        raise NotImplementedError

    def _step(self, key: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Many symbols, one new bar each, already written at ``_cols[...][key, position]``:
        fill its state columns from the bar before; return (value, score) per bar."""
        raise NotImplementedError

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Apply a BAR batch: append confirmed bars, recompute from corrected ones, emit values.

        Returns:
            ``signals`` for every new or recomputed bar with a defined value, and
            ``quarantine`` rows for corrections older than the history.
        """
        self._check_columns(stream, batch)
        self._counts["rows_in"] += batch.num_rows
        status = batch.column("status")
        keep = pc.and_(
            pc.equal(batch.column("timeframe"), self.params.timeframe),
            pc.or_(pc.equal(status, BAR_CONFIRMED), pc.equal(status, BAR_CORRECTED)),
        )
        bars = batch.filter(keep)
        self._counts["ignored"] += batch.num_rows - bars.num_rows
        if bars.num_rows == 0:
            return []
        self._counts["bars"] += bars.num_rows
        self._counts["corrections"] += int(pc.sum(pc.equal(bars.column("status"), BAR_CORRECTED)).as_py() or 0)
        kid = self._codes(pa.repeat(self.params.provider, bars.num_rows), bars.column("symbol"))
        ts = bars.column("ts").to_numpy()
        close = floats(bars.column("close"))
        order = ind.sort_by_key_ts(kid, ts)
        if order is not None:
            kid, ts, close = kid[order], ts[order], close[order]
        last = ind.last_of_runs(kid, ts)  # the same bar twice in a batch: the later row wins
        kid, ts, close = kid[last], ts[last], close[last]
        starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]])
        sizes = np.diff(np.r_[starts, len(kid)])
        group_key = kid[starts]
        length = self._length[group_key]
        newest = self._cols["ts"][group_key, np.maximum(length - 1, 0)]
        appends = ((length == 0) | (ts[starts] > newest)) & (sizes <= self._capacity - self.params.history_bars)
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        too_old: list[dict[str, Any]] = []
        for g in np.flatnonzero(~appends).tolist():  # corrections, out-of-order or huge batches
            lo = starts[g]
            out.append(self._apply(int(group_key[g]), ts[lo : lo + sizes[g]], close[lo : lo + sizes[g]], too_old))
        if appends.any():
            out.extend(self._append(kid, ts, close, np.repeat(appends, sizes), starts, sizes))
        if not out:
            return self._quarantine(too_old)
        value = np.concatenate([o[2] for o in out])
        defined = np.isfinite(value)
        self._counts["undefined"] += int((~defined).sum())
        emits = self._signals(
            np.concatenate([o[0] for o in out])[defined],
            np.concatenate([o[1] for o in out])[defined],
            value[defined],
            np.concatenate([o[3] for o in out])[defined],
        )
        return emits + self._quarantine(too_old)

    def _append(
        self, kid: np.ndarray, ts: np.ndarray, close: np.ndarray, rows: np.ndarray, starts: np.ndarray, sizes: np.ndarray
    ) -> list[tuple]:
        """Append the bars of ``rows`` (newer than each symbol's newest) for all symbols at once."""
        rank = np.arange(len(kid)) - np.repeat(starts, sizes)  # position of each bar within its symbol
        keys = np.unique(kid[rows])
        full = keys[self._length[keys] + np.bincount(kid[rows], minlength=len(self._length))[keys] > self._capacity]
        for key in full.tolist():  # rows full: keep the newest history_bars bars (each symbol rarely)
            self._compact(key)
        out = []
        for r in range(int(rank[rows].max()) + 1):
            sel = np.flatnonzero(rows & (rank == r))
            key, position = kid[sel], self._length[kid[sel]]
            self._cols["ts"][key, position] = ts[sel]
            self._cols["close"][key, position] = close[sel]
            value, score = self._step(key, position)
            self._length[key] += 1
            out.append((key, ts[sel], value, score))
        return out

    def _compact(self, key: int) -> None:
        keep = self.params.history_bars
        n = int(self._length[key])
        for column in self._cols.values():
            column[key, :keep] = column[key, n - keep : n].copy()
        self._length[key] = keep
        self._pruned[key] = True

    def _apply(self, key: int, ts: np.ndarray, close: np.ndarray, too_old: list) -> tuple:
        """One symbol's bars (sorted by ts, unique) merged into its history; recompute from the
        first new or changed bar. Returns (key ids, ts, value, score) of the bars recomputed."""
        n = int(self._length[key])
        h = {name: column[key, :n].copy() for name, column in self._cols.items()}
        if self._pruned[key]:
            position = np.searchsorted(h["ts"], ts)
            old = position < self._min_restart()
            if old.any():
                too_old.extend(self._too_old_rows(key, ts[old], close[old]))
                ts, close = ts[~old], close[~old]
                if len(ts) == 0:
                    return _empty_out()
        start = int(np.searchsorted(h["ts"], ts[0]))
        merged_ts = np.union1d(h["ts"], ts)
        position = np.searchsorted(h["ts"], merged_ts)
        exists = (position < n) & (h["ts"][np.minimum(position, n - 1)] == merged_ts) if n else position < 0
        merged = {"ts": merged_ts}
        for name in ("close", *self._aux):
            column = np.full(len(merged_ts), np.nan)
            column[exists] = h[name][position[exists]]
            merged[name] = column
        merged["close"][np.searchsorted(merged_ts, ts)] = close
        value, score = self._recompute(merged, start)
        emitted_ts = merged_ts[start:].copy()
        total = len(merged_ts)
        if total > self._capacity:
            drop = total - self.params.history_bars
            merged = {name: column[drop:] for name, column in merged.items()}
            total -= drop
            self._pruned[key] = True
        for name, column in merged.items():
            self._cols[name][key, :total] = column
        self._length[key] = total
        return np.full(len(value), key, dtype=np.int32), emitted_ts, value, score

    def _too_old_rows(self, key: int, ts: np.ndarray, close: np.ndarray) -> list[dict[str, Any]]:
        provider, symbol = self._keys[key]
        self._counts["correction_too_old"] += len(ts)
        return [
            {
                "source": stream_source(self.ctx.node_id, provider, symbol),
                "row": int(t),
                "symbol": symbol,
                "ts": int(t),
                "reason": "correction_too_old",
                "detail": (
                    f"corrected {self.params.timeframe} bar {symbol} ts={int(t)} is older than the "
                    f"{self.params.history_bars} bars kept for signal {self.name!r} (history_bars); "
                    "its signal values were not recomputed"
                ),
                "raw": json.dumps({"symbol": symbol, "ts": int(t), "close": float(c)}),
            }
            for t, c in zip(ts.tolist(), close.tolist())
        ]


def _empty_out() -> tuple:
    """No bar-signal rows: (key ids int32, ts int64, value float64, score float64), all length 0."""
    return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0), np.empty(0)
