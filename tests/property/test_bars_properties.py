"""Properties of BarEngine (hypothesis): bar invariants, conservation, batching and order invariance."""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bars import BarEngine, BarParams
from graph.operator import OperatorContext
from graph.schemas import BAR, TICK
from graph.timeframes import INTRADAY_NS, TIMEFRAMES

T0 = 1_704_186_000_000_000_000  # 2024-01-02 09:00 UTC (04:00 in New York)
MS = 1_000_000
SESSIONS = {"BBB": {"tz": "America/New_York", "open": "09:30", "close": "16:00"}}
KEY = ["symbol", "timeframe", "ts"]

# Clustered times (within 2 minutes: many trades per 1s/1m bar) and spread times (3 days).
offsets_ms = st.one_of(st.integers(0, 120_000), st.integers(0, 3 * 86_400_000))
trades_strategy = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "CCC"]),
        offsets_ms,
        st.floats(0.01, 10_000, allow_nan=False).map(lambda p: round(p, 2)),
        st.one_of(st.just(0.0), st.floats(0.001, 1_000, allow_nan=False).map(lambda s: round(s, 3))),
        st.sampled_from([None, 1.0]),  # None: a quote tick
    ),
    min_size=1,
    max_size=80,
)


def make_ticks(raw: list[tuple]) -> list[dict]:
    """TICK rows; seq is the row number (unique)."""
    return [
        {
            "symbol": symbol,
            "ts": T0 + offset * MS,
            "price": None if kind is None else price,
            "size": None if kind is None else size,
            "bid": price - 0.01,
            "ask": price + 0.01,
            "provider": "hypothesis",
            "seq": seq,
            "origin": "replay",
        }
        for seq, (symbol, offset, price, size, kind) in enumerate(raw)
    ]


def to_batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{name: r.get(name) for name in TICK.names} for r in rows], schema=TICK)


def run(batches: list[list[dict]], watermarks: list[int | None], forming: bool = True) -> list:
    """Feed batches, each followed by its watermark (None: none), then end-of-stream."""
    engine = BarEngine(BarParams(sessions=SESSIONS, emit_forming=forming), OperatorContext("bars"))
    emits = []
    for rows, watermark in zip(batches, watermarks):
        emits += engine.on_batch("ticks", to_batch(rows))
        if watermark is not None:
            emits += engine.on_watermark(watermark)
    return emits + engine.on_eof()


def bars(emits: list, status: str = "confirmed"):
    table = pa.Table.from_batches([b for name, b in emits if name == "bars"], schema=BAR).to_pandas()
    return table[table["status"] == status].sort_values(KEY, ignore_index=True)


def assert_same_bars(a, b) -> None:
    """Bit-identical in every column but ``status`` (confirmed/corrected), volume and vwap included."""
    assert a.drop(columns="status").equals(b.drop(columns="status"))


def in_session(row: dict) -> bool:
    """Independent: is the trade inside its 1d session (per-trade zoneinfo)?"""
    if row["symbol"] not in SESSIONS:
        return True
    local = datetime.fromtimestamp(row["ts"] / 1e9, timezone.utc).astimezone(ZoneInfo("America/New_York"))
    return (9, 30) <= (local.hour, local.minute) < (16, 0)


@settings(max_examples=200, deadline=None)
@given(trades_strategy)
def test_low_le_open_close_vwap_le_high(raw):
    # vwap is not clipped: it may leave [low, high] only by the rounding of price * size and
    # of the division (a few ulp), never by summation error.
    emits = run([make_ticks(raw)], [None])
    ulps = 4 * np.finfo(np.float64).eps
    for status in ("forming", "confirmed"):
        frame = bars(emits, status)
        assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
        assert (frame[["open", "close"]].max(axis=1) <= frame["high"]).all()
        assert (frame["low"] * (1 - ulps) <= frame["vwap"]).all()
        assert (frame["vwap"] <= frame["high"] * (1 + ulps)).all()
        assert (frame["trade_count"] >= 1).all()


@settings(max_examples=200, deadline=None)
@given(trades_strategy)
def test_volume_and_vwap_equal_exact_rational_sums(raw):
    # Independent reference: Python Fractions of the same floats (sizes, and price * size as
    # float64 products), summed exactly; each bar's volume and vwap within 2 ulp of them.
    ticks = [t for t in make_ticks(raw) if t["price"] is not None]
    confirmed = bars(run([make_ticks(raw)], [None]))
    for bar in confirmed[confirmed["timeframe"] == "1m"].itertuples():
        mine = [t for t in ticks if t["symbol"] == bar.symbol and bar.ts <= t["ts"] < bar.ts + 60 * 10**9]
        volume = sum(Fraction(t["size"]) for t in mine)
        assert abs(Fraction(bar.volume) - volume) <= 2 * np.spacing(float(volume))
        if volume:
            vwap = sum(Fraction(t["price"] * t["size"]) for t in mine) / volume
            assert abs(Fraction(bar.vwap) - vwap) <= 2 * np.spacing(float(vwap))


@settings(max_examples=200, deadline=None)
@given(trades_strategy)
def test_volume_and_count_are_conserved(raw):
    ticks = make_ticks(raw)
    trades = [t for t in ticks if t["price"] is not None]
    confirmed = bars(run([ticks], [None]))
    for timeframe in TIMEFRAMES:
        counted = trades if timeframe in INTRADAY_NS else [t for t in trades if in_session(t)]
        mine = confirmed[confirmed["timeframe"] == timeframe]
        assert mine["trade_count"].sum() == len(counted)
        assert np.isclose(mine["volume"].sum(), sum(t["size"] for t in counted), rtol=1e-12, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(trades_strategy, st.lists(st.integers(0, 80), max_size=6), st.randoms(use_true_random=False))
def test_rebatching_with_valid_watermarks_never_changes_confirmed_bars(raw, cuts, rnd):
    ticks = make_ticks(raw)
    rnd.shuffle(ticks)  # any arrival order; the watermarks below stay valid for it
    bounds = sorted({0, len(ticks), *(min(c, len(ticks)) for c in cuts)})
    batches = [ticks[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    # the exact replay watermark: no later tick has ts below it
    watermarks = [
        min((t["ts"] for b in batches[i + 1 :] for t in b), default=None) for i in range(len(batches))
    ]
    split = run(batches, watermarks)
    assert not [name for name, _ in split if name == "quarantine"]
    assert_same_bars(bars(split), bars(run([ticks], [None])))


@settings(max_examples=200, deadline=None)
@given(trades_strategy, st.randoms(use_true_random=False))
def test_shuffling_within_a_batch_never_changes_output(raw, rnd):
    ticks = make_ticks(raw)
    shuffled = list(ticks)
    rnd.shuffle(shuffled)
    half = T0 + 60_000 * MS
    a = run([ticks, ticks[:0]], [half, None])
    b = run([shuffled, shuffled[:0]], [half, None])
    assert len(a) == len(b) and all(x[0] == y[0] and x[1].equals(y[1]) for x, y in zip(a, b))


def run_policy(batches: list[list[dict]], watermarks: list[int], policy: str) -> list:
    """Like :func:`run`, with late policy ``policy``; watermarks may make ticks late."""
    ctx = OperatorContext("bars", late_policy=policy, amend_window_ns=10 * 86_400 * 10**9)
    engine = BarEngine(BarParams(sessions=SESSIONS), ctx)
    emits = []
    for rows, watermark in zip(batches, watermarks):
        emits += engine.on_batch("ticks", to_batch(rows))
        emits += engine.on_watermark(watermark)
    return emits + engine.on_eof()


def final(emits: list):
    """The last confirmed-or-corrected row of every bar, sorted by key."""
    table = pa.Table.from_batches([b for name, b in emits if name == "bars"], schema=BAR).to_pandas()
    table = table[table["status"] != "forming"].drop_duplicates(KEY, keep="last")
    return table.sort_values(KEY, ignore_index=True)


@settings(max_examples=200, deadline=None)
@given(trades_strategy, st.lists(st.integers(0, 80), max_size=6), st.randoms(use_true_random=False))
def test_amend_ends_with_the_bars_of_all_trades_whatever_the_arrival_order(raw, cuts, rnd):
    # watermarks run ahead of the data (max ts so far): every straggler is a late tick
    ticks = make_ticks(raw)
    rnd.shuffle(ticks)
    bounds = sorted({0, len(ticks), *(min(c, len(ticks)) for c in cuts)})
    batches = [ticks[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    seen = np.maximum.accumulate([max(t["ts"] for t in b) for b in batches])
    emits = run_policy(batches, [int(w) for w in seen], "amend")
    assert not [name for name, _ in emits if name == "quarantine"]
    assert_same_bars(final(emits), bars(run([ticks], [None])))


@settings(max_examples=200, deadline=None)
@given(trades_strategy, st.lists(st.integers(0, 80), max_size=6), st.randoms(use_true_random=False))
def test_drop_ends_with_the_bars_of_the_on_time_trades(raw, cuts, rnd):
    ticks = make_ticks(raw)
    rnd.shuffle(ticks)
    bounds = sorted({0, len(ticks), *(min(c, len(ticks)) for c in cuts)})
    batches = [ticks[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    watermarks = [int(w) for w in np.maximum.accumulate([max(t["ts"] for t in b) for b in batches])]
    on_time = [t for i, b in enumerate(batches) for t in b if i == 0 or t["ts"] >= watermarks[i - 1]]
    emits = run_policy(batches, watermarks, "drop")
    quarantined = [r["row"] for name, b in emits if name == "quarantine" for r in b.to_pylist()]
    late_trades = [t["seq"] for t in ticks if t not in on_time and t["price"] is not None]
    assert sorted(quarantined) == sorted(late_trades)
    assert_same_bars(final(emits), bars(run([on_time], [None])))
