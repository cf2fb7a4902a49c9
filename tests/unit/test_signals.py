"""Unit tests of the signal operators (actors/signals/) and formulas (actors/indicators.py), without Ray.

Expectations are independent: pandas on the raw LOBSTER files (tests/reference.py) and
the ``ta`` library, never tickgraph's own code. Timelines are drawn in comments:
``t1 t1 | wm t1`` means two ticks at t1, then a watermark at t1.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import ta
from pydantic import ValidationError

from actors import indicators as ind
from graph.registry import load_kind
from actors.file_replay import FileReplay
from actors.signals import (
    BollingerParams,
    BollingerPctB,
    Rsi,
    RsiParams,
    SpreadBps,
    SpreadParams,
    TickRateParams,
    TickRateZScore,
    VwapDeviationBps,
    VwapDeviationParams,
)
from graph.operator import OperatorContext, Watermark
from graph.schemas import BAR, QUARANTINE, SIGNAL, TICK
from tests.conftest import LOBSTER_MESSAGES, LOBSTER_ORDERBOOK
from tests.reference import lobster_trades, reference_bars

NS = 1_000_000_000
T0 = 1_340_285_400 * NS  # 2012-06-21 13:30:00 UTC = 09:30 New York
NY = {"tz": "America/New_York", "open": "09:30", "close": "16:00"}


def ctx(node_id: str = "sig") -> OperatorContext:
    return OperatorContext(node_id=node_id)


def ticks(rows: list[dict]) -> pa.RecordBatch:
    """TICK rows with defaults (provider lobster, symbol AMZN, seq = position)."""
    full = []
    for i, row in enumerate(rows):
        base = dict(symbol="AMZN", price=None, size=None, side=None, bid=None, ask=None, bid_size=None,
                    ask_size=None, provider="lobster", seq=i, origin="replay")  # fmt: skip
        full.append({**base, **row})
    return pa.RecordBatch.from_pylist(full, schema=TICK)


def signals_of(emits) -> pd.DataFrame:
    batches = [b for stream, b in emits if stream == "signals"]
    for b in batches:
        assert b.schema.equals(SIGNAL)
    return pa.Table.from_batches(batches, schema=SIGNAL).to_pandas()


def quarantine_of(emits) -> list[dict]:
    return [row for stream, b in emits if stream == "quarantine" for row in b.to_pylist()]


def drive(op, events) -> list:
    """Feed ('batch', RecordBatch) / ('wm', ts) / ('eof',) events; collect every emit."""
    out = []
    for event in events:
        if event[0] == "batch":
            out += op.on_batch("ticks", event[1])
        elif event[0] == "wm":
            out += op.on_watermark(event[1])
        else:
            out += op.on_eof()
    return out


def lobster_events(batch_rows: int) -> list:
    """The real LOBSTER day as the file replay emits it: tick batches and watermarks."""
    source = FileReplay(
        FileReplay.Params.model_validate(
            {
                "batch_rows": batch_rows,
                "files": [
                    {"format": "lobster", "message_file": str(LOBSTER_MESSAGES), "orderbook_file": str(LOBSTER_ORDERBOOK),
                     "symbol": "AMZN", "date": "2012-06-21", "tz": "America/New_York"}
                ],
            }
        ),
        ctx("source"),
    )  # fmt: skip
    events = []
    for event in source.events():
        if isinstance(event, Watermark):
            events.append(("wm", event.ts))
        elif event[0] == "ticks":
            events.append(("batch", event[1]))
    return [*events, ("eof",)]


def raw_lobster() -> pd.DataFrame:
    """Every LOBSTER row (trades and quotes): ts ns UTC, price ($, trades only), size, bid, ask ($)."""
    messages = pd.read_csv(LOBSTER_MESSAGES, header=None, names=["time", "type", "id", "size", "price", "dir"], dtype={"time": str})
    book = pd.read_csv(LOBSTER_ORDERBOOK, header=None, names=["ask", "ask_size", "bid", "bid_size"])
    seconds, _, fraction = messages["time"].str.partition(".").to_numpy().T
    ns = seconds.astype(np.int64) * NS + pd.Series(fraction).str.ljust(9, "0").astype(np.int64).to_numpy()
    trade = messages["type"].isin([4, 5]).to_numpy()
    return pd.DataFrame({
        "ts": pd.Timestamp("2012-06-21", tz="America/New_York").value + ns,
        "price": np.where(trade, messages["price"] / 10_000, np.nan),
        "size": np.where(trade, messages["size"].astype(float), np.nan),
        "bid": book["bid"] / 10_000, "ask": book["ask"] / 10_000,
    })  # fmt: skip


# -- spread_bps and vwap_deviation_bps on the real day --------------------------------------------


@pytest.fixture(scope="module")
def lobster_signals():
    out = {}
    for kind, params in (("spread", SpreadParams()), ("vwap", VwapDeviationParams(sessions={"AMZN": NY}))):
        op = (SpreadBps if kind == "spread" else VwapDeviationBps)(params, ctx())
        out[kind] = (signals_of(drive(op, lobster_events(4096))), op.metrics())
    return out


def test_spread_on_every_quote_equals_pandas_from_the_raw_files(lobster_signals):
    raw = raw_lobster()
    # every LOBSTER row, executions included, carries the book after the event
    mid = (raw["bid"] + raw["ask"]) / 2
    raw["spread"] = (raw["ask"] - raw["bid"]) / mid * 10_000
    expected = raw.groupby("ts", sort=True)["spread"].last()  # the value after the last tick at a ts
    stored, metrics = lobster_signals["spread"]
    assert metrics["quotes"] == 57_515 and len(expected) == 53_283
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected.index.to_numpy())
    np.testing.assert_allclose(stored["value"].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)
    assert (stored["name"] == "spread_bps").all() and stored["score"].isna().all()
    assert json.loads(stored["metadata"].iloc[0]) == {"unit": "bps", "mid": "(bid+ask)/2"}
    # README figures: spread $0.01 .. $0.77 on a ~$222 stock
    assert 0.4 < stored["value"].min() < 0.5 and 30 < stored["value"].max() < 36


def test_vwap_deviation_on_every_trade_equals_pandas_from_the_raw_files(lobster_signals):
    trades = lobster_trades()  # independent parse (Decimal timestamps), file order
    vwap = (trades["price"] * trades["size"]).cumsum() / trades["size"].cumsum()
    trades["deviation"] = (trades["price"] - vwap) / vwap * 10_000
    expected = trades.groupby("ts", sort=True)["deviation"].last()
    stored, metrics = lobster_signals["vwap"]
    assert metrics["trades"] == 11_419 and metrics["outside_session"] == 0
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected.index.to_numpy())
    np.testing.assert_allclose(stored["value"].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)
    assert stored["value"].iloc[0] == 0.0  # the first trade is the VWAP
    # the last trade against the day's VWAP ($222.6348 in fixtures/README.md)
    last_price = trades["price"].iloc[-1]
    assert stored["value"].iloc[-1] == pytest.approx((last_price - 222.6348) / 222.6348 * 1e4, abs=0.01)


@pytest.mark.parametrize("kind", [SpreadBps, VwapDeviationBps])
def test_batch_boundaries_never_change_a_value(kind):
    params = SpreadParams() if kind is SpreadBps else VwapDeviationParams(sessions={"AMZN": NY})
    small = signals_of(drive(kind(params, ctx()), lobster_events(1_000)))
    large = signals_of(drive(kind(params, ctx()), lobster_events(65_536)))
    pd.testing.assert_frame_equal(small, large, check_exact=True)


@pytest.mark.parametrize("kind", [SpreadBps, VwapDeviationBps])
def test_conflated_rows_are_the_last_row_per_second_of_the_pandas_series(kind, lobster_signals):
    raw = raw_lobster()
    if kind is SpreadBps:
        raw["value"] = (raw["ask"] - raw["bid"]) / ((raw["bid"] + raw["ask"]) / 2) * 10_000
        params = SpreadParams(conflate_ms=1000)
        full = lobster_signals["spread"][0]
    else:
        raw = lobster_trades()
        vwap = (raw["price"] * raw["size"]).cumsum() / raw["size"].cumsum()
        raw["value"] = (raw["price"] - vwap) / vwap * 10_000
        params = VwapDeviationParams(sessions={"AMZN": NY}, conflate_ms=1000)
        full = lobster_signals["vwap"][0]
    per_ts = raw.groupby("ts", sort=True)["value"].last().reset_index()
    expected = per_ts.groupby(per_ts["ts"] // NS, sort=True).last()  # the last row of each second
    for batch_rows in (1_000, 65_536):
        stored = signals_of(drive(kind(params, ctx()), lobster_events(batch_rows)))
        np.testing.assert_array_equal(stored["ts"].to_numpy(), expected["ts"].to_numpy())
        np.testing.assert_allclose(stored["value"].to_numpy(), expected["value"].to_numpy(), rtol=1e-9, atol=0)
    assert 0 < len(stored) < len(full) / 2  # far fewer rows to store than one per timestamp
    # a subset of the unconflated rows: same ts, bit-identical values
    subset = full.set_index("ts").loc[stored["ts"], "value"].to_numpy()
    np.testing.assert_array_equal(subset, stored["value"].to_numpy())
    assert json.loads(stored["metadata"].iloc[0])["conflate_ms"] == 1000
    assert "conflate_ms" not in json.loads(full["metadata"].iloc[0])


def test_a_conflated_value_waits_for_the_watermark_to_pass_its_interval():
    #   1 s intervals from T0:  q(.2) q(.7) | wm .9 | q(.95) q(1.1) | wm 1.0 | q(1.3) | eof
    #   wm .9: interval [0, 1) s still open; wm 1.0: it is final, its last row is q(.95)
    s = NS // 10
    op = SpreadBps(SpreadParams(conflate_ms=1000), ctx())
    op.on_batch("ticks", ticks([dict(ts=T0 + 2 * s, bid=99.0, ask=101.0), dict(ts=T0 + 7 * s, bid=99.5, ask=100.5)]))
    assert op.on_watermark(T0 + 9 * s) == []
    op.on_batch("ticks", ticks([dict(ts=T0 + 9 * s + s // 2, bid=99.9, ask=100.1), dict(ts=T0 + 11 * s, bid=99.0, ask=101.0)]))
    first = signals_of(op.on_watermark(T0 + NS))
    assert list(zip(first["ts"], first["value"])) == [(T0 + 9 * s + s // 2, pytest.approx(20.0))]
    op.on_batch("ticks", ticks([dict(ts=T0 + 13 * s, bid=99.75, ask=100.25)]))
    rest = signals_of(op.on_eof())
    assert list(zip(rest["ts"], rest["value"])) == [(T0 + 13 * s, pytest.approx(50.0))]
    assert op.metrics()["signals"] == 2


# -- holding values until the watermark ------------------------------------------------------------


def test_ticks_sharing_a_timestamp_give_one_row_with_the_last_value_even_across_batches():
    #   batch 1: q(t1) q(t1) | wm t1 | batch 2: q(t1) q(t2) | wm t2 | eof
    #   t1 == wm1 may still receive ticks: nothing is emitted at wm t1
    t1, t2 = T0, T0 + 5
    op = SpreadBps(SpreadParams(), ctx())
    first = op.on_batch("ticks", ticks([dict(ts=t1, bid=99.0, ask=101.0), dict(ts=t1, bid=99.5, ask=100.5)]))
    assert first == [] and op.on_watermark(t1) == []
    op.on_batch("ticks", ticks([dict(ts=t1, bid=99.9, ask=100.1), dict(ts=t2, bid=99.0, ask=101.0)]))
    at_t2 = signals_of(op.on_watermark(t2))
    assert list(zip(at_t2["ts"], at_t2["value"])) == [(t1, pytest.approx(20.0))]  # (100.1-99.9)/100 bps
    rest = signals_of(op.on_eof())
    assert list(zip(rest["ts"], rest["value"])) == [(t2, pytest.approx(200.0))]
    assert op.metrics()["signals"] == 2


def test_a_late_tick_is_quarantined_and_not_applied():
    #   t1 t3 | wm t3 | t2 (late: t2 < wm)
    op = VwapDeviationBps(VwapDeviationParams(), ctx("vwap"))
    op.on_batch("ticks", ticks([dict(ts=T0 + 1, price=10.0, size=1.0), dict(ts=T0 + 3, price=12.0, size=1.0)]))
    emitted = signals_of(op.on_watermark(T0 + 3))
    late = op.on_batch("ticks", ticks([dict(ts=T0 + 2, price=1000.0, size=1000.0, seq=7)]))
    (row,) = quarantine_of(late)
    assert row["reason"] == "late" and row["source"] == "vwap/lobster/AMZN" and row["row"] == 7
    assert "not applied to signal 'vwap_deviation_bps'" in row["detail"]
    later = signals_of(op.on_eof())
    assert list(emitted["ts"]) == [T0 + 1] and list(later["ts"]) == [T0 + 3]
    assert later["value"].iloc[0] == pytest.approx((12 - 11) / 11 * 1e4)  # the late trade did not enter the VWAP
    assert op.metrics()["late"] == 1


# -- spread_bps rules -----------------------------------------------------------------------------


def test_spread_needs_both_sides_and_counts_trade_rows_that_carry_a_book():
    rows = [
        dict(ts=T0, bid=100.0, ask=100.2),  # quote
        dict(ts=T0 + 1, price=100.1, size=5.0, bid=100.0, ask=100.1),  # LOBSTER execution row: a quote update
        dict(ts=T0 + 2, price=100.1, size=5.0),  # Tardis trade: no book
        dict(ts=T0 + 3, bid=100.0, ask=None),  # one side only
        dict(ts=T0 + 4, bid=0.0, ask=100.0),  # not a price
        dict(ts=T0 + 5, bid=100.3, ask=100.1),  # crossed book: negative spread, kept
    ]
    op = SpreadBps(SpreadParams(), ctx())
    out = signals_of(op.on_batch("ticks", ticks(rows)) + op.on_eof())
    assert list(out["ts"]) == [T0, T0 + 1, T0 + 5]
    np.testing.assert_allclose(out["value"], [0.2 / 100.1 * 1e4, 0.1 / 100.05 * 1e4, -0.2 / 100.2 * 1e4], rtol=1e-12)


# -- vwap_deviation_bps sessions ---------------------------------------------------------------------


def test_vwap_restarts_at_each_session_open_in_exchange_time_and_skips_off_session_trades():
    #   NY day 1: 09:30 trade 10 x1, 15:59 trade 20 x1 | 17:00 after-hours | day 2 09:30 trade 30 x1
    day = 86_400 * NS
    rows = [
        dict(ts=T0, price=10.0, size=1.0),
        dict(ts=T0 + (6 * 3600 + 29 * 60) * NS, price=20.0, size=1.0),
        dict(ts=T0 + (7 * 3600 + 30 * 60) * NS, price=99.0, size=9.0),  # 17:00 New York: outside
        dict(ts=T0 + day, price=30.0, size=1.0),
    ]
    op = VwapDeviationBps(VwapDeviationParams(sessions={"AMZN": NY}), ctx())
    out = signals_of(op.on_batch("ticks", ticks(rows)) + op.on_eof())
    assert list(out["ts"]) == [T0, T0 + (6 * 3600 + 29 * 60) * NS, T0 + day]
    np.testing.assert_allclose(out["value"], [0.0, (20 - 15) / 15 * 1e4, 0.0])
    assert op.metrics()["outside_session"] == 1
    assert json.loads(out["metadata"].iloc[0])["session"] == NY


def test_crypto_vwap_restarts_at_utc_midnight_by_default_and_waits_for_volume():
    midnight = 1_582_416_000 * NS  # 2020-02-23 00:00 UTC
    rows = [
        dict(symbol="BTCUSDT", provider="binance-futures", ts=midnight - 1, price=100.0, size=1.0),
        dict(symbol="BTCUSDT", provider="binance-futures", ts=midnight, price=200.0, size=0.0),  # no volume yet
        dict(symbol="BTCUSDT", provider="binance-futures", ts=midnight + 1, price=210.0, size=1.0),
        dict(symbol="BTCUSDT", provider="binance-futures", ts=midnight + 2, price=220.0, size=1.0),
    ]
    op = VwapDeviationBps(VwapDeviationParams(), ctx())
    out = signals_of(op.on_batch("ticks", ticks(rows)) + op.on_eof())
    assert list(out["ts"]) == [midnight - 1, midnight + 1, midnight + 2]
    np.testing.assert_allclose(out["value"], [0.0, 0.0, (220 - 215) / 215 * 1e4])
    assert set(out["provider"]) == {"binance-futures"} and op.metrics()["undefined"] == 1


def test_providers_of_one_symbol_keep_separate_state():
    rows = [
        dict(symbol="BTCUSDT", provider="a", ts=T0, price=100.0, size=1.0),
        dict(symbol="BTCUSDT", provider="b", ts=T0, price=300.0, size=1.0),
        dict(symbol="BTCUSDT", provider="a", ts=T0 + 1, price=110.0, size=1.0),
    ]
    op = VwapDeviationBps(VwapDeviationParams(), ctx())
    out = signals_of(op.on_batch("ticks", ticks(rows)) + op.on_eof())
    assert list(zip(out["provider"], out["ts"])) == [("a", T0), ("a", T0 + 1), ("b", T0)]
    np.testing.assert_allclose(out["value"], [0.0, (110 - 105) / 105 * 1e4, 0.0])


# -- tick_rate_zscore ------------------------------------------------------------------------------


def test_tick_rate_zscore_equals_a_pandas_rolling_computation_on_the_real_day():
    op = TickRateZScore(TickRateParams(interval="1s", window=30), ctx())
    stored = signals_of(drive(op, lobster_events(4096)))
    raw = raw_lobster()
    counts = raw.groupby(raw["ts"] // NS).size()
    full = counts.reindex(range(counts.index.min(), counts.index.max() + 1), fill_value=0).astype(float)
    # two-pass mean/std of each window of the 30 seconds before (pandas' online rolling
    # std leaves ~4e-7 instead of 0 after a run of empty seconds, a 1e8 "z-score")
    windows = np.lib.stride_tricks.sliding_window_view(full.to_numpy(), 30)[:-1]
    mean = pd.Series(windows.mean(axis=1), index=full.index[30:])
    sd = pd.Series(windows.std(axis=1, ddof=1), index=full.index[30:])
    current = full.iloc[30:]
    z = ((current - mean) / sd)[(current > 0) & (sd > 0)]
    np.testing.assert_array_equal(stored["ts"].to_numpy(), z.index.to_numpy() * NS)
    np.testing.assert_allclose(stored["value"].to_numpy(), z.to_numpy(), rtol=1e-9, atol=1e-12)
    assert op.metrics()["warming_up"] > 0 and stored["name"].iloc[0] == "tick_rate_zscore_1s_30"


def test_tick_rate_counts_empty_intervals_as_zero_and_waits_for_a_full_window():
    #   second:   0  1  2  3  4  5  6
    #   ticks:    1  3  .  1  .  .  6        window 3: seconds 0..2 warm up
    #   second 3: window [1, 3, 0] mean 4/3 sd 1.5275; second 6: window [1, 0, 0]
    counts = {0: 1, 1: 3, 3: 1, 6: 6}
    rows = [dict(ts=T0 + s * NS + k, bid=1.0, ask=1.1) for s, n in counts.items() for k in range(n)]
    op = TickRateZScore(TickRateParams(window=3), ctx())
    emits = op.on_batch("ticks", ticks(rows)) + op.on_watermark(T0 + 4 * NS)
    assert list(signals_of(emits)["ts"]) == [T0 + 3 * NS]  # second 6 is still open
    out = signals_of(emits + op.on_eof())
    assert list(out["ts"]) == [T0 + 3 * NS, T0 + 6 * NS]
    np.testing.assert_allclose(out["value"], [(1 - 4 / 3) / np.std([1, 3, 0], ddof=1), (6 - 1 / 3) / np.std([1, 0, 0], ddof=1)])
    late = op.on_batch("ticks", ticks([dict(ts=T0 + 2 * NS, bid=1.0, ask=1.1)]))
    assert [r["reason"] for r in quarantine_of(late)] == ["late"]


def test_tick_rate_keys_never_share_a_window():
    #   AMZN and MSFT interleaved in one stream, scored together; each equals its own run
    rng = np.random.default_rng(5)
    rows = []
    for symbol, rate in (("AMZN", 3.0), ("MSFT", 9.0)):
        for second in range(200):
            rows += [dict(symbol=symbol, ts=T0 + second * NS + k, bid=1.0, ask=1.1) for k in range(rng.poisson(rate))]
    rows.sort(key=lambda r: r["ts"])
    both = TickRateZScore(TickRateParams(window=20), ctx())
    together = signals_of(both.on_batch("ticks", ticks(rows)) + both.on_eof())
    for symbol in ("AMZN", "MSFT"):
        alone = TickRateZScore(TickRateParams(window=20), ctx())
        own = signals_of(alone.on_batch("ticks", ticks([r for r in rows if r["symbol"] == symbol])) + alone.on_eof())
        mine = together[together["symbol"] == symbol].reset_index(drop=True)
        assert len(own) > 100
        pd.testing.assert_frame_equal(mine, own)


def test_symbol_encoding_is_remembered_only_for_the_same_memory():
    from actors.signals.base import encode

    column = pa.array(["AMZN", "MSFT", "AMZN", "BTCUSDT"])
    names, index = encode(column)
    assert [names[i] for i in index] == column.to_pylist()
    other = pa.array(["MSFT", "MSFT", "AMZN", "AMZN"])  # same length, other memory
    names, index = encode(other)
    assert [names[i] for i in index] == other.to_pylist()
    names, index = encode(column.slice(1, 2))
    assert [names[i] for i in index] == ["MSFT", "AMZN"]
    assert encode(pa.array(["lobster"] * 3)) == (["lobster"], pytest.approx(np.zeros(3)))


def test_tick_rate_counts_trades_or_quotes_only():
    rows = [dict(ts=T0 + k, price=1.0, size=1.0) for k in range(3)] + [dict(ts=T0 + 10, bid=1.0, ask=2.0)]
    for which, expected in (("trades", 3), ("quotes", 1), ("all", 4)):
        op = TickRateZScore(TickRateParams(ticks=which, window=2), ctx())
        op.on_batch("ticks", ticks(rows))
        assert op._open[2].tolist() == [expected]
    assert TickRateZScore(TickRateParams(ticks="trades"), ctx()).name == "tick_rate_zscore_1s_60_trades"


# -- rsi and bollinger_pctb against ta ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bars_1m() -> pd.DataFrame:
    bars = reference_bars(lobster_trades(), "1m").reset_index()
    return bars.assign(symbol="AMZN", timeframe="1m", status="confirmed")[BAR.names]


def bar_batches(bars: pd.DataFrame, rows: int) -> list[pa.RecordBatch]:
    return pa.Table.from_pandas(bars, schema=BAR, preserve_index=False).to_batches(max_chunksize=rows)


def run_bars(op, batches) -> pd.DataFrame:
    emits = [e for b in batches for e in op.on_batch("bars", b)] + op.on_eof()
    return signals_of(emits).set_index("ts")


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_rsi_matches_the_ta_library(bars_1m, rows):
    stored = run_bars(Rsi(RsiParams(), ctx()), bar_batches(bars_1m, rows))
    expected = ta.momentum.RSIIndicator(bars_1m["close"], window=14).rsi().set_axis(bars_1m["ts"]).dropna()
    assert list(stored.index) == list(expected.index) and len(stored) == 387 - 13
    np.testing.assert_allclose(stored["value"], expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(stored["score"], (expected - 50) / 50, rtol=1e-9, atol=1e-12)
    assert stored["name"].iloc[0] == "rsi_14_1m" and stored["provider"].iloc[0] == "tickgraph"
    assert json.loads(stored["metadata"].iloc[0]) == {"period": 14, "timeframe": "1m", "smoothing": "wilder", "seed": "zero"}


def wilder_reference(close: pd.Series, period: int, seed: str) -> pd.Series:
    """Wilder's RSI written out from the definition (a plain loop; the test's own).

    Change j ends at bar j + 1. ``sma``: the first average is the mean of changes
    0..period-1 (Wilder 1978); ``first``: the first change is the first average.
    Then avg = (avg * (period - 1) + x) / period; RSI from bar ``period`` on.
    """
    change = np.diff(close.to_numpy())
    gains, losses = np.maximum(change, 0), np.maximum(-change, 0)
    out = np.full(len(close), np.nan)
    if seed == "sma":
        avg_gain, avg_loss, first = gains[:period].mean(), losses[:period].mean(), period - 1
    else:
        avg_gain, avg_loss, first = gains[0], losses[0], 0
    for j in range(first, len(change)):
        if j > first:
            avg_gain = (avg_gain * (period - 1) + gains[j]) / period
            avg_loss = (avg_loss * (period - 1) + losses[j]) / period
        if j + 1 >= period:
            out[j + 1] = 100.0 if avg_loss == 0 else 100 - 100 / (1 + avg_gain / avg_loss)
    return pd.Series(out, index=close.index)


@pytest.mark.parametrize("seed", ["sma", "first"])
def test_rsi_seeds_follow_their_definitions(bars_1m, seed):
    stored = run_bars(Rsi(RsiParams(seed=seed), ctx()), bar_batches(bars_1m, 50))
    expected = wilder_reference(bars_1m["close"], 14, seed).set_axis(bars_1m["ts"]).dropna()
    assert list(stored.index) == list(expected.index) and len(stored) == 387 - 14
    np.testing.assert_allclose(stored["value"], expected, rtol=1e-9)
    assert stored["name"].iloc[0] == f"rsi_14_1m_{seed}"


@pytest.mark.parametrize("rows", [1, 64])
def test_bollinger_pctb_matches_the_ta_library(bars_1m, rows):
    stored = run_bars(BollingerPctB(BollingerParams(), ctx()), bar_batches(bars_1m, rows))
    bands = ta.volatility.BollingerBands(bars_1m["close"], window=20, window_dev=2)
    expected = bands.bollinger_pband().set_axis(bars_1m["ts"]).dropna()
    assert list(stored.index) == list(expected.index) and len(stored) == 387 - 19
    # %b is normalized by the band width: agree to 1e-9 of the band, and to 1e-9 relative
    # wherever the close is not at a band (ta's rolling std differs in the last bits)
    np.testing.assert_allclose(stored["value"], expected, rtol=0, atol=1e-9)
    away = expected.abs() > 0.01
    np.testing.assert_allclose(stored["value"][away], expected[away], rtol=1e-9)
    assert stored["name"].iloc[0] == "bollinger_pctb_20_2_1m"


@pytest.mark.parametrize("rows", [3, 150])
def test_several_symbols_and_a_short_history_give_the_same_values(bars_1m, rows):
    #   AMZN and a second symbol (AMZN's closes reversed) interleaved by bar time; history
    #   of 25 bars per symbol, compacted many times (rows=3) or merged per symbol (rows=150)
    other = bars_1m.assign(symbol="ZZZ", close=bars_1m["close"].to_numpy()[::-1])
    both = pd.concat([bars_1m, other]).sort_values("ts", kind="stable")
    for kind, params in ((Rsi, RsiParams(history_bars=25)), (BollingerPctB, BollingerParams(history_bars=25))):
        stored = run_bars(kind(params, ctx()), bar_batches(both, rows)).reset_index()
        for symbol, frame in (("AMZN", bars_1m), ("ZZZ", other)):
            mine = stored[stored["symbol"] == symbol].set_index("ts")
            if kind is Rsi:
                expected = ta.momentum.RSIIndicator(frame["close"], window=14).rsi()
            else:
                expected = ta.volatility.BollingerBands(frame["close"], window=20, window_dev=2).bollinger_pband()
            expected = expected.set_axis(frame["ts"]).dropna()
            assert list(mine.index) == list(expected.index), (kind.__name__, symbol)
            np.testing.assert_allclose(mine["value"], expected, rtol=1e-9, atol=1e-9)


def test_bar_signals_read_confirmed_bars_of_their_timeframe_only(bars_1m):
    forming = bars_1m.assign(status="forming", close=1.0)
    other = bars_1m.assign(timeframe="5m", close=2.0)
    mixed = pd.concat([forming, other, bars_1m]).sort_values("ts", kind="stable")
    op = Rsi(RsiParams(), ctx())
    stored = run_bars(op, bar_batches(mixed, 100))
    clean = run_bars(Rsi(RsiParams(), ctx()), bar_batches(bars_1m, 100))
    pd.testing.assert_frame_equal(stored, clean)
    assert op.metrics()["ignored"] == 2 * 387


# -- corrections ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Rsi, BollingerPctB])
def test_a_corrected_bar_recomputes_every_later_value(bars_1m, kind):
    params = RsiParams() if kind is Rsi else BollingerParams()
    op = kind(params, ctx())
    first = run_bars(op, bar_batches(bars_1m, 40))
    corrected = bars_1m.iloc[[200]].assign(close=bars_1m["close"].iloc[200] + 1.5, status="corrected")
    redo = signals_of(op.on_batch("bars", pa.RecordBatch.from_pandas(corrected, schema=BAR, preserve_index=False)))
    # expected: the whole series recomputed from scratch with the corrected close
    fixed = bars_1m.copy()
    fixed.loc[200, "close"] += 1.5
    scratch = run_bars(kind(params, ctx()), bar_batches(fixed, 1000))
    assert list(redo["ts"]) == list(bars_1m["ts"].iloc[200:])  # bar 200 and every later one
    np.testing.assert_allclose(redo["value"], scratch.loc[redo["ts"], "value"], rtol=1e-9)
    assert (first.loc[bars_1m["ts"].iloc[199], "value"] == scratch.loc[bars_1m["ts"].iloc[199], "value"])
    assert op.metrics()["corrections"] == 1


@pytest.mark.parametrize("kind", [Rsi, BollingerPctB])
def test_a_late_bar_filling_a_gap_is_inserted_and_later_values_recomputed(bars_1m, kind):
    #   bars 0..249, 251..386 confirmed | later: bar 250 confirmed (a late trade under amend)
    params = RsiParams() if kind is Rsi else BollingerParams()
    op = kind(params, ctx())
    run_bars(op, bar_batches(bars_1m.drop(index=250), 40))
    late = signals_of(op.on_batch("bars", pa.RecordBatch.from_pandas(bars_1m.iloc[[250]], schema=BAR, preserve_index=False)))
    scratch = run_bars(kind(params, ctx()), bar_batches(bars_1m, 1000))
    assert list(late["ts"]) == list(bars_1m["ts"].iloc[250:])
    np.testing.assert_allclose(late["value"], scratch.loc[late["ts"], "value"], rtol=1e-9)


def test_a_correction_older_than_the_history_is_quarantined(bars_1m):
    op = Rsi(RsiParams(history_bars=50), ctx("rsi"))
    run_bars(op, bar_batches(bars_1m, 100))
    old = bars_1m.iloc[[10]].assign(status="corrected", close=1.0)
    emits = op.on_batch("bars", pa.RecordBatch.from_pandas(old, schema=BAR, preserve_index=False))
    (row,) = quarantine_of(emits)
    assert row["reason"] == "correction_too_old" and row["source"] == "rsi/tickgraph/AMZN"
    assert "history_bars" in row["detail"] and signals_of(emits).empty
    recent = bars_1m.iloc[[380]].assign(status="corrected", close=bars_1m["close"].iloc[380] - 1)
    redo = signals_of(op.on_batch("bars", pa.RecordBatch.from_pandas(recent, schema=BAR, preserve_index=False)))
    assert len(redo) == 387 - 380


# -- checkpoints, params, errors ----------------------------------------------------------------------------


def test_snapshot_and_restore_mid_stream_give_the_same_signals():
    events = lobster_events(8192)
    params = VwapDeviationParams(sessions={"AMZN": NY})
    whole = signals_of(drive(VwapDeviationBps(params, ctx()), events))
    first = VwapDeviationBps(params, ctx())
    half = len(events) // 2
    emitted = drive(first, events[:half])
    second = VwapDeviationBps(params, ctx())
    second.restore(first.snapshot())
    emitted += drive(second, events[half:])
    pd.testing.assert_frame_equal(signals_of(emitted), whole)


def test_params_are_validated_with_clear_messages():
    with pytest.raises(ValidationError, match="conflate_ms"):
        SpreadParams(conflate_ms=-1)
    with pytest.raises(ValidationError, match="'1d' is not an intraday interval"):
        TickRateParams(interval="1d")
    with pytest.raises(ValidationError, match=r"history_bars \(20\) must be > period \(20\)"):
        BollingerParams(history_bars=20)
    with pytest.raises(ValidationError, match="'7q' is not a timeframe"):
        RsiParams(timeframe="7q")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SpreadParams(window=3)
    assert RsiParams(name="my_rsi").name == "my_rsi"


def test_a_batch_without_the_needed_columns_is_named():
    op = Rsi(RsiParams(), ctx("signals_rsi"))
    with pytest.raises(ValueError, match=r"node 'signals_rsi': batch on stream 'ticks' lacks column\(s\) \['timeframe'"):
        op.on_batch("ticks", ticks([dict(ts=T0, price=1.0, size=1.0)]))


def test_the_registered_kinds_and_their_streams():
    for kind, cls in (("vwap_deviation_bps", VwapDeviationBps), ("spread_bps", SpreadBps), ("rsi", Rsi),
                      ("bollinger_pctb", BollingerPctB), ("tick_rate_zscore", TickRateZScore)):  # fmt: skip
        assert load_kind(kind) is cls
        assert cls.outputs == {"signals": SIGNAL, "quarantine": QUARANTINE} and cls.keyed


# -- formulas -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1 / 14, 0.5, 1.0, 0.001])
def test_ewm_recurrence_equals_pandas_ewm_over_long_series(alpha):
    x = np.random.default_rng(1).gamma(1.0, 2.0, 5_000)
    expected = pd.Series(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ind.ewm_recurrence(x, alpha, None), expected, rtol=1e-12)
    tail = ind.ewm_recurrence(x[2000:], alpha, float(expected[1999]))
    np.testing.assert_allclose(tail, expected[2000:], rtol=1e-12)


def test_sorting_by_key_and_time_keeps_arrival_order_for_ties():
    key = np.array([1, 0, 1, 0, 1])
    ts = np.array([5, 9, 5, 3, 2])
    order = ind.sort_by_key_ts(key, ts)
    assert order.tolist() == [3, 1, 4, 0, 2]
    assert ind.sort_by_key_ts(np.array([0, 0, 1]), np.array([1, 2, 0])) is None
    assert ind.last_of_runs(key[order], ts[order]).tolist() == [True, True, True, False, True]
