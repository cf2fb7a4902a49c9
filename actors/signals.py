"""Signal computers: per-symbol signals from ticks and confirmed bars (node kinds below).

=====================  =========  =============================================  ========================
kind                   input      value (``signals.value``)                      emitted at ``ts``
=====================  =========  =============================================  ========================
``vwap_deviation_bps`` ticks      (price - session VWAP) / VWAP * 10,000         every trade
``spread_bps``         ticks      (ask - bid) / mid * 10,000                     every tick with bid & ask
``tick_rate_zscore``   ticks      (count - rolling mean) / rolling sd            each interval with ticks
``rsi``                bars       Wilder RSI of closes, 0..100                   each confirmed bar
``bollinger_pctb``     bars       (close - lower) / (upper - lower)              each confirmed bar
=====================  =========  =============================================  ========================

(The first two: the last of those per interval instead, with ``conflate_ms``; below.)

Formulas and sources are in ``actors/indicators.py``. Shared rules:

* **Keyed state.** Every operator is ``keyed`` (run with ``key: symbol`` when
  ``parallelism > 1``). State is per (provider, symbol) for tick signals and per symbol
  for bar signals. Bars carry no provider, so bar signals are stamped with their
  ``provider`` param (default ``tickgraph``).
* **One row per (provider, symbol, ts, name).** Where several ticks share a timestamp
  the row holds the value after the last of them in stream order (the source's
  sequence order). Tick signals therefore hold each value until the watermark passes
  its ``ts`` (a watermark ``w`` allows more ticks at ``ts == w``), then emit it once;
  end-of-stream emits the rest. In a replay that is one batch of latency.
* **Conflation** (``conflate_ms: N`` on ``vwap_deviation_bps`` and ``spread_bps``;
  default 0 = off): per key, only the last of those rows in each epoch-aligned interval
  ``[i * N, (i + 1) * N)`` ms is emitted, with its own ``ts`` and value, once the
  watermark passes the interval's end. The conflated rows are therefore a subset of
  the unconflated ones (same ``ts``, same value), a fraction of them to store; the
  running state (session VWAP) still takes every tick. ``metadata`` gains
  ``"conflate_ms"``.
* **Quotes.** ``spread_bps`` takes every tick whose bid and ask are both present,
  finite and > 0, trades included: a LOBSTER execution row carries the book *after*
  the execution, which is a genuine top-of-book update (an execution that empties the
  best level moves the spread). Tardis trades carry no book and are not quotes.
* **Late ticks** (``ts`` < the watermark; for ``tick_rate_zscore``: in an interval
  already scored) are not applied, under either late policy: a signal row is what a
  consumer saw at that point of the stream, and re-deriving running state (session
  VWAP, rolling windows) from a late tick would silently rewrite later rows. Each is
  emitted on ``quarantine`` (reason ``late``) and counted. The bar engine's own late
  policy still applies to bars.
* **Corrected bars.** ``rsi`` and ``bollinger_pctb`` read rows with status
  ``confirmed`` and ``corrected`` of one timeframe (``forming`` rows are ignored). A
  corrected (or out-of-order) bar replaces that bar's close in a per-symbol history of
  at least the last ``history_bars`` bars, and the signal is recomputed from that bar to the
  newest and re-emitted (the store upserts in place). A correction older than the
  history is quarantined (reason ``correction_too_old``).
* ``score`` is a normalized strength where one is natural: RSI ``(rsi - 50) / 50`` in
  [-1, 1]; %b ``2 * %b - 1`` (-1 at the lower band, +1 at the upper); null otherwise.
* ``metadata`` is a JSON object per row with the parameters that produced it.
* Vectorized: per batch a few numpy passes, plus loops over the keys or intervals of
  the batch (never over ticks).
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from actors import indicators as ind
from actors.sessions import DEFAULT_SESSION, Session, SessionCalendar
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import Timeframe
from graph.schemas import BAR_CONFIRMED, BAR_CORRECTED, QUARANTINE, SIGNAL, quarantine_row, stream_source
from graph.timeframes import INTRADAY_NS

__all__ = [
    "VwapDeviationBps",
    "SpreadBps",
    "TickRateZScore",
    "Rsi",
    "BollingerPctB",
    "VwapDeviationParams",
    "SpreadParams",
    "TickRateParams",
    "RsiParams",
    "BollingerParams",
]

_NO_WATERMARK = int(np.iinfo(np.int64).min)
_TICK_COLUMNS = ("symbol", "ts", "provider", "seq")
_BAR_COLUMNS = ("symbol", "timeframe", "ts", "close", "status")


class _SignalParams(Params):
    """Params every signal kind has.

    Attributes:
        name: the ``signals.name`` of its rows; default derived from the kind and its
            parameters (``spread_bps``, ``rsi_14_1m``, ...). Two nodes writing the same
            table need different names.
    """

    name: str | None = Field(default=None, min_length=1, max_length=200)


class _ConflatedParams(_SignalParams):
    """Params of a tick signal that can be conflated.

    Attributes:
        conflate_ms: 0 (default): a row for every timestamp with a value. N > 0: per
            key, only the last row in each epoch-aligned N ms interval (a subset of the
            N = 0 rows: same ts, same value), emitted once the watermark passes the
            interval's end. At most one day (86,400,000).
    """

    conflate_ms: int = Field(default=0, ge=0, le=86_400_000)


class _Signal(Operator):
    """Common machinery: key ids, metadata, output batches, counters, checkpoints."""

    outputs: ClassVar[dict[str, pa.Schema]] = {"signals": SIGNAL, "quarantine": QUARANTINE}
    keyed: ClassVar[bool] = True
    _required: ClassVar[tuple[str, ...]] = _TICK_COLUMNS
    #: attributes that make up the state (``snapshot``/``restore``)
    _state: ClassVar[tuple[str, ...]] = ("_keys", "_key_ids", "_metadata", "_counts")

    def __init__(self, params: _SignalParams, ctx: OperatorContext) -> None:
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
        prov_names, prov_index = _encode(providers)
        sym_names, sym_index = _encode(symbols)
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
        return [("quarantine", pa.RecordBatch.from_pylist(rows, schema=QUARANTINE))] if rows else []

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


# ======================================================================================
# tick signals
# ======================================================================================


class _TickSignal(_Signal):
    """A signal computed on ticks: late-tick handling, sorting, last-per-timestamp, held rows.

    Subclasses implement :meth:`_select` (which ticks count, and the numeric columns
    needed, as numpy) and :meth:`_compute` (the value after each selected tick, rows in
    (key, ts, arrival) order). Only those columns are ever reordered; the batch itself
    is never filtered or copied.
    """

    _state = (*_Signal._state, "_watermark", "_held")

    def __init__(self, params: _SignalParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        # conflation interval (ns); 1 = none: one row per timestamp
        self._bucket_ns = max(1, getattr(params, "conflate_ms", 0) * 1_000_000)
        self._watermark = _NO_WATERMARK
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
        if self._watermark == _NO_WATERMARK:
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


def _count_pairs(kid: np.ndarray, interval: np.ndarray, keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (key, interval) pairs and their row counts, sorted by (key, interval).

    One ``np.bincount`` over ``key * span + interval offset`` when the batch spans few
    intervals (the usual case); a sort otherwise.
    """
    low = int(interval.min())
    span = int(interval.max()) - low + 1
    if span * keys <= 4 * len(kid) + 4096:
        counts = np.bincount(kid.astype(np.int64) * span + (interval - low), minlength=span * keys)
        pairs = np.flatnonzero(counts)
        return (pairs // span).astype(np.int32), pairs % span + low, counts[pairs]
    order = ind.sort_by_key_ts(kid, interval)
    if order is not None:
        kid, interval = kid[order], interval[order]
    starts = np.flatnonzero(np.r_[True, (kid[1:] != kid[:-1]) | (interval[1:] != interval[:-1])])
    return kid[starts], interval[starts], np.diff(np.r_[starts, len(kid)])


def _no_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64)


_ENCODED: list[tuple[pa.Array, list[str], np.ndarray]] = []  # the last few encodings, see _encode
#: Encodings remembered: the in-process transport hands a node up to ``pump_events`` (8)
#: batches before the next node sees them, two string columns each.
_ENCODED_KEEP = 32


def _same_buffers(a: pa.Array, b: pa.Array) -> bool:
    """Whether two arrays view the very same memory (addresses: the memo keeps ``a`` alive)."""
    return all(
        (x is None and y is None) or (x is not None and y is not None and x.address == y.address and x.size == y.size)
        for x, y in zip(a.buffers(), b.buffers())
    )


def _encode(column: pa.Array) -> tuple[list[str], np.ndarray]:
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


def _floats(column: pa.Array) -> np.ndarray:
    """A float64 column as numpy, nulls as NaN."""
    return column.to_numpy(zero_copy_only=False)


class SpreadParams(_ConflatedParams):
    """Params of ``spread_bps``: ``name`` and ``conflate_ms`` (see :class:`_ConflatedParams`)."""


class SpreadBps(_TickSignal):
    """``spread_bps``: quoted spread ``(ask - bid) / mid * 10,000`` on every tick with both sides.

    A tick counts as a quote update when bid and ask are both present, finite and > 0
    (a LOBSTER execution row included: it carries the book after the execution; see
    the module docstring). Stateless apart from the held last value per timestamp.
    """

    Params: ClassVar[type[Params]] = SpreadParams

    def __init__(self, params: SpreadParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._counts["quotes"] = 0

    @classmethod
    def default_name(cls, params: SpreadParams) -> str:
        """``spread_bps``."""
        return "spread_bps"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"unit": "bps", "mid": "(bid+ask)/2"}`` (+ ``"conflate_ms"`` when conflated)."""
        return {"unit": "bps", "mid": "(bid+ask)/2", **self._conflation()}

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        if "bid" not in batch.schema.names or "ask" not in batch.schema.names:
            return np.zeros(batch.num_rows, dtype=bool), {}
        bid, ask = _floats(batch.column("bid")), _floats(batch.column("ask"))
        with np.errstate(invalid="ignore"):
            quote = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
        quotes = int(quote.sum())
        self._counts["quotes"] += quotes
        return (None if quotes == batch.num_rows else quote), {"bid": bid, "ask": ask}

    def _compute(self, kid: np.ndarray, ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
        return ind.spread_bps(cols["bid"], cols["ask"])


class VwapDeviationParams(_ConflatedParams):
    """Params of ``vwap_deviation_bps``.

    Attributes:
        conflate_ms: see :class:`_ConflatedParams` (the VWAP still takes every trade).
        sessions: symbol -> :class:`~actors.sessions.Session` over which the VWAP
            accumulates (reset at each session open, local exchange time); the key
            ``"default"`` applies to unlisted symbols, else UTC 00:00-24:00 (crypto).
            Use the same sessions as the bar engine's ``1d`` bars.
    """

    sessions: dict[str, Session] = Field(default_factory=dict)

    def session_for(self, symbol: str) -> Session:
        """The session of ``symbol``: its own, else ``"default"``, else UTC 00:00-24:00."""
        return self.sessions.get(symbol) or self.sessions.get("default") or DEFAULT_SESSION


class VwapDeviationBps(_TickSignal):
    """``vwap_deviation_bps``: ``(price - VWAP) / VWAP * 10,000`` on every trade.

    VWAP = sum(price * size) / sum(size) over the trades of the current trading session
    so far, this trade included (Berkowitz, Logue & Noser 1988). The session is the
    symbol's :class:`~actors.sessions.Session` in its exchange time zone (DST-aware);
    the sums restart at each session open. Trades outside the session (pre/post market)
    get no value and do not enter the VWAP (counted ``outside_session``), as for ``1d``
    bars. Trades are rows with a price; non-finite or <= 0 prices and non-finite or
    negative sizes are skipped (``invalid``; the normalizer quarantines those before).
    Until the session has volume (only zero-size trades) the VWAP is undefined and no
    value is emitted (``undefined``).

    Sums run sequentially in (ts, arrival) order from the session open, carried across
    batches, so the value is independent of batching and equals a running
    ``Series.cumsum`` over the session's trades.
    """

    Params: ClassVar[type[Params]] = VwapDeviationParams
    _state = (*_TickSignal._state, "_session", "_cum_pv", "_cum_volume", "_key_calendar")

    def __init__(self, params: VwapDeviationParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._calendars: dict[Session, SessionCalendar] = {}
        self._calendar_list: list[SessionCalendar] = []
        self._key_calendar = np.empty(0, dtype=np.int32)  # key id -> index in _calendar_list
        self._session = np.empty(0, dtype=np.int64)  # key id -> open of the session summed (ns UTC)
        self._cum_pv = np.empty(0, dtype=np.float64)
        self._cum_volume = np.empty(0, dtype=np.float64)
        self._counts.update(trades=0, outside_session=0, invalid=0, undefined=0)

    @classmethod
    def default_name(cls, params: VwapDeviationParams) -> str:
        """``vwap_deviation_bps``."""
        return "vwap_deviation_bps"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"unit": "bps", "session": {"tz", "open", "close"}}`` (+ ``"conflate_ms"`` when conflated)."""
        return {"unit": "bps", "session": self.params.session_for(symbol).model_dump(), **self._conflation()}

    def _on_new_key(self, kid: int, key: tuple[str, str]) -> None:
        self._session = np.append(self._session, _NO_WATERMARK)
        self._cum_pv = np.append(self._cum_pv, 0.0)
        self._cum_volume = np.append(self._cum_volume, 0.0)
        session = self.params.session_for(key[1])
        if session not in self._calendars:
            self._calendars[session] = SessionCalendar(session)
            self._calendar_list.append(self._calendars[session])
        self._key_calendar = np.append(self._key_calendar, list(self._calendars).index(session)).astype(np.int32)

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot`; session calendars are rebuilt from the params."""
        super().restore(state)
        self._calendars = {}
        for _, symbol in self._keys:
            session = self.params.session_for(symbol)
            self._calendars.setdefault(session, SessionCalendar(session))
        self._calendar_list = list(self._calendars.values())
        sessions = list(self._calendars)
        self._key_calendar = np.array(
            [sessions.index(self.params.session_for(symbol)) for _, symbol in self._keys], dtype=np.int32
        )

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        price_column = batch.column("price") if "price" in batch.schema.names else None
        if price_column is None or price_column.null_count == batch.num_rows:
            return np.zeros(batch.num_rows, dtype=bool), {}
        price, size = _floats(price_column), _floats(batch.column("size"))
        trades = batch.num_rows - price_column.null_count
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(price) & (price > 0) & np.isfinite(size) & (size >= 0)
        used = int(valid.sum())
        self._counts["trades"] += trades
        self._counts["invalid"] += trades - used  # a trade row (price set) that fails the checks
        return (None if used == batch.num_rows else valid), {"price": price, "size": size}

    def _compute(self, kid: np.ndarray, ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
        price, size = cols["price"], cols["size"]
        opens = np.empty(len(ts), dtype=np.int64)
        in_session = np.empty(len(ts), dtype=bool)
        which = self._key_calendar[kid]
        for index, calendar in enumerate(self._calendar_list):  # per distinct session (usually 1 or 2)
            rows = which == index
            if rows.all():
                opens, _, in_session = calendar.locate(ts)
            elif rows.any():
                opens[rows], _, in_session[rows] = calendar.locate(ts[rows])
        value = np.full(len(ts), np.nan)
        self._counts["outside_session"] += int((~in_session).sum())
        rows = np.flatnonzero(in_session)
        if len(rows) == 0:
            return value
        k, o, p, s = kid[rows], opens[rows], price[rows], size[rows]
        starts = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (o[1:] != o[:-1])])
        group_key, group_open = k[starts], o[starts]
        continuing = self._session[group_key] == group_open  # same session as the carried sums
        cum_pv = ind.session_cumsum(p * s, starts, np.where(continuing, self._cum_pv[group_key], 0.0))
        cum_volume = ind.session_cumsum(s, starts, np.where(continuing, self._cum_volume[group_key], 0.0))
        deviation = ind.vwap_deviation_bps(p, cum_pv, cum_volume)
        self._counts["undefined"] += int(np.count_nonzero(cum_volume == 0))
        value[rows] = deviation
        ends = np.r_[starts[1:], len(k)] - 1  # last row of each group; a key's last group is its newest session
        self._session[group_key] = group_open
        self._cum_pv[group_key] = cum_pv[ends]
        self._cum_volume[group_key] = cum_volume[ends]
        return value


class TickRateParams(_SignalParams):
    """Params of ``tick_rate_zscore``.

    Attributes:
        interval: counting interval, an intraday timeframe (``1s 1m 5m 15m 1h``),
            epoch-aligned like bars.
        window: number of preceding intervals in the rolling mean and sd, >= 2.
        ticks: which ticks count: ``all``, ``trades`` (price set) or ``quotes`` (price null).
    """

    interval: Timeframe = "1s"
    window: int = Field(default=60, ge=2, le=1_000_000)
    ticks: Literal["all", "trades", "quotes"] = "all"

    @field_validator("interval")
    @classmethod
    def _intraday(cls, value: str) -> str:
        if value not in INTRADAY_NS:
            raise ValueError(f"{value!r} is not an intraday interval ({', '.join(INTRADAY_NS)})")
        return value


class TickRateZScore(_TickSignal):
    """``tick_rate_zscore``: ticks per interval against the rolling mean and sd of the intervals before.

    Ticks are counted per key in epoch-aligned intervals ``[i * L, (i + 1) * L)``. An
    interval is final when the watermark reaches its end (or at end-of-stream); then
    ``z = (count - mean) / sd`` with the mean and sample sd (ddof 1) of the counts of
    the ``window`` intervals before it, empty intervals counting 0 (Chandola et al.
    2009; :func:`~actors.indicators.rolling_zscore`). A value is emitted, at ``ts`` =
    the interval's open time, for each interval with at least one tick, once the key
    has ``window`` intervals of history (its first tick opens the history: earlier
    intervals are unknown, not empty); sd == 0 gives no value (``undefined``). A tick
    in an interval already final is late (quarantined).
    """

    Params: ClassVar[type[Params]] = TickRateParams
    _state = (*_TickSignal._state, "_open", "_first", "_history")

    def __init__(self, params: TickRateParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._interval_ns = INTRADAY_NS[params.interval]
        empty_i = np.empty(0, dtype=np.int64)
        self._open = (np.empty(0, dtype=np.int32), empty_i, empty_i)  # (key, interval, count) sorted
        self._first = np.empty(0, dtype=np.int64)  # key id -> first interval with a tick
        self._history = (np.empty(0, dtype=np.int32), empty_i, empty_i)  # recent final (key, interval, count)
        self._counts.update(intervals=0, undefined=0, warming_up=0)

    @classmethod
    def default_name(cls, params: TickRateParams) -> str:
        """``tick_rate_zscore_<interval>_<window>`` (``tick_rate_zscore_1s_60``)."""
        suffix = "" if params.ticks == "all" else f"_{params.ticks}"
        return f"tick_rate_zscore_{params.interval}_{params.window}{suffix}"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"interval", "window", "ticks", "ddof": 1}``."""
        p = self.params
        return {"interval": p.interval, "window": p.window, "ticks": p.ticks, "ddof": 1}

    def _on_new_key(self, kid: int, key: tuple[str, str]) -> None:
        self._first = np.append(self._first, np.iinfo(np.int64).max)

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        if self.params.ticks == "all":
            return None, {}
        trade = batch.column("price").is_valid().to_numpy(zero_copy_only=False)
        return (trade if self.params.ticks == "trades" else ~trade), {}

    def _late_mask(self, ts: np.ndarray) -> np.ndarray:
        return ts // self._interval_ns < self._watermark // self._interval_ns  # interval already final

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Count the batch's ticks into the open intervals.

        Returns:
            ``quarantine`` rows for ticks in intervals already final, if any.
        """
        self._check_columns(stream, batch)
        self._counts["rows_in"] += batch.num_rows
        if batch.num_rows == 0:
            return []
        mask, _ = self._select(batch)
        if mask is not None and not mask.any():
            return []
        ts = batch.column("ts").to_numpy()
        mask, late = self._split_late(batch, ts, mask)
        kid = self._codes(batch.column("provider"), batch.column("symbol"))
        interval = ts // self._interval_ns
        if mask is not None:
            rows = np.flatnonzero(mask)
            kid, interval = kid[rows], interval[rows]
        if len(kid):
            new = _count_pairs(kid, interval, len(self._keys))
            np.minimum.at(self._first, new[0], new[1])
            open_kid, open_interval, open_count = self._open
            if len(open_kid):
                kid = np.concatenate([open_kid, new[0]])
                interval = np.concatenate([open_interval, new[1]])
                weight = np.concatenate([open_count, new[2]])
                order = ind.sort_by_key_ts(kid, interval)
                if order is not None:
                    kid, interval, weight = kid[order], interval[order], weight[order]
                starts = np.flatnonzero(np.r_[True, (kid[1:] != kid[:-1]) | (interval[1:] != interval[:-1])])
                new = (kid[starts], interval[starts], np.add.reduceat(weight, starts))
            self._open = new
        return self._quarantine(late)

    def _release(self, watermark: int | None) -> list[Emit]:
        kid, interval, count = self._open
        final = np.ones(len(kid), dtype=bool) if watermark is None else interval < watermark // self._interval_ns
        if not final.any():
            return []
        self._open = (kid[~final], interval[~final], count[~final])
        kid, interval, count = kid[final], interval[final], count[final]
        self._counts["intervals"] += len(kid)
        window = self.params.window
        # history (older final intervals) then the newly final ones, grouped by key
        old_kid, old_interval, old_count = self._history
        all_kid = np.concatenate([old_kid, kid])
        all_interval = np.concatenate([old_interval, interval])
        all_count = np.concatenate([old_count, count])
        target = np.r_[np.zeros(len(old_kid), dtype=bool), np.ones(len(kid), dtype=bool)]
        order = ind.sort_by_key_ts(all_kid, all_interval)
        if order is not None:
            all_kid, all_interval, all_count, target = all_kid[order], all_interval[order], all_count[order], target[order]
        targets = np.flatnonzero(target)
        z = ind.rolling_zscore(all_kid, all_interval, all_count, targets, window)
        scored_kid, scored_interval = all_kid[targets], all_interval[targets]
        warm = scored_interval - window >= self._first[scored_kid]
        keep = warm & np.isfinite(z)
        self._counts["warming_up"] += int((~warm).sum())
        self._counts["undefined"] += int((warm & ~keep).sum())
        # keep what later windows need: per key, the intervals after its newest final one - window
        newest = np.full(len(self._keys), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(newest, kid, interval)
        recent = all_interval > newest[all_kid] - window
        self._history = (all_kid[recent], all_interval[recent], all_count[recent])
        return self._signals(scored_kid[keep], scored_interval[keep] * self._interval_ns, z[keep], None)


# ======================================================================================
# bar signals
# ======================================================================================


class _BarSignalParams(_SignalParams):
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
    def _history_covers_period(self) -> _BarSignalParams:
        if self.history_bars <= self.period:
            raise ValueError(f"history_bars ({self.history_bars}) must be > period ({self.period})")
        return self


class _BarSignal(_Signal):
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

    _required = _BAR_COLUMNS
    _state = (*_Signal._state, "_cols", "_length", "_pruned")
    _aux: ClassVar[tuple[str, ...]] = ()  # per-bar state columns, float64

    def __init__(self, params: _BarSignalParams, ctx: OperatorContext) -> None:
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
        close = _floats(bars.column("close"))
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
    return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0), np.empty(0)


class RsiParams(_BarSignalParams):
    """Params of ``rsi``.

    Attributes:
        seed: how the smoothed averages start (all three then follow Wilder's
            recurrence and converge: a seed's weight decays as (1 - 1/period)^n).
            ``zero`` (default): the symbol's first bar counts as a zero change and
            values start at its ``period``-th bar: the ``ta`` library's ``RSIIndicator``
            (its ``diff.where(diff > 0, 0.0)`` turns the first, undefined change into
            0, then ``ewm(alpha=1/period, adjust=False, min_periods=period)``);
            ``first``: from the first real change, values from the ``period``-th
            change on (pandas-ta's RMA); ``sma``: Wilder's 1978 original and TA-Lib's,
            the simple mean of the first ``period`` changes, values from then on.
    """

    seed: Literal["zero", "first", "sma"] = "zero"


class Rsi(_BarSignal):
    """``rsi``: Wilder's Relative Strength Index of the bar closes (J. W. Wilder, 1978).

    With ``d = close - previous close``, gains ``max(d, 0)`` and losses ``max(-d, 0)``
    are smoothed with Wilder's smoothing (``avg = avg + (x - avg) / period``,
    :func:`~actors.indicators.ewm_recurrence`); ``RSI = 100 - 100 / (1 + avg_gain /
    avg_loss)``, 100 when avg_loss is 0. How the averages start and where the first
    value is depends on ``seed`` (:class:`RsiParams`). ``score = (rsi - 50) / 50``.
    """

    Params: ClassVar[type[Params]] = RsiParams
    _aux = ("changes", "avg_gain", "avg_loss")

    @classmethod
    def default_name(cls, params: RsiParams) -> str:
        """``rsi_<period>_<timeframe>`` (``rsi_14_1m``); ``_<seed>`` appended for a non-default seed."""
        return f"rsi_{params.period}_{params.timeframe}" + ("" if params.seed == "zero" else f"_{params.seed}")

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"period", "timeframe", "smoothing": "wilder", "seed"}``."""
        p = self.params
        return {"period": p.period, "timeframe": p.timeframe, "smoothing": "wilder", "seed": p.seed}

    def _recompute(self, h: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, np.ndarray]:
        period = self.params.period
        close = h["close"]
        if start == 0:  # the symbol's first bar: no change (seed zero: a zero change)
            seed = 0.0 if self.params.seed == "zero" else np.nan
            h["changes"][0], h["avg_gain"][0], h["avg_loss"][0] = 0, seed, seed
            first = 1
        else:
            first = start
        if first < len(close):
            d = close[first:] - close[first - 1 : -1]
            gain, loss = np.maximum(d, 0.0), np.maximum(-d, 0.0)
            changes = h["changes"][first - 1] + np.arange(1, len(d) + 1)
            h["changes"][first:] = changes
            prev_gain, prev_loss = h["avg_gain"][first - 1], h["avg_loss"][first - 1]
            h["avg_gain"][first:] = self._smooth(gain, changes, prev_gain)
            h["avg_loss"][first:] = self._smooth(loss, changes, prev_loss)
        changes = h["changes"][start:]
        rsi = ind.rsi_from_averages(h["avg_gain"][start:], h["avg_loss"][start:])
        needed = period - 1 if self.params.seed == "zero" else period
        rsi = np.where(changes >= needed, rsi, np.nan)
        return rsi, (rsi - 50.0) / 50.0

    def _step(self, key: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        period, alpha = self.params.period, 1.0 / self.params.period
        cols, seed = self._cols, self.params.seed
        first = position == 0
        before = np.maximum(position - 1, 0)
        change = cols["close"][key, position] - cols["close"][key, before]
        changes = np.where(first, 0.0, cols["changes"][key, before] + 1.0)
        averages = []
        for name, x in (("avg_gain", np.maximum(change, 0.0)), ("avg_loss", np.maximum(-change, 0.0))):
            previous = cols[name][key, before]
            with np.errstate(invalid="ignore"):
                smooth = (1.0 - alpha) * previous + alpha * x  # Wilder: y + (x - y) / period
                if seed == "first":
                    smooth = np.where(changes == 1, x, smooth)
                elif seed == "sma":  # running mean of the first `period` changes
                    mean = np.where(changes == 1, x, (previous * (changes - 1) + x) / np.maximum(changes, 1))
                    smooth = np.where(changes <= period, mean, smooth)
            average = np.where(first, 0.0 if seed == "zero" else np.nan, smooth)
            cols[name][key, position] = average
            averages.append(average)
        cols["changes"][key, position] = changes
        needed = period - 1 if seed == "zero" else period
        rsi = np.where(changes >= needed, ind.rsi_from_averages(*averages), np.nan)
        return rsi, (rsi - 50.0) / 50.0

    def _smooth(self, x: np.ndarray, changes: np.ndarray, previous: float) -> np.ndarray:
        """Smoothed averages after each change; ``changes`` = 1-based change count of each x."""
        period, alpha = self.params.period, 1.0 / self.params.period
        if self.params.seed == "zero":
            return ind.ewm_recurrence(x, alpha, float(previous))
        if self.params.seed == "first":
            return ind.ewm_recurrence(x, alpha, None if changes[0] == 1 else float(previous))
        # sma seed: running mean of the first `period` changes, then Wilder's recurrence
        out = np.empty(len(x))
        warm = changes <= period
        if warm.any():
            prior = 0.0 if changes[0] == 1 else float(previous) * (changes[0] - 1)
            out[warm] = (prior + np.cumsum(x[warm])) / changes[warm]
        if not warm.all():
            rest = np.flatnonzero(~warm)
            before = out[rest[0] - 1] if rest[0] > 0 else float(previous)
            out[rest] = ind.ewm_recurrence(x[rest], alpha, before)
        return out


class BollingerParams(_BarSignalParams):
    """Params of ``bollinger_pctb``.

    Attributes:
        period: bars in the moving window (default 20).
        num_std: band half-width in standard deviations (default 2).
    """

    period: int = Field(default=20, ge=2, le=100_000)
    num_std: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class BollingerPctB(_BarSignal):
    """``bollinger_pctb``: where the close sits within the Bollinger Bands (J. Bollinger, 2001).

    Over the last ``period`` closes (this one included): mean ``m`` and population sd
    ``s``; bands ``m +/- num_std * s``; ``%b = (close - lower) / (upper - lower)`` (0 at
    the lower band, 1 at the upper, outside [0, 1] beyond them). The first value is at
    the symbol's ``period``-th bar; no value while ``s == 0`` (``undefined``).
    ``score = 2 * %b - 1``.
    """

    Params: ClassVar[type[Params]] = BollingerParams

    @classmethod
    def default_name(cls, params: BollingerParams) -> str:
        """``bollinger_pctb_<period>_<num_std>_<timeframe>`` (``bollinger_pctb_20_2_1m``)."""
        return f"bollinger_pctb_{params.period}_{params.num_std:g}_{params.timeframe}"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"period", "num_std", "timeframe", "ddof": 0}``."""
        p = self.params
        return {"period": p.period, "num_std": p.num_std, "timeframe": p.timeframe, "ddof": 0}

    def _min_restart(self) -> int:
        return self.params.period - 1  # the window before the corrected bar must be kept

    def _step(self, key: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        period = self.params.period
        value = np.full(len(key), np.nan)
        full = position >= period - 1  # a whole window of closes is kept
        if full.any():
            k, p = key[full], position[full]
            windows = self._cols["close"][k[:, None], p[:, None] + np.arange(1 - period, 1)]
            value[full] = ind.pctb_of_windows(windows, self.params.num_std)
        return value, 2.0 * value - 1.0

    def _recompute(self, h: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, np.ndarray]:
        period = self.params.period
        close = h["close"]
        n_new = len(close) - start
        value = np.full(n_new, np.nan)
        first = max(start, period - 1)  # first position with a full window
        if first < len(close):
            value[first - start :] = ind.bollinger_pctb(close[first - period + 1 :], period, self.params.num_std)
        return value, 2.0 * value - 1.0
