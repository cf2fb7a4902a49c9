"""Pure, vectorized signal formulas (numpy in, numpy out); no state, no Arrow, no I/O.

The signal operators (``actors/signals/``, one module per kind) keep per-symbol state and call these.
Every function works on float64 arrays of shape (n,) and never loops per element in
Python; a few loop per *block* or per *group* (tens of iterations per batch).

Floating-point conventions: sums run sequentially in event order (``np.cumsum`` is a
strict left-to-right running sum), so a value does not depend on how ticks were cut
into batches, and a plain ``pandas.Series.cumsum`` in event order gives the same bits.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BPS",
    "sort_by_key_ts",
    "last_of_runs",
    "spread_bps",
    "vwap_deviation_bps",
    "session_cumsum",
    "ewm_recurrence",
    "rsi_from_averages",
    "bollinger_pctb",
    "pctb_of_windows",
    "rolling_zscore",
]

#: Basis points per unit: 1 bp = 1/10,000.
BPS = 10_000.0


def sort_by_key_ts(key: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """Stable order of rows by (key, ts); None if the rows are already in that order.

    Ties keep their input (arrival) order. Feeds are time-ordered, so a stable sort
    by key alone usually suffices (a radix sort for key ids < 65,536); otherwise
    ``np.lexsort``.

    Args:
        key: int32/int64 key id per row, shape (n,).
        ts: int64 ns UTC per row, shape (n,).

    Returns:
        int64 positions, shape (n,), or None (already sorted: no copy needed).
    """
    if _sorted_by(key, ts):
        return None
    narrow = key.astype(np.uint16) if len(key) and 0 <= key.min() and key.max() < 1 << 16 else key
    order = np.argsort(narrow, kind="stable")  # uint16: numpy's radix sort, linear
    if _sorted_by(key[order], ts[order]):
        return order
    return np.lexsort((ts, key))


def _sorted_by(key: np.ndarray, ts: np.ndarray) -> bool:
    if len(key) < 2:
        return True
    key_step = np.diff(key)
    if np.any(key_step < 0):
        return False
    return not np.any((key_step == 0) & (ts[1:] < ts[:-1]))


def last_of_runs(key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Mask of the last row of each run of equal (key, ts), for rows sorted by (key, ts).

    Where several ticks share one timestamp, a signal stores the value after the last
    of them: this picks it.

    Returns:
        bool, shape (n,).
    """
    last = np.ones(len(key), dtype=bool)
    if len(key) > 1:
        last[:-1] = (key[1:] != key[:-1]) | (ts[1:] != ts[:-1])
    return last


def spread_bps(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Quoted bid-ask spread relative to the mid price, in basis points.

    ``spread_bps = (ask - bid) / mid * 10,000`` with ``mid = (ask + bid) / 2``: the
    quoted spread of the market microstructure literature (e.g. Harris, *Trading and
    Exchanges*, 2003, ch. 14; the "relative quoted spread" of Roll 1984's setting).
    A crossed book (bid > ask) gives a negative value.

    Args:
        bid, ask: float64 prices (quote currency), shape (n,), both > 0.

    Returns:
        float64 bps, shape (n,).
    """
    mid = (bid + ask) / 2.0
    return (ask - bid) / mid * BPS


def vwap_deviation_bps(price: np.ndarray, cum_pv: np.ndarray, cum_volume: np.ndarray) -> np.ndarray:
    """Deviation of each trade price from the running session VWAP, in basis points.

    ``vwap = cum(price * size) / cum(size)`` over the session so far, this trade
    included (Berkowitz, Logue & Noser, "The Total Cost of Transactions on the NYSE",
    J. Finance 43(1), 1988); ``deviation = (price - vwap) / vwap * 10,000``.

    Args:
        price: float64 trade prices, shape (n,).
        cum_pv: float64 running sum of price*size up to and including each trade.
        cum_volume: float64 running sum of size (shares/contracts), same shape.

    Returns:
        float64 bps, shape (n,); NaN where ``cum_volume`` is 0 (VWAP undefined).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = cum_pv / cum_volume
        return (price - vwap) / vwap * BPS


def session_cumsum(values: np.ndarray, starts: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Running sums that restart at each group, each group seeded with a carried total.

    For group g covering rows ``starts[g]:starts[g+1]``, row i gets
    ``initial[g] + values[starts[g]] + ... + values[i]`` summed left to right, which is
    bit-identical to one sequential running sum over the whole session however the
    session's rows were split into batches (``initial`` carries the previous batches).

    Args:
        values: float64, shape (n,), rows grouped contiguously.
        starts: int64 start row of each group, ascending, ``starts[0] == 0``; shape (g,).
        initial: float64 carried total per group (0.0 for a new session), shape (g,).

    Returns:
        float64, shape (n,). One ``np.cumsum`` per group: a loop over groups (keys in
        the batch), never over rows.
    """
    out = np.empty(len(values), dtype=np.float64)
    bounds = [*starts.tolist(), len(values)]
    for g in range(len(starts)):
        lo, hi = bounds[g], bounds[g + 1]
        seeded = np.empty(hi - lo + 1, dtype=np.float64)
        seeded[0] = initial[g]
        seeded[1:] = values[lo:hi]
        out[lo:hi] = np.cumsum(seeded)[1:]
    return out


def ewm_recurrence(x: np.ndarray, alpha: float, y0: float | None) -> np.ndarray:
    """``y[t] = (1 - alpha) * y[t-1] + alpha * x[t]``, vectorized by blocks.

    Wilder's smoothing (J. W. Wilder, *New Concepts in Technical Trading Systems*,
    1978) is this recurrence with ``alpha = 1 / period``; it equals pandas'
    ``ewm(alpha=alpha, adjust=False)``. Within a block of L rows the recurrence has
    the closed form ``y[t] = a**(t+1) * y0 + alpha * a**t * cumsum(x[k] * a**-k)``
    (``a = 1 - alpha``); L is chosen so that ``a**-L <= 2**20``, which bounds the
    rounding error to a few ulps times L. Between blocks the last value carries over.

    Args:
        x: float64 inputs, shape (n,).
        alpha: smoothing factor, 0 < alpha <= 1.
        y0: the value before ``x[0]``; None: the recurrence starts at ``y[0] = x[0]``
            (pandas' ``adjust=False`` convention).

    Returns:
        float64, shape (n,).
    """
    n = len(x)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    a = 1.0 - alpha
    start = 0
    if y0 is None:
        out[0] = x[0]
        y0, start = float(x[0]), 1
    if a <= 0.0:
        out[start:] = x[start:]
        return out
    block = max(1, int(20 * math.log(2) / -math.log(a)))
    k = np.arange(block, dtype=np.float64)
    up = a ** -k  # a**-k
    down = a**k  # a**k
    for lo in range(start, n, block):
        hi = min(lo + block, n)
        m = hi - lo
        scaled = np.cumsum(x[lo:hi] * up[:m])
        y = down[:m] * (a * y0 + alpha * scaled)
        out[lo:hi] = y
        y0 = float(y[-1])
    return out


def rsi_from_averages(avg_gain: np.ndarray, avg_loss: np.ndarray) -> np.ndarray:
    """Relative Strength Index from smoothed average gain and loss (Wilder 1978).

    ``RS = avg_gain / avg_loss``, ``RSI = 100 - 100 / (1 + RS)``; 100 where
    ``avg_loss == 0`` (no losses in the smoothed window; the ``ta`` library's
    convention too).

    Returns:
        float64 in [0, 100], shape (n,).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = avg_gain / avg_loss
        return np.where(avg_loss == 0.0, 100.0, 100.0 - 100.0 / (1.0 + rs))


def bollinger_pctb(closes: np.ndarray, period: int, num_std: float) -> np.ndarray:
    """Bollinger %b of the last ``len(closes) - period + 1`` closes (J. Bollinger, *Bollinger on Bollinger Bands*, 2001).

    For each window of ``period`` closes ending at close c: ``mavg`` = mean,
    ``sd`` = population standard deviation (ddof 0, as Bollinger and the ``ta``
    library), ``upper/lower = mavg +/- num_std * sd``,
    ``%b = (c - lower) / (upper - lower)``: 0 at the lower band, 1 at the upper.

    Args:
        closes: float64, shape (n,), n >= period; the first ``period - 1`` only fill
            the first window.
        period: window length in bars.
        num_std: band width in standard deviations.

    Returns:
        float64, shape (n - period + 1,); NaN where the bands coincide (sd == 0).
    """
    return pctb_of_windows(np.lib.stride_tricks.sliding_window_view(closes, period), num_std)


def pctb_of_windows(windows: np.ndarray, num_std: float) -> np.ndarray:
    """Bollinger %b of the last close of each window (see :func:`bollinger_pctb`).

    Args:
        windows: float64 closes, shape (n, period), oldest first; row i's last close is
            the one scored.
        num_std: band half-width in standard deviations.

    Returns:
        float64, shape (n,); NaN where the bands coincide (sd == 0).
    """
    mavg = windows.mean(axis=1)
    sd = windows.std(axis=1)
    upper = mavg + num_std * sd
    lower = mavg - num_std * sd
    with np.errstate(divide="ignore", invalid="ignore"):
        pctb = (windows[:, -1] - lower) / (upper - lower)
    return np.where(upper > lower, pctb, np.nan)


def rolling_zscore(
    key: np.ndarray, index: np.ndarray, count: np.ndarray, targets: np.ndarray, window: int
) -> np.ndarray:
    """z-score of each target interval's count against the ``window`` intervals before it.

    Rows are (key, interval number, count) for intervals with at least one tick, sorted
    by (key, interval); intervals absent for a key had no ticks and count as 0. For a
    target interval ``i`` of key k with count x: ``mean`` and sample standard deviation
    ``sd`` (ddof 1) of k's counts in intervals ``i - window .. i - 1``;
    ``z = (x - mean) / sd``, the standard score (e.g. Chandola, Banerjee & Kumar,
    "Anomaly Detection: A Survey", ACM Computing Surveys 41(3), 2009, on statistical
    point anomalies). Sums of counts and squared counts are exact int64 prefix sums over
    all keys at once, so the variance has no cancellation error.

    Args:
        key: int key id per row, shape (m,).
        index: int64 interval numbers (ts // interval length), shape (m,).
        count: int64 ticks in each, shape (m,).
        targets: positions of the rows to score, shape (k,).
        window: intervals in the rolling window, >= 2.

    Returns:
        float64 z, shape (k,); NaN where sd == 0.
    """
    base = int(index.min()) if len(index) else 0
    # one sortable int64 per row: key in the high bits, interval offset (< 2**40) below
    packed = (key.astype(np.int64) << 40) + (index - base)
    prefix = np.concatenate(([0], np.cumsum(count)))
    prefix_sq = np.concatenate(([0], np.cumsum(count * count)))
    lo = np.searchsorted(packed, packed[targets] - window, side="left")
    lo = np.maximum(lo, np.searchsorted(packed, key[targets].astype(np.int64) << 40, side="left"))  # same key only
    total = prefix[targets] - prefix[lo]
    total_sq = prefix_sq[targets] - prefix_sq[lo]
    numerator = window * total_sq - total * total  # window * (window - 1) * variance, exact
    sd = np.sqrt(numerator / (window * (window - 1.0)))
    mean = total / window
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (count[targets] - mean) / sd
    return np.where(sd > 0, z, np.nan)
