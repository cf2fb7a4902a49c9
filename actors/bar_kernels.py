"""Vectorised kernels of the bar engine: bars as parallel numpy arrays, reduce, merge.

No per-tick Python: a batch sorted by (symbol id, ts, seq, price) is reduced to partial
bars per contiguous (symbol, bar) group with ``ufunc.reduceat``; partial bars merge into
the open bars (sorted by a packed int64 key) with ``np.searchsorted`` and vectorised
pairwise combines. Open and close keep the (ts, seq) of their trades, so two partial
bars of one key combine exactly whatever the arrival order. Used by ``actors/bars.py``.

Volume and ``pv = sum(price * size)`` are exact fixed-point sums, so a bar is bit-identical
however its trades were batched (float addition is not associative: re-batching changed
the last bits, and hashing had to round them away). Each trade's size and notional
(float64, >= 0, < 2**64) is rounded to a multiple of 2**-128 -- exact for every float of
at least 2**-75 (a notional of 1e-16, a size of 1e-8 BTC are exact) -- and held as six
32-bit limbs in int64 (:func:`to_fixed`); limbs add as integers and carries are
normalised (:func:`normalize_fixed`), so the representation of a sum is canonical and
its float value (:func:`fixed_to_float`) a pure function of the trades.

Cost: a batch's trades are converted once (:func:`tick_fixed`), at the finest timeframe
(coarser ones and the ``1d`` bars reduce those limbs), and only into the limbs its values
can reach: a float ``m x 2**e`` has no bit below ``e - 53``, so the smallest and largest
values bound the limbs that can be nonzero (three of six for share or BTC sizes and their
notionals); the other limbs are known zeros, never computed or summed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "BAR_DTYPES",
    "FIXED_LIMBS",
    "FIXED_MAX",
    "TickFixed",
    "fixed_sums",
    "fixed_to_float",
    "normalize_fixed",
    "tick_fixed",
    "to_fixed",
    "BarArrays",
    "CLOSE_FIELDS",
    "KEY_OFFSET_S",
    "KEY_SHIFT",
    "NS_PER_S",
    "OPEN_FIELDS",
    "TS_MAX",
    "TS_MIN",
    "TradeColumns",
    "Trades",
    "combine_bars",
    "group_starts",
    "merge_bars",
    "pack_key",
    "precedes",
    "reduce_bars",
]

# Sort keys pack (major, bar open second) into one int64: major << 34 | (second + 2**33).
# Bar open times are whole seconds (intraday bars are >= 1 s and epoch-aligned; session
# boundaries are whole seconds), so the key is unique per bar. Trades must lie within
# 2**33 s (272 years) of the epoch; others are quarantined as invalid.
KEY_SHIFT = 34
KEY_OFFSET_S = 1 << 33
NS_PER_S = 1_000_000_000
TS_MIN = (-KEY_OFFSET_S + 2 * 86_400) * NS_PER_S
TS_MAX = (KEY_OFFSET_S - 2 * 86_400) * NS_PER_S


#: Limbs of a fixed-point sum: 32 bits each, limb k worth 2**(32k - 128).
FIXED_LIMBS = 6
#: Largest size or notional of one trade the fixed-point sums take (exclusive): 2**64.
FIXED_MAX = 2.0**64
_FIXED_SHIFT = 128  # bits below the unit: the resolution is 2**-128
_LIMB_MASK = (1 << 32) - 1
_LIMB_SCALES = tuple(2.0 ** (32 * k - _FIXED_SHIFT) for k in range(FIXED_LIMBS))  # value of one unit of limb k


class TickFixed(NamedTuple):
    """Per-trade fixed-point values: limbs ``lo .. lo + m - 1`` (shape (m, n) int64); every
    other limb of every value is zero."""

    limbs: np.ndarray  # (m, n) int64, m <= 6
    lo: int  # index of the first limb held

    def take(self, index: np.ndarray) -> TickFixed:
        """The values at ``index`` (int positions or bool mask)."""
        return TickFixed(self.limbs[:, index], self.lo)

    def full(self) -> np.ndarray:
        """All six limbs, shape (6, n) int64."""
        out = np.zeros((FIXED_LIMBS, self.limbs.shape[1]), dtype=np.int64)
        out[self.lo : self.lo + len(self.limbs)] = self.limbs
        return out


def tick_fixed(values: np.ndarray) -> TickFixed:
    """Non-negative finite floats < 2**64 as the fixed-point limbs they can occupy.

    ``values`` (float64, shape (n,)) is rounded to the nearest multiple of 2**-128 (ties
    to even); limb k (< 2**32) holds bits 32k-128 .. 32k-97. Limbs below the lowest bit any
    value can have (the smallest nonzero value's exponent - 53) and above the largest
    value's are zero and not computed. All steps are exact float operations (scaling by
    powers of two, floor, subtraction of representable parts).
    """
    n = len(values)
    top = float(values.max()) if n else 0.0
    if top == 0.0:
        return TickFixed(np.zeros((0, n), dtype=np.int64), 0)
    low = float(values.min(where=values > 0, initial=np.inf))
    hi_bit = int(np.frexp(top)[1]) - 1  # top < 2**(hi_bit + 1)
    lo_bit = max(int(np.frexp(low)[1]) - 53, -_FIXED_SHIFT)  # no value has a bit below this
    lo, hi = (lo_bit + _FIXED_SHIFT) // 32, (hi_bit + _FIXED_SHIFT) // 32
    y = values * 2.0 ** (_FIXED_SHIFT - 32 * lo)  # whole numbers unless lo == 0
    if lo == 0:
        np.rint(y, out=y)
    limbs = np.empty((hi - lo + 1, n), dtype=np.int64)
    part = np.empty_like(y)
    for k in range(hi - lo, 0, -1):
        shift = 32 * k
        np.multiply(y, 2.0**-shift, out=part)
        np.floor(part, out=part)
        limbs[k] = part
        part *= 2.0**shift
        y -= part
    limbs[0] = y
    return TickFixed(limbs, lo)


def to_fixed(values: np.ndarray) -> np.ndarray:
    """Non-negative finite floats < 2**64 as all six fixed-point limbs, shape (6, n) int64
    (:func:`tick_fixed`, the zero limbs filled in)."""
    return tick_fixed(values).full()


def normalize_fixed(limbs: np.ndarray) -> np.ndarray:
    """Propagate carries so limbs 0..4 are < 2**32: the canonical form, shape (n, 6) int64."""
    limbs = np.ascontiguousarray(limbs)
    for k in range(FIXED_LIMBS - 1):
        carry = limbs[:, k] >> 32
        if carry.any():
            limbs[:, k] &= _LIMB_MASK
            limbs[:, k + 1] += carry
    return limbs


def fixed_sums(values: np.ndarray | TickFixed, starts: np.ndarray) -> np.ndarray:
    """Exact per-group sums, canonical limbs shape (groups, 6) int64.

    Args:
        values: :class:`TickFixed` or float64 shape (n,) (one trade per row), or limbs
            shape (n, 6) (partial bars).
        starts: start row of each group, ascending, ``starts[0] == 0``.
    """
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return normalize_fixed(np.add.reduceat(values, starts, axis=0))
    fixed = values if isinstance(values, TickFixed) else tick_fixed(values)
    out = np.zeros((len(starts), FIXED_LIMBS), dtype=np.int64)
    if len(fixed.limbs):
        out[:, fixed.lo : fixed.lo + len(fixed.limbs)] = np.add.reduceat(fixed.limbs, starts, axis=1).T
    return normalize_fixed(out)


def fixed_to_float(limbs: np.ndarray) -> np.ndarray:
    """float64 values of canonical limbs shape (n, 6): the smallest limbs added first.

    Deterministic for a given sum (the limbs are canonical); within a few ulp of the exact sum.
    """
    total = limbs[:, 0] * _LIMB_SCALES[0]
    for k in range(1, FIXED_LIMBS):
        total += limbs[:, k] * _LIMB_SCALES[k]
    return total


def pack_key(major: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """One sortable int64 key per row of (major < 2**28, ts int64 ns at whole seconds)."""
    return (major.astype(np.int64) << KEY_SHIFT) + (ts // NS_PER_S + KEY_OFFSET_S)


class BarArrays(NamedTuple):
    """Bars as parallel 1-D arrays, one row per bar, sorted by (symbol, ts) unless noted.

    Besides OHLCV each bar keeps the (ts, seq) of its opening and closing trades and
    ``pv = sum(price * size)``, so that two partial bars of one key merge exactly.
    ``volume`` and ``pv`` are fixed-point limbs, shape (n, 6) (:func:`to_fixed`).
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
    volume: np.ndarray  # int64 limbs (n, 6), sum(size)
    pv: np.ndarray  # int64 limbs (n, 6), sum(price * size)
    trade_count: np.ndarray  # int64

    @property
    def size(self) -> int:
        """Number of bars."""
        return len(self.ts)

    def take(self, index: np.ndarray) -> BarArrays:
        """Rows at ``index`` (int positions or bool mask), as new arrays."""
        return BarArrays(*(column[index] for column in self))

    @classmethod
    def empty(cls) -> BarArrays:
        """No bars."""
        return cls(*(np.empty((0, *shape), dtype=dtype) for dtype, shape in zip(BAR_DTYPES, _BAR_SHAPES)))


BAR_DTYPES = [np.int32, np.int64, np.int64, np.float64, np.int64, np.int64, np.float64]
BAR_DTYPES += [np.float64, np.float64, np.int64, np.int64, np.int64, np.int64, np.int64]
_BAR_SHAPES = [()] * 11 + [(FIXED_LIMBS,), (FIXED_LIMBS,), ()]
OPEN_FIELDS = ("open", "open_ts", "open_seq")
CLOSE_FIELDS = ("close", "close_ts", "close_seq")


class TradeColumns(NamedTuple):
    """Per-row inputs of a reduction: ticks (open = high = low = close = price) or bars."""

    open: np.ndarray
    open_ts: np.ndarray
    open_seq: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    close_ts: np.ndarray
    close_seq: np.ndarray
    volume: np.ndarray | TickFixed  # per trade (TickFixed or float64 (n,)), or limbs (n, 6) per partial bar
    pv: np.ndarray | TickFixed  # likewise
    trade_count: np.ndarray | None  # None: one trade per row

    @classmethod
    def of_ticks(
        cls, ts: np.ndarray, seq: np.ndarray, price: np.ndarray, size: np.ndarray | TickFixed,
        pv: np.ndarray | TickFixed | None = None,
    ) -> TradeColumns:
        """Trades as one-trade bars (``pv``: their notional, default ``price * size``)."""
        return cls(price, ts, seq, price, price, price, ts, seq, size, price * size if pv is None else pv, None)

    @classmethod
    def of_bars(cls, bars: BarArrays) -> TradeColumns:
        """Partial bars, to be reduced to a coarser timeframe."""
        return cls(*(getattr(bars, name) for name in cls._fields))


class Trades(NamedTuple):
    """The valid trades of one batch as parallel arrays, shape (n,)."""

    symbol: np.ndarray  # int32 engine symbol id
    ts: np.ndarray  # int64 ns UTC
    seq: np.ndarray  # int64
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    row: np.ndarray  # int64 row in the batch's trades, for quarantine text

    def take(self, index: np.ndarray) -> Trades:
        """Rows at ``index`` (int positions or bool mask), as new arrays."""
        return Trades(*(column[index] for column in self))

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

    def sorted(self, symbols: int) -> Trades:
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


def group_starts(symbol: np.ndarray, bar_ts: np.ndarray) -> np.ndarray:
    """Start index of each run of equal (symbol, bar_ts) in rows sorted by (symbol, bar_ts)."""
    change = np.empty(len(bar_ts), dtype=bool)
    change[0] = True
    np.not_equal(bar_ts[1:], bar_ts[:-1], out=change[1:])
    change[1:] |= symbol[1:] != symbol[:-1]
    return np.flatnonzero(change)


def reduce_bars(cols: TradeColumns, symbol: np.ndarray, bar_ts: np.ndarray, starts: np.ndarray) -> BarArrays:
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
    return BarArrays(
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
        volume=fixed_sums(cols.volume, starts),
        pv=fixed_sums(cols.pv, starts),
        trade_count=(
            np.diff(starts, append=n)
            if cols.trade_count is None
            else np.add.reduceat(cols.trade_count, starts)
        ),
    )


def precedes(a: BarArrays, a_side: str, b: BarArrays, b_side: str) -> np.ndarray:
    """Elementwise whether a's ``a_side`` trade comes before b's ``b_side`` trade.

    ``*_side`` is ``"open"`` or ``"close"``; trades are ordered by (ts, seq, price).
    """
    ts_a, seq_a, price_a = (getattr(a, a_side + suffix) for suffix in ("_ts", "_seq", ""))
    ts_b, seq_b, price_b = (getattr(b, b_side + suffix) for suffix in ("_ts", "_seq", ""))
    return (ts_a < ts_b) | ((ts_a == ts_b) & ((seq_a < seq_b) | ((seq_a == seq_b) & (price_a < price_b))))


def combine_bars(old: BarArrays, new: BarArrays) -> BarArrays:
    """Merge two partial bars of the same keys, row by row."""
    new_opens = precedes(new, "open", old, "open")
    new_closes = precedes(old, "close", new, "close")
    merged = {name: np.where(new_opens, getattr(new, name), getattr(old, name)) for name in OPEN_FIELDS}
    merged.update(
        {name: np.where(new_closes, getattr(new, name), getattr(old, name)) for name in CLOSE_FIELDS}
    )
    return old._replace(
        **merged,
        high=np.maximum(old.high, new.high),
        low=np.minimum(old.low, new.low),
        volume=normalize_fixed(old.volume + new.volume),
        pv=normalize_fixed(old.pv + new.pv),
        trade_count=old.trade_count + new.trade_count,
    )


def merge_bars(state: BarArrays, new: BarArrays) -> tuple[BarArrays, BarArrays]:
    """Merge partial bars ``new`` into open bars ``state``.

    Both are sorted by (symbol, ts) with unique keys. Returns the new state, sorted
    likewise, and the merged values of the ``new`` keys (the touched bars, in the
    order of ``new``). Updates the arrays of ``state`` and ``new`` in place (``new``
    is consumed).
    """
    if state.size == 0:
        return new, new
    state_key = pack_key(state.symbol, state.ts)
    new_key = pack_key(new.symbol, new.ts)
    position = np.searchsorted(state_key, new_key)
    hit = state_key[np.minimum(position, state.size - 1)] == new_key
    if hit.any():
        at = position[hit]
        combined = combine_bars(state.take(at), new.take(hit))
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
            column = np.empty((state.size + len(miss), *state_column.shape[1:]), dtype=state_column.dtype)
            column[state_rows] = state_column
            column[new_rows] = new_column[miss]
            merged.append(column)
        state = BarArrays(*merged)
    return state, new
