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
      volume is 0 (only zero-size trades) ``vwap = close``. Both sums are exact
      fixed-point sums (``actors/bar_kernels.py``), so nothing needs clipping: vwap
      can differ from a price only by the rounding of ``price * size`` and of the
      division.
    * A watermark ``w`` confirms every open bar whose end ``<= w``: it is emitted
      once with status ``confirmed`` and dropped from state. End-of-stream confirms
      every open bar (the input is over: nothing can still change it).
    * ``partial`` instead of ``confirmed``: a bar the engine did not see whole. When the
      run is *stopped* (``--duration``, Ctrl-C; ``on_stop``) the open bars are emitted once
      as ``partial``; a bar that opened before its symbol's first *live* tick (a live
      session that started mid-bar) is ``partial`` when it ends. The store keeps partial
      bars apart (``bars_partial``), so a stop never turns a half-built 1h or 1d bar into a
      final one, and a restarted session never overwrites a final bar with its own part.
      (A stopped run keeps its checkpoints: ``run.py --resume`` continues it, and then
      the bar is confirmed whole.)
    * A trade with ``ts`` < the last watermark is a *late tick* (the graph's
      ``event_time.allowed_lateness_ms`` is already in the watermark: sources emit
      max event time - allowed lateness). It is counted and handled by the graph's
      ``event_time.late_policy`` (``OperatorContext.late_policy``):

      - ``drop``: not applied to any bar; one ``quarantine`` row (reason ``late``).
        In a graph with a normalizer, the normalizer already dropped it (so that
        ticks read = accepted + quarantined holds at one node); the bar engine
        applies the same rule for graphs that feed it directly.
      - ``amend``: applied to every bar; a bar still open takes it as usual, a bar
        already confirmed is updated and re-emitted at once with status
        ``corrected`` (a bar that had no trades when the watermark passed its end is
        emitted for the first time, as ``confirmed``). Confirmed bars are kept for
        ``amend_window_ms`` of event time behind the watermark; a trade older than
        ``watermark - amend_window_ms`` can no longer amend them and is quarantined
        (reason ``late``). A correction is exact: it is the confirmed bar merged with
        the late trades, so it equals the bar of all the trades.
    * Malformed trades (non-finite price or size, negative size, size or notional of
      2**64 or more, ts outside 1698-2242) are quarantined as ``invalid_trade``.
    * With ``emit_forming``, every watermark emits, after the bars it confirms, one
      ``forming`` row per bar touched since the previous watermark and still open
      (current values). Deferring them to the watermark that follows each batch
      means a bar confirmed by that same watermark is sent once, not twice: in a
      burst replay this halves the bar traffic. A graph whose source sends no
      watermarks sees no forming rows (only end-of-stream confirmations). With the
      graph's ``event_time.forming_interval_ms`` > 0, a bar gets at most one forming
      row per that much *event* time (watermark time, so a replay's forming rows do
      not depend on how fast it runs); an update held back is sent at the first
      watermark at least one interval after the bar's previous forming row, unless
      the bar is confirmed first.
    * Every emitted batch is sorted by (symbol, timeframe in ``TIMEFRAMES`` order, ts).

Implementation (kernels in ``actors/bar_kernels.py``): no per-tick Python. A batch is sorted once by (symbol id, ts, seq,
price); the finest intraday timeframe is reduced from ticks with ``ufunc.reduceat``
over contiguous groups, each coarser one from the previous timeframe's partial bars
(epoch-aligned timeframes nest), ``1d`` from the in-session ticks. Open bars live per
timeframe as parallel numpy arrays sorted by a packed (symbol id, bar second) int64
key; a batch's partial bars are merged into them with ``np.searchsorted`` and
vectorised pairwise combines.

Volume and ``pv`` are exact fixed-point sums: re-batching, re-sharding or re-pacing the
same ticks gives bit-identical bars (every column).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from actors.bar_kernels import (
    FIXED_MAX,
    BarArrays,
    TickFixed,
    TS_MAX,
    TS_MIN,
    TradeColumns,
    Trades,
    fixed_to_float,
    group_starts,
    merge_bars,
    pack_key,
    reduce_bars,
    tick_fixed,
)
from actors.string_codes import string_codes
from actors.sessions import DEFAULT_SESSION, Session, SessionCalendar
from graph.operator import Emit, Operator, OperatorContext, Params, check_snapshot_version
from graph.params import Timeframe
from graph.schemas import BAR, BAR_CONFIRMED, BAR_CORRECTED, BAR_FORMING, BAR_PARTIAL, ORIGIN_LIVE, QUARANTINE
from graph.schemas import QUARANTINE_ROW, quarantine_row
from graph.times import iso_ns
from graph.timeframes import DAILY, INTRADAY_NS, TIMEFRAMES

__all__ = ["BarEngine", "BarParams", "Session"]

_TF_INDEX = {tf: i for i, tf in enumerate(TIMEFRAMES)}
_TF_NAMES = pa.array(TIMEFRAMES)
_NO_WATERMARK = int(np.iinfo(np.int64).min)
_END_OF_STREAM = int(np.iinfo(np.int64).max)
_SNAPSHOT_VERSION = 4
_CONSOLIDATE_CHUNKS = 64  # amend: confirmed-bar chunks kept before they are merged and pruned

_INTRADAY = list(INTRADAY_NS.items())
# Each coarser intraday timeframe is built from the next finer one's bars: they must nest.
assert all(b % a == 0 for (_, a), (_, b) in zip(_INTRADAY, _INTRADAY[1:]))

class BarParams(Params):
    """Params of a ``bars`` node.

    Attributes:
        timeframes: bar lengths to build (``1s 1m 5m 15m 1h 1d``); non-empty, no
            duplicates; default all six.
        sessions: symbol -> :class:`~actors.sessions.Session` for ``1d`` bars; the
            key ``"default"`` applies to symbols not listed (else UTC 00:00-24:00).
        emit_forming: on each watermark, emit the bars touched since the previous one
            that are still open, with status ``forming``.

    How long confirmed bars stay correctable under ``amend`` is the graph's
    ``event_time.amend_window_ms`` (``OperatorContext.amend_window_ns``).
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


def _floats(column: pa.Array) -> np.ndarray:
    """A float64 column as numpy, nulls as NaN."""
    return column.to_numpy(zero_copy_only=False)


def _iso(ts: int) -> str:
    """``ts`` (int ns UTC) as ISO-8601 (:func:`graph.times.iso_ns`); the engine's sentinels by name."""
    if ts in (_NO_WATERMARK, _END_OF_STREAM):
        return "end-of-stream" if ts == _END_OF_STREAM else "none"
    return iso_ns(ts)


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
        self._open_bars = {tf: BarArrays.empty() for tf in self._timeframes}
        self._touched: dict[int, list[np.ndarray]] = {}  # tf -> packed keys touched since the last watermark
        self._symbols: list[str] = []
        self._symbol_ids: dict[str, int] = {}
        self._watermark = _NO_WATERMARK
        self._counts = {
            "trades": 0,
            "quotes": 0,
            "invalid": 0,
            "late": 0,
            "late_quarantined": 0,
            "outside_session": 0,
        }
        self._confirmed = np.zeros((0, len(TIMEFRAMES)), dtype=np.int64)
        self._corrected = np.zeros((0, len(TIMEFRAMES)), dtype=np.int64)
        self._partial = np.zeros((0, len(TIMEFRAMES)), dtype=np.int64)
        self._first_live = np.zeros(0, dtype=np.int64)  # per symbol: first live tick ts (_NO_WATERMARK: none)
        # amend: confirmed bars kept for corrections, per timeframe: one sorted BarArrays and
        # the chunks confirmed since it was last consolidated (each sorted, keys disjoint)
        self._final: dict[int, BarArrays] = {tf: BarArrays.empty() for tf in self._timeframes}
        self._final_chunks: dict[int, list[BarArrays]] = {tf: [] for tf in self._timeframes}
        # forming_interval_ns > 0: per timeframe, packed keys of open bars and the
        # watermark of their last forming row (sorted by key)
        self._formed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
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
        self._corrected = np.concatenate([self._corrected, grow])
        self._partial = np.concatenate([self._partial, grow])
        self._first_live = np.concatenate([self._first_live, np.full(n - len(self._first_live), _NO_WATERMARK, np.int64)])

    def _symbol_codes(self, column: pa.Array) -> np.ndarray:
        """Engine symbol ids (int32, shape (n,)) of a string or dictionary column."""
        codes, names = string_codes(column)
        return self._ids(names)[codes]

    def _ids(self, names: list[str]) -> np.ndarray:
        """Engine symbol ids of ``names`` (int32), registering new symbols."""
        new = [name for name in names if name not in self._symbol_ids]
        if new:
            for name in new:
                self._symbol_ids[name] = len(self._symbols)
                self._symbols.append(name)
            self._refresh_symbols()
        return np.array([self._symbol_ids[name] for name in names], dtype=np.int32)

    # ------------------------------------------------------------------ hooks
    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Apply a TICK batch to the open bars.

        Args:
            stream: input stream name (ignored: every input carries ticks).
            batch: TICK schema, any order, any symbols.

        Returns:
            ``quarantine`` (late or malformed trades) when non-empty; with late policy
            ``amend``, ``bars`` rows for the confirmed bars late trades changed (status
            ``corrected``, or ``confirmed`` for a bar that had no trades before). Touched
            open bars are remembered and emitted as ``forming`` by the next
            :meth:`on_watermark`.
        """
        price_column = batch.column("price")
        rows = None  # the trades' rows in the batch (None: every row is a trade)
        if price_column.null_count:
            rows = np.flatnonzero(price_column.is_valid().to_numpy(zero_copy_only=False))
        trades = batch.num_rows if rows is None else len(rows)
        self._counts["quotes"] += batch.num_rows - trades
        self._counts["trades"] += trades
        if trades == 0:
            return []
        ticks, quarantine = self._valid_trades(batch, rows)
        self._note_first_live(batch, ticks)
        touched: list[tuple[int, BarArrays]] = []  # (timeframe index, open bars this batch touched)
        late_bars: list[tuple[int, BarArrays]] = []  # amend: (timeframe index, partial bars of confirmed keys)
        if ticks.ts.size and self._watermark != _NO_WATERMARK:
            ticks, rejected = self._late_ticks(batch, ticks)
            quarantine += rejected
        if ticks.ts.size:
            ticks = ticks.sorted(len(self._symbols))
            # exact sums: each trade's size and notional converted once, for every timeframe
            volume, notional = tick_fixed(ticks.size), tick_fixed(ticks.price * ticks.size)
            self._apply_intraday(ticks, volume, notional, touched, late_bars)
            if self._daily is not None:
                self._apply_daily(ticks, volume, notional, touched, late_bars)
        emits: list[Emit] = []
        if late_bars:
            emits += self._amend(late_bars)
        if self.params.emit_forming:
            for tf, bars in touched:
                self._touched.setdefault(tf, []).append(pack_key(bars.symbol, bars.ts))
        if quarantine:
            quarantine.sort(key=lambda row: row.pop("_position"))  # input order, as the host's positions need
            emits.append(("quarantine", pa.RecordBatch.from_pylist(quarantine, schema=QUARANTINE_ROW)))
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
        """The bars touched since the last watermark that are still open, as ``forming``.

        With ``forming_interval_ns`` > 0 only those whose last forming row is at least
        that old (in watermark time) go out; the others stay touched for later.
        """
        interval = self.ctx.forming_interval_ns
        parts: list[tuple[int, BarArrays]] = []
        held: dict[int, list[np.ndarray]] = {}
        for tf, keys in self._touched.items():
            bars = self._open_bars[tf]
            packed = pack_key(bars.symbol, bars.ts)
            still_open = np.isin(packed, np.concatenate(keys))
            if interval > 0:
                still_open = self._throttle(tf, packed, still_open, held)
            if still_open.any():
                parts.append((tf, bars.take(still_open)))
        self._touched = held
        return [("bars", self._bars_batch(parts, BAR_FORMING))] if parts else []

    def _throttle(self, tf: int, packed: np.ndarray, due: np.ndarray, held: dict[int, list[np.ndarray]]) -> np.ndarray:
        """Of the open bars ``due`` a forming row (mask over ``packed``, the sorted keys of
        the open bars), those whose last one is >= ``forming_interval_ns`` old; records them.

        Bars held back go to ``held[tf]``; forgotten keys (bars confirmed since) are dropped.
        """
        wm, interval = self._watermark, self.ctx.forming_interval_ns
        keys, last = self._formed.get(tf, (np.empty(0, np.int64), np.empty(0, np.int64)))
        known = np.isin(keys, packed)  # keys of bars confirmed since are forgotten
        keys, last = keys[known], last[known]
        previous = np.full(len(packed), _NO_WATERMARK, dtype=np.int64)
        if len(keys):
            position = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
            hit = keys[position] == packed
            previous[hit] = last[position[hit]]
        ready = due & ((previous == _NO_WATERMARK) | (previous <= wm - interval))
        waiting = due & ~ready
        if waiting.any():
            held[tf] = [packed[waiting]]
        previous[ready] = wm
        stamped = previous != _NO_WATERMARK
        self._formed[tf] = (packed[stamped], previous[stamped])
        return ready

    # ------------------------------------------------------------------ internals
    def _note_first_live(self, batch: pa.RecordBatch, ticks: Trades) -> None:
        """Record each symbol's first live trade time (bars opened before it are partial);
        ``ticks.row`` are rows of ``batch``."""
        live = pc.equal(batch.column("origin"), ORIGIN_LIVE)
        if not ticks.ts.size or not pc.any(live).as_py():
            return
        mask = live.to_numpy(zero_copy_only=False)[ticks.row]
        first = np.full(len(self._first_live), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, ticks.symbol[mask], ticks.ts[mask])
        new = (self._first_live == _NO_WATERMARK) & (first != np.iinfo(np.int64).max)
        self._first_live[new] = first[new]

    def _valid_trades(self, batch: pa.RecordBatch, rows: np.ndarray | None) -> tuple[Trades, list[dict[str, Any]]]:
        """The batch's trades (its ``rows``; None: all) as arrays, without malformed ones,
        and their quarantine rows. Columns are read as numpy (zero-copy where possible) and
        indexed there: cheaper than filtering the Arrow batch, whose strings would be copied."""

        def column(name: str, floats: bool = False) -> np.ndarray:
            values = _floats(batch.column(name)) if floats else batch.column(name).to_numpy()
            return values if rows is None else values[rows]

        symbols = self._symbol_codes(batch.column("symbol"))
        ticks = Trades(
            symbol=symbols if rows is None else symbols[rows],
            ts=column("ts"),
            seq=column("seq"),
            price=column("price", floats=True),
            size=column("size", floats=True),
            row=np.arange(batch.num_rows) if rows is None else rows,
        )
        with np.errstate(invalid="ignore", over="ignore"):
            valid = np.isfinite(ticks.price) & np.isfinite(ticks.size) & (ticks.size >= 0) & (ticks.price >= 0)
            valid &= (ticks.size < FIXED_MAX) & (ticks.price * ticks.size < FIXED_MAX)
        valid &= (ticks.ts > TS_MIN) & (ticks.ts < TS_MAX)
        if valid.all():
            return ticks, []
        return ticks.take(valid), self._invalid_rows(batch, ticks.row[~valid])

    def _apply_intraday(self, ticks: Trades, volume: TickFixed, notional: TickFixed, touched: list, late_bars: list) -> None:
        """Reduce sorted trades to intraday bars, finest timeframe first, and merge them.

        Each coarser timeframe is reduced from the finer one's bars. Merged open bars go
        to ``touched``; bars already confirmed (end <= watermark; only late trades under
        ``amend`` reach them) go to ``late_bars``. ``volume``/``notional``: the trades'
        sizes and notionals as fixed point (:func:`~actors.bar_kernels.tick_fixed`).
        """
        if not self._intraday:
            return
        wm = self._watermark
        maybe_late = wm != _NO_WATERMARK and int(ticks.ts.min()) < wm
        cols = TradeColumns.of_ticks(ticks.ts, ticks.seq, ticks.price, volume, notional)
        keys, key_ts = ticks.symbol, ticks.ts
        levels = []
        for tf, tf_ns in self._intraday:
            bar_ts = key_ts // tf_ns * tf_ns
            bars = reduce_bars(cols, keys, bar_ts, group_starts(keys, bar_ts))
            levels.append((tf, bars._replace(end=bars.ts + tf_ns)))
            cols, keys, key_ts = TradeColumns.of_bars(bars), bars.symbol, bars.ts
        for tf, bars in levels:  # merged only now: merging consumes the bars
            if maybe_late:
                bars = self._split_confirmed(tf, bars, late_bars)
            self._merge_into(tf, bars, touched)

    def _apply_daily(self, ticks: Trades, volume: TickFixed, notional: TickFixed, touched: list, late_bars: list) -> None:
        """Reduce sorted in-session trades to ``1d`` bars and merge them (see :meth:`_apply_intraday`)."""
        opens, closes, keep = self._sessions_of(ticks.symbol, ticks.ts)
        self._counts["outside_session"] += len(keep) - int(np.count_nonzero(keep))
        if not keep.all():
            if not keep.any():
                return
            ticks, opens, closes = ticks.take(keep), opens[keep], closes[keep]
            volume, notional = volume.take(keep), notional.take(keep)
        starts = group_starts(ticks.symbol, opens)
        cols = TradeColumns.of_ticks(ticks.ts, ticks.seq, ticks.price, volume, notional)
        bars = reduce_bars(cols, ticks.symbol, opens, starts)._replace(end=closes[starts])
        if self._watermark != _NO_WATERMARK:
            bars = self._split_confirmed(self._daily, bars, late_bars)
        self._merge_into(self._daily, bars, touched)

    def _split_confirmed(self, tf: int, bars: BarArrays, late_bars: list) -> BarArrays:
        """The bars still open; those already confirmed (end <= watermark) go to ``late_bars``."""
        confirmed = bars.end <= self._watermark
        if not confirmed.any():
            return bars
        late_bars.append((tf, bars.take(confirmed)))
        return bars.take(~confirmed)

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

    def _merge_into(self, tf: int, bars: BarArrays, touched: list[tuple[int, BarArrays]]) -> None:
        if bars.size:
            self._open_bars[tf], merged = merge_bars(self._open_bars[tf], bars)
            touched.append((tf, merged))

    def _confirm(self, watermark: int) -> list[Emit]:
        """Emit and drop every open bar with end ``<= watermark``: ``confirmed``, or
        ``partial`` if it opened before its symbol's first live tick (a live session that
        started mid-bar saw only part of it)."""
        done: list[tuple[int, BarArrays]] = []
        partial: list[tuple[int, BarArrays]] = []
        amend = self.ctx.late_policy == "amend"
        for tf, bars in self._open_bars.items():
            ended = bars.end <= watermark
            if ended.any():
                finished = bars.take(ended)
                self._open_bars[tf] = bars.take(~ended)
                cut = finished.ts < self._first_live[finished.symbol]
                if cut.any():
                    partial.append((tf, finished.take(cut)))
                    np.add.at(self._partial[:, tf], finished.symbol[cut], 1)
                    finished = finished.take(~cut)
                if finished.size:
                    done.append((tf, finished))
                    np.add.at(self._confirmed[:, tf], finished.symbol, 1)
                    if amend:
                        self._keep_final(tf, finished)
        emits: list[Emit] = [("bars", self._bars_batch(done, BAR_CONFIRMED))] if done else []
        return emits + ([("bars", self._bars_batch(partial, BAR_PARTIAL))] if partial else [])

    def on_stop(self) -> list[Emit]:
        """The stream was stopped early: every open bar is emitted once as ``partial``, never
        as ``confirmed`` (its interval was not over), and dropped."""
        self._watermark = _END_OF_STREAM
        self._touched.clear()
        parts = []
        for tf, bars in self._open_bars.items():
            if bars.size:
                parts.append((tf, bars))
                np.add.at(self._partial[:, tf], bars.symbol, 1)
                self._open_bars[tf] = BarArrays.empty()
        return [("bars", self._bars_batch(parts, BAR_PARTIAL))] if parts else []

    def _bars_batch(self, parts: list[tuple[int, BarArrays]], status: str) -> pa.RecordBatch:
        """A BAR batch of ``(timeframe index, bars)`` parts, sorted by (symbol, timeframe, ts).

        The output never shares memory with the engine's state.
        """
        symbol = np.concatenate([b.symbol for _, b in parts])
        ts = np.concatenate([b.ts for _, b in parts])
        tf = np.concatenate([np.full(b.size, t, dtype=np.int64) for t, b in parts])
        order = np.argsort(pack_key(self._name_rank[symbol] * len(TIMEFRAMES) + tf, ts), kind="stable")

        def column(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for _, b in parts])[order]

        close = column("close")
        volume, pv = fixed_to_float(column("volume")), fixed_to_float(column("pv"))
        with np.errstate(divide="ignore", invalid="ignore"):
            vwap = np.where(volume > 0, pv / volume, close)
        columns = [
            self._symbol_names.take(symbol[order]),
            _TF_NAMES.take(tf[order]),
            ts[order],
            column("open"),
            column("high"),
            column("low"),
            close,
            volume,
            vwap,
            column("trade_count"),
            pa.repeat(status, len(order)),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=BAR)

    # ------------------------------------------------------------------ late trades
    def _late_ticks(self, batch: pa.RecordBatch, ticks: Trades) -> tuple[Trades, list[dict[str, Any]]]:
        """Apply the late policy to trades with ``ts`` < the watermark.

        Returns:
            The trades to apply (all but the quarantined ones) and the quarantine rows:
            every late trade under ``drop``; under ``amend`` those older than
            ``watermark - amend_window_ms`` (their confirmed bars are no longer kept).
        """
        wm = self._watermark
        late = ticks.ts < wm
        count = int(np.count_nonzero(late))
        if not count:
            return ticks, []
        self._counts["late"] += count
        if self.ctx.late_policy == "amend":
            horizon = wm - self.ctx.amend_window_ns
            late &= ticks.ts < horizon
            if not late.any():
                return ticks, []
            why = (
                f"older than the watermark minus amend_window_ms {self.ctx.amend_window_ns // 1_000_000} "
                f"({_iso(horizon)}); its confirmed bars are no longer kept, so it cannot amend them"
            )
        else:
            why = "late_policy drop"
        return ticks.take(~late), self._late_rows(batch, ticks, np.flatnonzero(late), why)

    def _late_rows(self, batch: pa.RecordBatch, ticks: Trades, positions: np.ndarray, why: str) -> list[dict]:
        """Quarantine rows (reason ``late``) for the trades at ``positions``; counts them."""
        self._counts["late_quarantined"] += len(positions)
        watermark = f"{_iso(self._watermark)} ({self._watermark})"
        raws = batch.take(pa.array(ticks.row[positions])).replace_schema_metadata(None).to_pylist()
        rows = []
        for position, raw in zip(positions, raws):
            name, tick_ts = self._symbols[ticks.symbol[position]], int(ticks.ts[position])
            detail = (
                f"late trade {name} ts={_iso(tick_ts)} ({tick_ts}) is older than the watermark "
                f"{watermark}; {why}: not applied to any bar"
            )
            rows.append({**quarantine_row(self.ctx.node_id, raw, "late", detail), "_position": int(ticks.row[position])})
        return rows

    def _keep_final(self, tf: int, bars: BarArrays) -> None:
        """Amend: keep just-confirmed ``bars`` (sorted, new keys) for later corrections."""
        chunks = self._final_chunks[tf]
        chunks.append(bars)
        if len(chunks) >= _CONSOLIDATE_CHUNKS:
            self._consolidate(tf)

    def _consolidate(self, tf: int) -> BarArrays:
        """Merge the kept chunks of ``tf`` into one sorted BarArrays, dropping bars that ended
        before ``watermark - amend_window_ms`` (no late trade accepted for amending can reach them)."""
        parts = [self._final[tf], *self._final_chunks[tf]]
        self._final_chunks[tf] = []
        merged = BarArrays(*(np.concatenate(columns) for columns in zip(*parts)))
        if self._watermark not in (_NO_WATERMARK, _END_OF_STREAM):
            keep = merged.end > self._watermark - self.ctx.amend_window_ns
            if not keep.all():
                merged = merged.take(keep)
        order = np.argsort(pack_key(merged.symbol, merged.ts), kind="stable")
        self._final[tf] = merged.take(order)
        return self._final[tf]

    def _amend(self, late_bars: list[tuple[int, BarArrays]]) -> list[Emit]:
        """Merge partial bars of late trades into the kept confirmed bars; emit the results.

        Returns:
            ``bars`` batches: ``corrected`` rows for bars that were confirmed before, and
            ``confirmed`` rows for bars the watermark passed while they had no trades.
        """
        corrected: list[tuple[int, BarArrays]] = []
        first: list[tuple[int, BarArrays]] = []
        for tf, bars in late_bars:
            kept = self._consolidate(tf) if self._final_chunks[tf] else self._final[tf]
            kept_keys, keys = pack_key(kept.symbol, kept.ts), pack_key(bars.symbol, bars.ts)
            position = np.minimum(np.searchsorted(kept_keys, keys), max(len(kept_keys) - 1, 0))
            known = (kept_keys[position] == keys) if len(kept_keys) else np.zeros(len(keys), dtype=bool)
            self._final[tf], merged = merge_bars(kept, bars)
            if known.any():
                corrected.append((tf, merged.take(known)))
                np.add.at(self._corrected[:, tf], merged.symbol[known], 1)
            if not known.all():
                first.append((tf, merged.take(~known)))
                np.add.at(self._confirmed[:, tf], merged.symbol[~known], 1)
        emits: list[Emit] = []
        if first:
            emits.append(("bars", self._bars_batch(first, BAR_CONFIRMED)))
        if corrected:
            emits.append(("bars", self._bars_batch(corrected, BAR_CORRECTED)))
        return emits

    def _invalid_rows(self, batch: pa.RecordBatch, positions: np.ndarray) -> list[dict[str, Any]]:
        """Quarantine rows (reason ``invalid_trade``) for the malformed trades at rows ``positions``; counts them."""
        self._counts["invalid"] += len(positions)
        rows = []
        for position, raw in zip(positions.tolist(), batch.take(pa.array(positions)).to_pylist()):
            detail = (
                f"trade {raw['symbol']} ts={raw['ts']} has price {raw['price']!r} and size "
                f"{raw['size']!r}; price must be finite and >= 0, size finite and >= 0, size and "
                "notional below 2**64, ts within 1698-2242; trade quarantined"
            )
            rows.append({**quarantine_row(self.ctx.node_id, raw, "invalid_trade", detail), "_position": position})
        return rows

    # ------------------------------------------------------------------ metrics, checkpoints
    def metrics(self) -> dict[str, Any]:
        """Counters for the run summary.

        Returns:
            ``trades`` and ``quotes`` (rows seen), ``invalid`` (malformed trades),
            ``late`` (valid trades with ts < the watermark), ``late_quarantined``
            (those of them not applied: every late trade under ``drop``, those beyond
            the amend window under ``amend``; one quarantine row each),
            ``outside_session`` (trades outside their ``1d`` session; 0 without
            ``1d``) as ints; ``bars_confirmed`` and ``bars_corrected`` (non-zero only)
            as ``{"SYMBOL": {"1m": n, ...}}`` over the configured timeframes.
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
            "bars_confirmed": per_symbol(self._confirmed, keep_zero=True),
            "bars_corrected": per_symbol(self._corrected, keep_zero=False),
            "bars_partial": per_symbol(self._partial, keep_zero=False),
        }

    def snapshot(self) -> dict[str, Any]:
        """The full state, picklable: open and kept confirmed bars, symbols, watermark, counters."""
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
            "final": {
                TIMEFRAMES[tf]: {name: column.copy() for name, column in self._consolidate(tf)._asdict().items()}
                for tf in self._timeframes
            },
            "formed": {TIMEFRAMES[tf]: (k.copy(), t.copy()) for tf, (k, t) in self._formed.items()},
            "counts": dict(self._counts),
            "confirmed": self._confirmed.copy(),
            "corrected": self._corrected.copy(),
            "partial": self._partial.copy(),
            "first_live": self._first_live.copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` taken by an engine with the same timeframes.

        Raises:
            ValueError: unknown snapshot version, or different timeframes.
        """
        check_snapshot_version(state, _SNAPSHOT_VERSION, "bars")
        mine = [TIMEFRAMES[tf] for tf in self._timeframes]
        if state["timeframes"] != mine:
            raise ValueError(f"bars snapshot has timeframes {state['timeframes']}, this engine has {mine}")
        self._reset()
        self._symbols = list(state["symbols"])
        self._symbol_ids = {name: i for i, name in enumerate(self._symbols)}
        self._refresh_symbols()
        self._watermark = int(state["watermark"])
        self._open_bars = {
            _TF_INDEX[tf]: BarArrays(**{k: v.copy() for k, v in columns.items()})
            for tf, columns in state["open_bars"].items()
        }
        self._touched = {_TF_INDEX[tf]: [k.copy() for k in keys] for tf, keys in state["touched"].items()}
        self._final = {
            _TF_INDEX[tf]: BarArrays(**{k: v.copy() for k, v in columns.items()}) for tf, columns in state["final"].items()
        }
        self._formed = {_TF_INDEX[tf]: (k.copy(), t.copy()) for tf, (k, t) in state["formed"].items()}
        self._counts = dict(state["counts"])
        self._confirmed = state["confirmed"].copy()
        self._corrected = state["corrected"].copy()
        self._partial = state["partial"].copy()
        self._first_live = state["first_live"].copy()
