"""The bar engine (node kind ``bars``): per-symbol OHLCV bars from TICK batches.

Semantics:
    * Trades are TICK rows with a non-null ``price``; quote ticks (null price) update
      no bar and are only counted.
    * Intraday timeframes (``1s 1m 5m 15m 1h``) are aligned to the Unix epoch:
      bar ``ts = floor(tick ts / tf) * tf`` and the bar covers ``[ts, ts + tf)``.
      ``1d`` is the trading session of the symbol's local date
      (:mod:`actors.sessions`): ``ts`` = session open, end = session close, both
      ns UTC; trades outside the session are in intraday bars but in no ``1d`` bar.
    * ``open``/``close`` are the prices of the trades with the smallest/largest
      ``(ts, seq, price)``, so the arrival order of ticks never changes a bar.
    * ``vwap = sum(price * size) / sum(size)`` (Berkowitz, Logue & Noser, "The Total
      Cost of Transactions on the NYSE", J. Finance 43(1), 1988); when the bar's
      volume is 0 (only zero-size trades) ``vwap = close``. It is clipped to
      ``[low, high]`` to absorb rounding.
    * A watermark ``w`` confirms every open bar whose end ``<= w``: it is emitted
      once with status ``confirmed`` and dropped from state. End-of-stream confirms
      every open bar.
    * A trade whose bar in some timeframe ended at or before the last watermark is a
      *late tick* for that timeframe: it is not applied there, it goes to the
      ``quarantine`` stream (reason ``late``, one row per tick naming the late
      timeframes) and is counted. It still updates the timeframes for which it is
      not late. As in Flink's window operator, a trade behind the watermark whose
      bar is still open is simply applied (counted as ``behind_watermark``): only
      confirmed bars are final. The policy lives in ``BarEngine._late_rows``, ready
      for an ``amend`` policy (update the confirmed bar and emit a correction).
    * Malformed trades (non-finite price or size, negative size, ts outside
      1698-2242) are quarantined as ``invalid_trade``.
    * With ``emit_forming``, every watermark emits, after the bars it confirms, one
      ``forming`` row per bar touched since the previous watermark and still open
      (current values). Deferring them to the watermark that follows each batch
      means a bar confirmed by that same watermark is sent once, not twice: in a
      burst replay this halves the bar traffic. A graph whose source sends no
      watermarks sees no forming rows (only end-of-stream confirmations).
    * Every emitted batch is sorted by (symbol, timeframe in ``TIMEFRAMES`` order, ts).

Implementation: no per-tick Python. A batch is sorted once by (symbol id, ts, seq,
price); the finest intraday timeframe is reduced from ticks with ``ufunc.reduceat``
over contiguous groups, each coarser one from the previous timeframe's partial bars
(epoch-aligned timeframes nest), ``1d`` from the in-session ticks. Open bars live per
timeframe as parallel numpy arrays sorted by a packed (symbol id, bar second) int64
key; a batch's partial bars are merged into them with ``np.searchsorted`` and
vectorised pairwise combines.

Volume and ``pv`` are float64 sums: re-batching the same ticks may change their last
bits (float addition is not associative); ``open``, ``high``, ``low``, ``close``,
``trade_count`` and ``ts`` never change.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from actors.sessions import DEFAULT_SESSION, Session, SessionCalendar
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import Timeframe
from graph.schemas import BAR, BAR_CONFIRMED, BAR_FORMING, QUARANTINE, stream_source
from graph.timeframes import DAILY, INTRADAY_NS, TIMEFRAMES

__all__ = ["BarEngine", "BarParams", "Session"]

_TF_INDEX = {tf: i for i, tf in enumerate(TIMEFRAMES)}
_TF_NAMES = pa.array(TIMEFRAMES)
_NO_WATERMARK = int(np.iinfo(np.int64).min)
_END_OF_STREAM = int(np.iinfo(np.int64).max)
_SNAPSHOT_VERSION = 1

_INTRADAY = list(INTRADAY_NS.items())
# Each coarser intraday timeframe is built from the next finer one's bars: they must nest.
assert all(b % a == 0 for (_, a), (_, b) in zip(_INTRADAY, _INTRADAY[1:]))

# Sort keys pack (major, bar open second) into one int64: major << 34 | (second + 2**33).
# Bar open times are whole seconds (intraday bars are >= 1 s and epoch-aligned; session
# boundaries are whole seconds), so the key is unique per bar. Trades must lie within
# 2**33 s (272 years) of the epoch; others are quarantined as invalid.
_KEY_SHIFT = 34
_KEY_OFFSET_S = 1 << 33
_NS_PER_S = 1_000_000_000
_TS_MIN = (-_KEY_OFFSET_S + 2 * 86_400) * _NS_PER_S
_TS_MAX = (_KEY_OFFSET_S - 2 * 86_400) * _NS_PER_S


class BarParams(Params):
    """Params of a ``bars`` node.

    Attributes:
        timeframes: bar lengths to build (``1s 1m 5m 15m 1h 1d``); non-empty, no
            duplicates; default all six.
        sessions: symbol -> :class:`~actors.sessions.Session` for ``1d`` bars; the
            key ``"default"`` applies to symbols not listed (else UTC 00:00-24:00).
        emit_forming: on each watermark, emit the bars touched since the previous one
            that are still open, with status ``forming``.
    """

    timeframes: list[Timeframe] = Field(default_factory=lambda: list(TIMEFRAMES), min_length=1)
    sessions: dict[str, Session] = Field(default_factory=dict)
    emit_forming: bool = True

    @field_validator("timeframes")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        repeated = sorted({tf for tf in value if value.count(tf) > 1}, key=_TF_INDEX.__getitem__)
        if repeated:
            raise ValueError(f"timeframes must be unique, got {', '.join(repeated)} more than once")
        return value

    def session_for(self, symbol: str) -> Session:
        """The session of ``symbol``: its own, else ``"default"``, else UTC 00:00-24:00."""
        return self.sessions.get(symbol) or self.sessions.get("default") or DEFAULT_SESSION


# --------------------------------------------------------------------------- kernels
def _pack(major: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """One sortable int64 key per row of (major < 2**28, ts int64 ns at whole seconds)."""
    return (major.astype(np.int64) << _KEY_SHIFT) + (ts // _NS_PER_S + _KEY_OFFSET_S)


class _Bars(NamedTuple):
    """Bars as parallel 1-D arrays, one row per bar, sorted by (symbol, ts) unless noted.

    Besides OHLCV each bar keeps the (ts, seq) of its opening and closing trades and
    ``pv = sum(price * size)``, so that two partial bars of one key merge exactly.
    """

    symbol: np.ndarray  # int32 engine symbol id
    ts: np.ndarray  # int64 ns UTC, bar open time
    end: np.ndarray  # int64 ns UTC, bar end (exclusive)
    open: np.ndarray  # float64
    open_ts: np.ndarray  # int64 ns UTC of the opening trade
    open_seq: np.ndarray  # int64
    high: np.ndarray  # float64
    low: np.ndarray  # float64
    close: np.ndarray  # float64
    close_ts: np.ndarray  # int64 ns UTC of the closing trade
    close_seq: np.ndarray  # int64
    volume: np.ndarray  # float64, sum(size)
    pv: np.ndarray  # float64, sum(price * size)
    trade_count: np.ndarray  # int64

    @property
    def size(self) -> int:
        """Number of bars."""
        return len(self.ts)

    def take(self, index: np.ndarray) -> _Bars:
        """Rows at ``index`` (int positions or bool mask), as new arrays."""
        return _Bars(*(column[index] for column in self))

    @classmethod
    def empty(cls) -> _Bars:
        """No bars."""
        return cls(*(np.empty(0, dtype=dtype) for dtype in _BAR_DTYPES))


_BAR_DTYPES = [np.int32, np.int64, np.int64, np.float64, np.int64, np.int64, np.float64]
_BAR_DTYPES += [np.float64, np.float64, np.int64, np.int64, np.float64, np.float64, np.int64]
_OPEN_FIELDS = ("open", "open_ts", "open_seq")
_CLOSE_FIELDS = ("close", "close_ts", "close_seq")


class _Columns(NamedTuple):
    """Per-row inputs of a reduction: ticks (open = high = low = close = price) or bars."""

    open: np.ndarray
    open_ts: np.ndarray
    open_seq: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    close_ts: np.ndarray
    close_seq: np.ndarray
    volume: np.ndarray
    pv: np.ndarray
    trade_count: np.ndarray | None  # None: one trade per row

    @classmethod
    def of_ticks(cls, ts: np.ndarray, seq: np.ndarray, price: np.ndarray, size: np.ndarray) -> _Columns:
        """Trades as one-trade bars."""
        return cls(price, ts, seq, price, price, price, ts, seq, size, price * size, None)

    @classmethod
    def of_bars(cls, bars: _Bars) -> _Columns:
        """Partial bars, to be reduced to a coarser timeframe."""
        return cls(*(getattr(bars, name) for name in cls._fields))


class _Trades(NamedTuple):
    """The valid trades of one batch as parallel arrays, shape (n,)."""

    symbol: np.ndarray  # int32 engine symbol id
    ts: np.ndarray  # int64 ns UTC
    seq: np.ndarray  # int64
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    row: np.ndarray  # int64 row in the batch's trades, for quarantine text

    def take(self, index: np.ndarray) -> _Trades:
        """Rows at ``index`` (int positions or bool mask), as new arrays."""
        return _Trades(*(column[index] for column in self))

    def is_sorted(self) -> bool:
        """Whether rows are in non-decreasing (symbol, ts, seq, price) order."""
        if np.any(self.symbol[1:] < self.symbol[:-1]):
            return False
        tie = self.symbol[1:] == self.symbol[:-1]
        for column in (self.ts, self.seq, self.price):
            if np.any(tie & (column[1:] < column[:-1])):
                return False
            tie &= column[1:] == column[:-1]
            if not tie.any():
                return True
        return True

    def sorted(self, symbols: int) -> _Trades:
        """Rows in (symbol, ts, seq, price) order; ``symbols`` = number of symbol ids.

        Feeds are usually time-ordered per symbol, so a stable radix sort by symbol
        suffices; otherwise a full ``lexsort``.
        """
        if self.is_sorted():
            return self
        narrow = self.symbol.astype(np.uint16) if symbols <= 1 << 16 else self.symbol
        by_symbol = self.take(np.argsort(narrow, kind="stable"))
        if by_symbol.is_sorted():
            return by_symbol
        return self.take(np.lexsort((self.price, self.seq, self.ts, self.symbol)))


def _group_starts(symbol: np.ndarray, bar_ts: np.ndarray) -> np.ndarray:
    """Start index of each run of equal (symbol, bar_ts) in rows sorted by (symbol, bar_ts)."""
    change = np.empty(len(bar_ts), dtype=bool)
    change[0] = True
    np.not_equal(bar_ts[1:], bar_ts[:-1], out=change[1:])
    change[1:] |= symbol[1:] != symbol[:-1]
    return np.flatnonzero(change)


def _reduce(cols: _Columns, symbol: np.ndarray, bar_ts: np.ndarray, starts: np.ndarray) -> _Bars:
    """One bar per contiguous group: rows ``starts[i]:starts[i+1]`` form bar ``i``.

    Rows must be in (ts, seq, price) order within each group, so that a group's
    first row holds its open and its last row its close. ``end`` is left equal to
    ``ts``; the caller replaces it.
    """
    n = len(bar_ts)
    last = np.empty_like(starts)
    last[:-1] = starts[1:] - 1
    last[-1] = n - 1
    ts = bar_ts[starts]
    return _Bars(
        symbol=symbol[starts],
        ts=ts,
        end=ts,
        open=cols.open[starts],
        open_ts=cols.open_ts[starts],
        open_seq=cols.open_seq[starts],
        high=np.maximum.reduceat(cols.high, starts),
        low=np.minimum.reduceat(cols.low, starts),
        close=cols.close[last],
        close_ts=cols.close_ts[last],
        close_seq=cols.close_seq[last],
        volume=np.add.reduceat(cols.volume, starts),
        pv=np.add.reduceat(cols.pv, starts),
        trade_count=(
            np.diff(starts, append=n)
            if cols.trade_count is None
            else np.add.reduceat(cols.trade_count, starts)
        ),
    )


def _precedes(a: _Bars, a_side: str, b: _Bars, b_side: str) -> np.ndarray:
    """Elementwise whether a's ``a_side`` trade comes before b's ``b_side`` trade.

    ``*_side`` is ``"open"`` or ``"close"``; trades are ordered by (ts, seq, price).
    """
    ts_a, seq_a, price_a = (getattr(a, a_side + suffix) for suffix in ("_ts", "_seq", ""))
    ts_b, seq_b, price_b = (getattr(b, b_side + suffix) for suffix in ("_ts", "_seq", ""))
    return (ts_a < ts_b) | ((ts_a == ts_b) & ((seq_a < seq_b) | ((seq_a == seq_b) & (price_a < price_b))))


def _combine(old: _Bars, new: _Bars) -> _Bars:
    """Merge two partial bars of the same keys, row by row."""
    new_opens = _precedes(new, "open", old, "open")
    new_closes = _precedes(old, "close", new, "close")
    merged = {name: np.where(new_opens, getattr(new, name), getattr(old, name)) for name in _OPEN_FIELDS}
    merged.update(
        {name: np.where(new_closes, getattr(new, name), getattr(old, name)) for name in _CLOSE_FIELDS}
    )
    return old._replace(
        **merged,
        high=np.maximum(old.high, new.high),
        low=np.minimum(old.low, new.low),
        volume=old.volume + new.volume,
        pv=old.pv + new.pv,
        trade_count=old.trade_count + new.trade_count,
    )


def _merge(state: _Bars, new: _Bars) -> tuple[_Bars, _Bars]:
    """Merge partial bars ``new`` into open bars ``state``.

    Both are sorted by (symbol, ts) with unique keys. Returns the new state, sorted
    likewise, and the merged values of the ``new`` keys (the touched bars, in the
    order of ``new``). Updates the arrays of ``state`` and ``new`` in place (``new``
    is consumed).
    """
    if state.size == 0:
        return new, new
    state_key = _pack(state.symbol, state.ts)
    new_key = _pack(new.symbol, new.ts)
    position = np.searchsorted(state_key, new_key)
    hit = state_key[np.minimum(position, state.size - 1)] == new_key
    if hit.any():
        at = position[hit]
        combined = _combine(state.take(at), new.take(hit))
        for state_column, new_column, value in zip(state, new, combined):
            state_column[at] = value
            new_column[hit] = value
    miss = np.flatnonzero(~hit)
    if len(miss):
        # Interleave the new keys into the sorted state: one scatter per column.
        before = position[miss]  # state row each new key goes before
        new_rows = before + np.arange(len(miss))
        state_rows = np.arange(state.size) + np.searchsorted(before, np.arange(state.size), side="right")
        merged = []
        for state_column, new_column in zip(state, new):
            column = np.empty(state.size + len(miss), dtype=state_column.dtype)
            column[state_rows] = state_column
            column[new_rows] = new_column[miss]
            merged.append(column)
        state = _Bars(*merged)
    return state, new


def _floats(column: pa.Array) -> np.ndarray:
    """A float64 column as numpy, nulls as NaN."""
    return column.to_numpy(zero_copy_only=False)


def _iso(ts: int) -> str:
    """``ts`` (int ns UTC) as ISO-8601 with nanoseconds, e.g. ``2012-06-21T13:30:00.5Z``."""
    if ts in (_NO_WATERMARK, _END_OF_STREAM):
        return "end-of-stream" if ts == _END_OF_STREAM else "none"
    seconds, nanos = divmod(int(ts), _NS_PER_S)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{nanos:09d}".rstrip("0").rstrip(".") + "Z"


# --------------------------------------------------------------------------- operator
class BarEngine(Operator):
    """Per-symbol OHLCV bars of several timeframes, confirmed by watermarks.

    Input: TICK batches on any stream, many symbols per batch, any order. Outputs:
    ``bars`` (BAR schema) and ``quarantine`` (QUARANTINE schema: late and malformed
    trades). See the module docstring for the exact semantics.

    Args:
        params: a :class:`BarParams`.
        ctx: the host context; ``ctx.node_id`` is the ``source`` of quarantine rows.
    """

    Params: ClassVar[type[BarParams]] = BarParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"bars": BAR, "quarantine": QUARANTINE}
    keyed: ClassVar[bool] = True  # per-symbol state: shards need a ``key`` (symbol)

    def __init__(self, params: BarParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        chosen = sorted(params.timeframes, key=_TF_INDEX.__getitem__)
        self._timeframes = [_TF_INDEX[tf] for tf in chosen]
        self._intraday = [(_TF_INDEX[tf], INTRADAY_NS[tf]) for tf in chosen if tf in INTRADAY_NS]
        self._daily = _TF_INDEX[DAILY] if DAILY in chosen else None
        self._calendars: dict[Session, SessionCalendar] = {}
        self._reset()

    # ------------------------------------------------------------------ symbols
    def _reset(self) -> None:
        self._open_bars = {tf: _Bars.empty() for tf in self._timeframes}
        self._touched: dict[int, list[np.ndarray]] = {}  # tf -> packed keys touched since the last watermark
        self._symbols: list[str] = []
        self._symbol_ids: dict[str, int] = {}
        self._watermark = _NO_WATERMARK
        self._counts = {
            "trades": 0,
            "quotes": 0,
            "invalid": 0,
            "behind_watermark": 0,
            "late": 0,
            "outside_session": 0,
        }
        self._confirmed = np.zeros((0, len(TIMEFRAMES)), dtype=np.int64)
        self._late = np.zeros((0, len(TIMEFRAMES)), dtype=np.int64)
        self._refresh_symbols()

    def _refresh_symbols(self) -> None:
        """Rebuild the per-symbol lookup arrays after symbols were registered."""
        n = len(self._symbols)
        self._symbol_names = pa.array(self._symbols, type=pa.string())
        self._name_rank = np.empty(n, dtype=np.int64)
        self._name_rank[sorted(range(n), key=self._symbols.__getitem__)] = np.arange(n)
        sessions = [self.params.session_for(name) for name in self._symbols]
        for session in sessions:
            if session not in self._calendars:
                self._calendars[session] = SessionCalendar(session)
        self._calendar_list = list(self._calendars.values())
        index = {session: i for i, session in enumerate(self._calendars)}
        self._symbol_calendar = np.array([index[s] for s in sessions], dtype=np.int32)
        grow = np.zeros((n - len(self._confirmed), len(TIMEFRAMES)), dtype=np.int64)
        self._confirmed = np.concatenate([self._confirmed, grow])
        self._late = np.concatenate([self._late, grow])

    def _symbol_codes(self, column: pa.Array) -> np.ndarray:
        """Engine symbol ids (int32, shape (n,)) of a string or dictionary column."""
        encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        names = encoded.dictionary.to_pylist()
        new = [name for name in names if name not in self._symbol_ids]
        if new:
            for name in new:
                self._symbol_ids[name] = len(self._symbols)
                self._symbols.append(name)
            self._refresh_symbols()
        lookup = np.array([self._symbol_ids[name] for name in names], dtype=np.int32)
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    # ------------------------------------------------------------------ hooks
    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Apply a TICK batch to the open bars.

        Args:
            stream: input stream name (ignored: every input carries ticks).
            batch: TICK schema, any order, any symbols.

        Returns:
            ``quarantine`` (late or malformed trades) when non-empty. Touched bars are
            remembered and emitted as ``forming`` by the next :meth:`on_watermark`.
        """
        price_column = batch.column("price")
        trades = batch.filter(price_column.is_valid()) if price_column.null_count else batch
        self._counts["quotes"] += batch.num_rows - trades.num_rows
        self._counts["trades"] += trades.num_rows
        if trades.num_rows == 0:
            return []
        ticks, quarantine = self._valid_trades(trades)
        touched: list[tuple[int, _Bars]] = []  # (timeframe index, bars this batch touched)
        if ticks.ts.size:
            if self._watermark != _NO_WATERMARK:
                self._counts["behind_watermark"] += int(np.count_nonzero(ticks.ts < self._watermark))
            ticks = ticks.sorted(len(self._symbols))
            late: dict[int, np.ndarray] = {}  # timeframe index -> late mask over ``ticks``
            self._apply_intraday(ticks, late, touched)
            if self._daily is not None:
                self._apply_daily(ticks, late, touched)
            if late:
                quarantine += self._late_rows(trades, ticks, late)
        emits: list[Emit] = []
        if self.params.emit_forming:
            for tf, bars in touched:
                self._touched.setdefault(tf, []).append(_pack(bars.symbol, bars.ts))
        if quarantine:
            emits.append(("quarantine", pa.RecordBatch.from_pylist(quarantine, schema=QUARANTINE)))
        return emits

    def on_watermark(self, ts: int) -> list[Emit]:
        """Confirm every open bar whose end is ``<= ts`` (int ns UTC); emit them once.

        A watermark that does not advance (``ts`` <= the last one) does nothing.
        """
        if ts <= self._watermark:
            return []
        self._watermark = int(ts)
        return self._confirm(self._watermark) + self._forming()

    def on_eof(self) -> list[Emit]:
        """Confirm every open bar; a trade arriving afterwards would be quarantined as late."""
        self._watermark = _END_OF_STREAM
        self._touched.clear()
        return self._confirm(self._watermark)

    def _forming(self) -> list[Emit]:
        """The bars touched since the last watermark that are still open, as ``forming``."""
        parts: list[tuple[int, _Bars]] = []
        for tf, keys in self._touched.items():
            bars = self._open_bars[tf]
            still_open = np.isin(_pack(bars.symbol, bars.ts), np.concatenate(keys))
            if still_open.any():
                parts.append((tf, bars.take(still_open)))
        self._touched.clear()
        return [("bars", self._bars_batch(parts, BAR_FORMING))] if parts else []

    # ------------------------------------------------------------------ internals
    def _valid_trades(self, trades: pa.RecordBatch) -> tuple[_Trades, list[dict[str, Any]]]:
        """The batch's trades as arrays, without malformed ones, and their quarantine rows."""
        ticks = _Trades(
            symbol=self._symbol_codes(trades.column("symbol")),
            ts=trades.column("ts").to_numpy(),
            seq=trades.column("seq").to_numpy(),
            price=_floats(trades.column("price")),
            size=_floats(trades.column("size")),
            row=np.arange(trades.num_rows),
        )
        valid = np.isfinite(ticks.price) & np.isfinite(ticks.size) & (ticks.size >= 0)
        valid &= (ticks.ts > _TS_MIN) & (ticks.ts < _TS_MAX)
        if valid.all():
            return ticks, []
        return ticks.take(valid), self._invalid_rows(trades, np.flatnonzero(~valid))

    def _apply_intraday(self, ticks: _Trades, late: dict[int, np.ndarray], touched: list) -> None:
        """Reduce sorted trades to intraday bars, finest timeframe first, and merge them.

        Each coarser timeframe is reduced from the finer one's bars before late
        filtering, so a trade late for ``1s`` still reaches ``1m``. Late masks go to
        ``late``, merged bars to ``touched``.
        """
        if not self._intraday:
            return
        wm = self._watermark
        finest = self._intraday[0][1]
        maybe_late = wm != _NO_WATERMARK and int(ticks.ts.min()) < wm // finest * finest
        cols = _Columns.of_ticks(ticks.ts, ticks.seq, ticks.price, ticks.size)
        keys, key_ts = ticks.symbol, ticks.ts
        levels = []
        for tf, tf_ns in self._intraday:
            bar_ts = key_ts // tf_ns * tf_ns
            bars = _reduce(cols, keys, bar_ts, _group_starts(keys, bar_ts))
            levels.append((tf, tf_ns, bars._replace(end=bars.ts + tf_ns)))
            cols, keys, key_ts = _Columns.of_bars(bars), bars.symbol, bars.ts
        for tf, tf_ns, bars in levels:  # merged only now: merging consumes the bars
            if maybe_late:
                late_ticks = ticks.ts < wm // tf_ns * tf_ns  # <=> bar end <= wm
                if late_ticks.any():
                    late[tf] = late_ticks
                    bars = bars.take(bars.end > wm)
            self._merge_into(tf, bars, touched)

    def _apply_daily(self, ticks: _Trades, late: dict[int, np.ndarray], touched: list) -> None:
        """Reduce sorted in-session trades to ``1d`` bars and merge them."""
        opens, closes, keep = self._sessions_of(ticks.symbol, ticks.ts)
        self._counts["outside_session"] += len(keep) - int(np.count_nonzero(keep))
        if self._watermark != _NO_WATERMARK:
            late_ticks = keep & (closes <= self._watermark)
            if late_ticks.any():
                late[self._daily] = late_ticks
                keep = keep & ~late_ticks
        if not keep.all():
            if not keep.any():
                return
            ticks, opens, closes = ticks.take(keep), opens[keep], closes[keep]
        starts = _group_starts(ticks.symbol, opens)
        cols = _Columns.of_ticks(ticks.ts, ticks.seq, ticks.price, ticks.size)
        bars = _reduce(cols, ticks.symbol, opens, starts)
        self._merge_into(self._daily, bars._replace(end=closes[starts]), touched)

    def _sessions_of(self, symbol: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Session open, close (int64 ns UTC) and in-session mask of each trade."""
        calendar = self._symbol_calendar[symbol]
        first = int(calendar[0])
        if not np.any(calendar != first):
            return self._calendar_list[first].locate(ts)
        opens = np.empty(len(ts), dtype=np.int64)
        closes = np.empty(len(ts), dtype=np.int64)
        in_session = np.empty(len(ts), dtype=bool)
        for index, sessions in enumerate(self._calendar_list):
            mask = calendar == index
            if mask.any():
                opens[mask], closes[mask], in_session[mask] = sessions.locate(ts[mask])
        return opens, closes, in_session

    def _merge_into(self, tf: int, bars: _Bars, touched: list[tuple[int, _Bars]]) -> None:
        if bars.size:
            self._open_bars[tf], merged = _merge(self._open_bars[tf], bars)
            touched.append((tf, merged))

    def _confirm(self, watermark: int) -> list[Emit]:
        """Emit and drop every open bar with end ``<= watermark``."""
        done: list[tuple[int, _Bars]] = []
        for tf, bars in self._open_bars.items():
            ended = bars.end <= watermark
            if ended.any():
                done.append((tf, bars.take(ended)))
                self._open_bars[tf] = bars.take(~ended)
                np.add.at(self._confirmed[:, tf], bars.symbol[ended], 1)
        return [("bars", self._bars_batch(done, BAR_CONFIRMED))] if done else []

    def _bars_batch(self, parts: list[tuple[int, _Bars]], status: str) -> pa.RecordBatch:
        """A BAR batch of ``(timeframe index, bars)`` parts, sorted by (symbol, timeframe, ts).

        The output never shares memory with the engine's state.
        """
        symbol = np.concatenate([b.symbol for _, b in parts])
        ts = np.concatenate([b.ts for _, b in parts])
        tf = np.concatenate([np.full(b.size, t, dtype=np.int64) for t, b in parts])
        order = np.argsort(_pack(self._name_rank[symbol] * len(TIMEFRAMES) + tf, ts), kind="stable")

        def column(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for _, b in parts])[order]

        close, volume, pv = column("close"), column("volume"), column("pv")
        low, high = column("low"), column("high")
        with np.errstate(divide="ignore", invalid="ignore"):
            vwap = np.where(volume > 0, pv / volume, close)
        columns = [
            self._symbol_names.take(symbol[order]),
            _TF_NAMES.take(tf[order]),
            ts[order],
            column("open"),
            high,
            low,
            close,
            volume,
            np.clip(vwap, low, high),
            column("trade_count"),
            pa.repeat(status, len(order)),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=BAR)

    def _late_rows(self, trades: pa.RecordBatch, ticks: _Trades, late: dict[int, np.ndarray]) -> list[dict]:
        """Quarantine rows (reason ``late``) for trades late in some timeframe; counts them.

        One row per trade, naming every timeframe it was late for. This is the place
        for a future ``amend`` policy (update the confirmed bar, emit a correction).
        """
        positions = np.flatnonzero(np.logical_or.reduce(list(late.values())))
        for tf, mask in late.items():
            np.add.at(self._late[:, tf], ticks.symbol[mask], 1)
        self._counts["late"] += len(positions)
        watermark = f"{_iso(self._watermark)} ({self._watermark})"
        raws = trades.take(pa.array(ticks.row[positions])).to_pylist()
        rows = []
        for position, raw in zip(positions, raws):
            late_tfs = ", ".join(
                TIMEFRAMES[tf] for tf in self._timeframes if tf in late and late[tf][position]
            )
            name, tick_ts = self._symbols[ticks.symbol[position]], int(ticks.ts[position])
            rows.append(
                {
                    "source": stream_source(self.ctx.node_id, raw["provider"], name),
                    "row": raw["seq"],
                    "symbol": name,
                    "ts": tick_ts,
                    "reason": "late",
                    "detail": (
                        f"late trade {name} ts={_iso(tick_ts)} ({tick_ts}): its {late_tfs} bar(s) ended "
                        f"at or before watermark {watermark} and were already confirmed; not applied to them"
                    ),
                    "raw": json.dumps(raw, sort_keys=True),
                }
            )
        return rows

    def _invalid_rows(self, trades: pa.RecordBatch, positions: np.ndarray) -> list[dict[str, Any]]:
        """Quarantine rows (reason ``invalid_trade``) for malformed trades; counts them."""
        self._counts["invalid"] += len(positions)
        rows = []
        for raw in trades.take(pa.array(positions)).to_pylist():
            rows.append(
                {
                    "source": stream_source(self.ctx.node_id, raw["provider"], raw["symbol"]),
                    "row": raw["seq"],
                    "symbol": raw["symbol"],
                    "ts": raw["ts"],
                    "reason": "invalid_trade",
                    "detail": (
                        f"trade {raw['symbol']} ts={raw['ts']} has price {raw['price']!r} and size "
                        f"{raw['size']!r}; price must be finite, size finite and >= 0, ts within "
                        "1698-2242; trade quarantined"
                    ),
                    "raw": json.dumps(raw, sort_keys=True),
                }
            )
        return rows

    # ------------------------------------------------------------------ metrics, checkpoints
    def metrics(self) -> dict[str, Any]:
        """Counters for the run summary.

        Returns:
            ``trades`` and ``quotes`` (rows seen), ``invalid`` (malformed trades),
            ``behind_watermark`` (valid trades with ts < the last watermark: applied
            to every bar still open), ``late`` (those of them that hit an already
            confirmed bar: one quarantine row each), ``outside_session``
            (trades outside their ``1d`` session; 0 without ``1d``) as ints;
            ``late_by_timeframe`` (non-zero only) and ``bars_confirmed`` as
            ``{"SYMBOL": {"1m": n, ...}}`` over the configured timeframes.
        """

        def per_symbol(counts: np.ndarray, keep_zero: bool) -> dict[str, dict[str, int]]:
            out = {}
            for index in np.argsort(self._name_rank):
                row = {TIMEFRAMES[tf]: int(counts[index, tf]) for tf in self._timeframes}
                row = row if keep_zero else {tf: n for tf, n in row.items() if n}
                if row:
                    out[self._symbols[index]] = row
            return out

        return {
            **self._counts,
            "late_by_timeframe": per_symbol(self._late, keep_zero=False),
            "bars_confirmed": per_symbol(self._confirmed, keep_zero=True),
        }

    def snapshot(self) -> dict[str, Any]:
        """The full state, picklable: open bars, symbols, watermark, counters."""
        return {
            "version": _SNAPSHOT_VERSION,
            "timeframes": [TIMEFRAMES[tf] for tf in self._timeframes],
            "symbols": list(self._symbols),
            "watermark": self._watermark,
            "open_bars": {
                TIMEFRAMES[tf]: {name: column.copy() for name, column in bars._asdict().items()}
                for tf, bars in self._open_bars.items()
            },
            "touched": {TIMEFRAMES[tf]: [k.copy() for k in keys] for tf, keys in self._touched.items()},
            "counts": dict(self._counts),
            "confirmed": self._confirmed.copy(),
            "late": self._late.copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` taken by an engine with the same timeframes.

        Raises:
            ValueError: unknown snapshot version, or different timeframes.
        """
        if state.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"bars snapshot version {state.get('version')!r}, expected {_SNAPSHOT_VERSION}")
        mine = [TIMEFRAMES[tf] for tf in self._timeframes]
        if state["timeframes"] != mine:
            raise ValueError(f"bars snapshot has timeframes {state['timeframes']}, this engine has {mine}")
        self._reset()
        self._symbols = list(state["symbols"])
        self._symbol_ids = {name: i for i, name in enumerate(self._symbols)}
        self._refresh_symbols()
        self._watermark = int(state["watermark"])
        self._open_bars = {
            _TF_INDEX[tf]: _Bars(**{k: v.copy() for k, v in columns.items()})
            for tf, columns in state["open_bars"].items()
        }
        self._touched = {_TF_INDEX[tf]: [k.copy() for k in keys] for tf, keys in state["touched"].items()}
        self._counts = dict(state["counts"])
        self._confirmed = state["confirmed"].copy()
        self._late = state["late"].copy()
