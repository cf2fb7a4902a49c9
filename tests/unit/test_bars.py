"""BarEngine on real ticks (LOBSTER AMZN, Tardis BTCUSDT) against an independent pandas groupby.

The TICK batches are built here from the raw fixture files (``fixtures/``, byte-identical
to ``/work/shared/data``); the expected bars are computed with pandas (``dt.floor`` /
``tz_localize``), never with engine code.
"""

from __future__ import annotations

import pickle
from datetime import datetime, timezone
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from graph.registry import load_kind
from actors.bars import BarEngine, BarParams
from graph.operator import OperatorContext
from graph.schemas import BAR, QUARANTINE, TICK
from graph.timeframes import TIMEFRAMES
from tests.conftest import LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, TARDIS_QUOTES, TARDIS_TRADES

NY = "America/New_York"
AMZN_SESSION = {"tz": NY, "open": "09:30", "close": "16:00"}
FREQ = {"1s": "1s", "1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h"}
S = 1_000_000_000
CTX = OperatorContext(node_id="bars")


# --------------------------------------------------------------------------- fixtures
def _utc_ns(text: str) -> int:
    """``'2012-06-21 13:30'`` (UTC) as int ns."""
    return pd.Timestamp(text, tz="UTC").value


@cache
def amzn_ticks() -> pd.DataFrame:
    """Every LOBSTER message as a TICK row: executions (type 4, 5) are trades, the rest quotes."""
    names = ["time", "type", "order_id", "size", "price", "direction"]
    msg = pd.read_csv(LOBSTER_MESSAGES, header=None, names=names, dtype={"time": str})
    book = pd.read_csv(LOBSTER_ORDERBOOK, header=None, names=["ask", "ask_size", "bid", "bid_size"])
    seconds = msg["time"].str.split(".", expand=True)
    after_midnight = seconds[0].astype(np.int64) * S + seconds[1].str.ljust(9, "0").astype(np.int64)
    trade = msg["type"].isin([4, 5]).to_numpy()
    return pd.DataFrame(
        {
            "symbol": "AMZN",
            "ts": pd.Timestamp("2012-06-21", tz=NY).value + after_midnight,
            "price": np.where(trade, msg["price"] / 10_000, np.nan),
            "size": np.where(trade, msg["size"].astype(float), np.nan),
            "side": np.where(trade, np.where(msg["direction"] == -1, "buy", "sell"), None),
            "bid": book["bid"] / 10_000,
            "ask": book["ask"] / 10_000,
            "bid_size": book["bid_size"].astype(float),
            "ask_size": book["ask_size"].astype(float),
            "provider": "lobster",
            "seq": np.arange(len(msg), dtype=np.int64),
            "origin": "replay",
        }
    )


@cache
def btc_ticks() -> pd.DataFrame:
    """Tardis trades (seq = trade id) and quotes (seq = row), merged in exchange-time order."""
    trades = pd.read_csv(TARDIS_TRADES)
    quotes = pd.read_csv(TARDIS_QUOTES)
    trade_rows = pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "ts": trades["timestamp"] * 1_000,
            "price": trades["price"].astype(float),
            "size": trades["amount"].astype(float),
            "side": trades["side"],
            "seq": trades["id"],
        }
    )
    quote_rows = pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "ts": quotes["timestamp"] * 1_000,
            "bid": quotes["bid_price"].astype(float),
            "ask": quotes["ask_price"].astype(float),
            "bid_size": quotes["bid_amount"].astype(float),
            "ask_size": quotes["ask_amount"].astype(float),
            "seq": np.arange(len(quotes), dtype=np.int64),
        }
    )
    ticks = pd.concat([trade_rows, quote_rows], ignore_index=True).sort_values("ts", kind="stable")
    return ticks.assign(provider="tardis", origin="replay").reset_index(drop=True)


def to_batch(frame: pd.DataFrame) -> pa.RecordBatch:
    """A TICK RecordBatch of a frame with (a subset of) the TICK columns; missing ones are null."""
    columns = {
        name: frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        for name in TICK.names
    }
    table = pa.Table.from_pandas(
        pd.DataFrame(columns).reset_index(drop=True), schema=TICK, preserve_index=False
    )
    return (
        table.combine_chunks().to_batches()[0] if len(frame) else pa.RecordBatch.from_pylist([], schema=TICK)
    )


def run_stream(engine: BarEngine, frames: list[pd.DataFrame], batch_rows: int, start: int = 0, stop=None):
    """Feed several time-ordered streams interleaved: batch k holds chunk k of every frame.

    After batch k comes the watermark min(ts of every later row), the exact replay
    watermark; after the last batch, end-of-stream. Returns every emit, in order.
    """
    chunks = [[f.iloc[i : i + batch_rows] for i in range(0, len(f), batch_rows)] for f in frames]
    count = max(len(c) for c in chunks)
    emits = []
    for k in range(start, count if stop is None else stop):
        part = pd.concat([c[k] for c in chunks if k < len(c)], ignore_index=True)
        emits += engine.on_batch("ticks", to_batch(part))
        later = [c[k + 1]["ts"].iloc[0] for c in chunks if k + 1 < len(c)]
        if later:
            emits += engine.on_watermark(int(min(later)))
    if stop is None:
        emits += engine.on_eof()
    return emits


def bars_of(emits, status: str = "confirmed") -> pd.DataFrame:
    """The ``bars`` rows of ``status`` among emits, as a frame."""
    batches = [b for name, b in emits if name == "bars"]
    frame = pa.Table.from_batches(batches, schema=BAR).to_pandas()
    return frame[frame["status"] == status].reset_index(drop=True)


def expected_bars(ticks: pd.DataFrame, timeframe: str, session: dict | None = None) -> pd.DataFrame:
    """Independent OHLCV: pandas groupby on the bar open time, open/close = first/last in file order."""
    trades = ticks[ticks["price"].notna()]
    when = pd.to_datetime(trades["ts"], unit="ns", utc=True)
    if timeframe == "1d":
        session = session or {"tz": "UTC", "open": "00:00", "close": "24:00"}
        local_date = when.dt.tz_convert(session["tz"]).dt.date.astype(str)
        at = lambda hhmm, date: (  # noqa: E731
            pd.to_datetime(date + " 00:00").dt.tz_localize(session["tz"]) + pd.Timedelta(days=1)
            if hhmm == "24:00"
            else pd.to_datetime(date + " " + hhmm).dt.tz_localize(session["tz"])
        )
        opens, closes = at(session["open"], local_date), at(session["close"], local_date)
        inside = (when >= opens) & (when < closes)
        trades, bar = trades[inside], opens[inside]
    else:
        bar = when.dt.floor(FREQ[timeframe])
    grouped = trades.groupby(bar.to_numpy(), sort=True)
    volume = grouped["size"].sum()
    frame = pd.DataFrame(
        {
            "open": grouped["price"].first(),
            "high": grouped["price"].max(),
            "low": grouped["price"].min(),
            "close": grouped["price"].last(),
            "volume": volume,
            "vwap": (trades["price"] * trades["size"]).groupby(bar.to_numpy(), sort=True).sum() / volume,
            "trade_count": grouped["price"].count(),
        }
    )
    frame.insert(0, "ts", pd.DatetimeIndex(frame.index).tz_convert("UTC").as_unit("ns").asi8)
    return frame.reset_index(drop=True)


def assert_bars_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """ts, OHLC and counts exact; volume and vwap to 1e-9 relative."""
    actual = actual.sort_values("ts").reset_index(drop=True)
    assert len(actual) == len(expected)
    for column in ("ts", "open", "high", "low", "close", "trade_count"):
        np.testing.assert_array_equal(actual[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
    for column in ("volume", "vwap"):
        np.testing.assert_allclose(actual[column], expected[column], rtol=1e-9, atol=0, err_msg=column)


def engine(**params) -> BarEngine:
    return BarEngine(BarParams(**params), CTX)


def trade(symbol: str, ts: int, price: float, size: float = 1.0, seq: int = 0) -> dict:
    return {
        "symbol": symbol,
        "ts": ts,
        "price": price,
        "size": size,
        "seq": seq,
        "provider": "t",
        "origin": "replay",
    }


def batch(*rows: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{name: r.get(name) for name in TICK.names} for r in rows], schema=TICK)


def rows(emits, name: str = "bars") -> list[dict]:
    return [row for n, b in emits if n == name for row in b.to_pylist()]


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_run():
    """AMZN and BTCUSDT ticks (trades and quotes) interleaved in 4,096-row batches."""
    bars = engine(sessions={"AMZN": AMZN_SESSION})
    emits = run_stream(bars, [amzn_ticks(), btc_ticks()], batch_rows=4_096)
    return bars, emits


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("symbol", ["AMZN", "BTCUSDT"])
def test_confirmed_bars_match_pandas(real_run, symbol, timeframe):
    _, emits = real_run
    confirmed = bars_of(emits)
    actual = confirmed[(confirmed["symbol"] == symbol) & (confirmed["timeframe"] == timeframe)]
    ticks = amzn_ticks() if symbol == "AMZN" else btc_ticks()
    session = AMZN_SESSION if symbol == "AMZN" else None
    assert_bars_equal(actual, expected_bars(ticks, timeframe, session))


def test_reference_totals(real_run):
    bars, emits = real_run
    confirmed = bars_of(emits)
    amzn_1m = confirmed[(confirmed["symbol"] == "AMZN") & (confirmed["timeframe"] == "1m")]
    btc_1m = confirmed[(confirmed["symbol"] == "BTCUSDT") & (confirmed["timeframe"] == "1m")]
    assert amzn_1m["volume"].sum() == 810_755
    assert amzn_1m["trade_count"].sum() == 11_419
    assert btc_1m["volume"].sum() == pytest.approx(4_024.301, rel=1e-12)
    assert btc_1m["trade_count"].sum() == 9_999
    amzn_1d = confirmed[(confirmed["symbol"] == "AMZN") & (confirmed["timeframe"] == "1d")]
    assert amzn_1d["ts"].tolist() == [_utc_ns("2012-06-21 13:30")]
    assert amzn_1d["vwap"].round(4).tolist() == [222.6348]
    btc_1d = confirmed[(confirmed["symbol"] == "BTCUSDT") & (confirmed["timeframe"] == "1d")]
    assert btc_1d["ts"].tolist() == [_utc_ns("2020-02-22")]
    assert btc_1d["vwap"].round(4).tolist() == [9683.3552]
    metrics = bars.metrics()
    assert metrics["trades"] == 11_419 + 9_999
    assert metrics["quotes"] == (57_515 - 11_419) + 9_999
    assert metrics["late"] == metrics["outside_session"] == metrics["invalid"] == 0  # exact replay watermarks
    assert metrics["late_quarantined"] == 0 and metrics["bars_corrected"] == {}
    assert metrics["bars_confirmed"]["AMZN"]["1m"] == len(amzn_1m)
    assert metrics["bars_confirmed"]["BTCUSDT"]["1d"] == 1


def test_each_bar_confirmed_exactly_once(real_run):
    confirmed = bars_of(real_run[1])
    assert not confirmed.duplicated(["symbol", "timeframe", "ts"]).any()


def test_quotes_do_not_change_bars(real_run):
    trades_only = [f[f["price"].notna()] for f in (amzn_ticks(), btc_ticks())]
    emits = run_stream(engine(sessions={"AMZN": AMZN_SESSION}), trades_only, batch_rows=1_000)
    # other batch boundaries, so other confirmation order; volume sums may differ in the last bit
    key = ["symbol", "timeframe", "ts"]
    without, with_quotes = (bars_of(e).sort_values(key, ignore_index=True) for e in (emits, real_run[1]))
    pd.testing.assert_frame_equal(without, with_quotes, check_exact=False, rtol=1e-12)
    pd.testing.assert_series_equal(without["close"], with_quotes["close"], check_exact=True)


def test_every_emit_is_sorted_by_symbol_timeframe_ts(real_run):
    for name, out in real_run[1]:
        assert out.schema == (BAR if name == "bars" else QUARANTINE)
        frame = out.to_pandas()
        key = list(zip(frame["symbol"], frame["timeframe"].map(TIMEFRAMES.index), frame["ts"]))
        assert key == sorted(key)


def test_forming_rows_are_the_touched_bars_still_open_at_the_watermark():
    # batch 1 = AMZN ticks [0, 3000), then watermark w1 = its last ts: every 1m bar
    # before w1's minute is confirmed; the bar holding w1 and the 1h bar are forming.
    # batch 2 = [3000, 6000), then w2 likewise.
    amzn = amzn_ticks()
    first, second = amzn.iloc[:3_000], amzn.iloc[3_000:6_000]
    bars = engine(timeframes=["1m", "1h"], sessions={"AMZN": AMZN_SESSION})
    assert not bars_of(bars.on_batch("ticks", to_batch(first)), "forming").size  # deferred
    out = bars.on_watermark(int(first["ts"].iloc[-1]))
    confirmed, forming = bars_of(out, "confirmed"), bars_of(out, "forming")
    want = expected_bars(first, "1m")
    assert_bars_equal(confirmed, want.iloc[:-1].reset_index(drop=True))  # confirmed once, never also forming
    assert_bars_equal(forming[forming["timeframe"] == "1m"], want.iloc[-1:].reset_index(drop=True))
    assert_bars_equal(forming[forming["timeframe"] == "1h"], expected_bars(first, "1h"))
    bars.on_batch("ticks", to_batch(second))
    forming = bars_of(bars.on_watermark(int(second["ts"].iloc[-1])), "forming")
    both = amzn.iloc[:6_000]
    assert_bars_equal(forming[forming["timeframe"] == "1m"], expected_bars(both, "1m").iloc[-1:].reset_index(drop=True))
    # the second batch crosses 14:00 UTC: the 13:00 bar is confirmed by w2, the 14:00 one forms
    assert_bars_equal(forming[forming["timeframe"] == "1h"], expected_bars(both, "1h").iloc[-1:].reset_index(drop=True))
    quiet = engine(emit_forming=False)
    quiet.on_batch("ticks", to_batch(first))
    assert not bars_of(quiet.on_watermark(int(first["ts"].iloc[-1])), "forming").size


def test_snapshot_restore_mid_stream_gives_identical_output():
    frames = [amzn_ticks(), btc_ticks()]
    whole = run_stream(engine(sessions={"AMZN": AMZN_SESSION}), frames, batch_rows=5_000)
    first = engine(sessions={"AMZN": AMZN_SESSION})
    emits = run_stream(first, frames, batch_rows=5_000, stop=6)
    state = pickle.loads(pickle.dumps(first.snapshot()))
    second = engine(sessions={"AMZN": AMZN_SESSION})
    second.restore(state)
    emits += run_stream(second, frames, batch_rows=5_000, start=6)
    assert [name for name, _ in emits] == [name for name, _ in whole]
    assert all(a.equals(b) for (_, a), (_, b) in zip(emits, whole))
    uninterrupted = engine(sessions={"AMZN": AMZN_SESSION})
    run_stream(uninterrupted, frames, batch_rows=5_000)
    assert second.metrics() == uninterrupted.metrics()


def test_restore_rejects_other_timeframes():
    state = engine(timeframes=["1m"]).snapshot()
    with pytest.raises(ValueError, match=r"snapshot has timeframes \['1m'\], this engine has \['1s'"):
        engine().restore(state)


# --------------------------------------------------------------------------- timelines
def test_confirmation_happens_exactly_when_the_watermark_reaches_the_bar_end():
    # time (s)    0    30   60   90   120
    # trades      a    b    c    d
    # 1m bars     [---- bar 0 ---)[---- bar 1 ---)
    # watermarks            59.999 60       119.9 120
    # confirmed               -    bar 0      -   bar 1
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1m"], emit_forming=False)
    assert (
        bars.on_batch("ticks", batch(trade("X", t0, 10.0, seq=1), trade("X", t0 + 30 * S, 11.0, seq=2))) == []
    )
    assert bars.on_watermark(t0 + 60 * S - 1) == []
    (confirmed,) = rows(bars.on_watermark(t0 + 60 * S))
    assert (confirmed["ts"], confirmed["open"], confirmed["close"], confirmed["trade_count"]) == (
        t0,
        10.0,
        11.0,
        2,
    )
    assert confirmed["status"] == "confirmed"
    # a tick at exactly the watermark is on time (the watermark promises only ts >= w)
    bars.on_batch("ticks", batch(trade("X", t0 + 60 * S, 12.0, seq=3), trade("X", t0 + 90 * S, 9.0, seq=4)))
    assert bars.on_watermark(t0 + 60 * S) == []  # not advancing: nothing
    assert bars.on_watermark(t0 + 120 * S - 100_000_000) == []
    (confirmed,) = rows(bars.on_watermark(t0 + 120 * S))
    assert (confirmed["ts"], confirmed["low"], confirmed["trade_count"]) == (t0 + 60 * S, 9.0, 2)
    # one nanosecond before the end of a confirmed bar is late; the next bar is not
    emits = bars.on_batch(
        "ticks", batch(trade("X", t0 + 120 * S - 1, 8.0, seq=5), trade("X", t0 + 120 * S, 7.0, seq=6))
    )
    assert [(r["row"], r["reason"]) for r in rows(emits, "quarantine")] == [(5, "late")]
    assert [(r["ts"], r["open"], r["trade_count"]) for r in rows(bars.on_eof())] == [(t0 + 120 * S, 7.0, 1)]
    metrics = bars.metrics()
    assert metrics["bars_confirmed"] == {"X": {"1m": 3}}
    assert metrics["late"] == metrics["late_quarantined"] == 1


def test_eof_confirms_every_open_bar():
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1s", "1h", "1d"], emit_forming=False)
    bars.on_batch("ticks", batch(trade("X", t0, 1.0), trade("Y", t0 + 5 * S, 2.0)))
    out = rows(bars.on_eof())
    assert [(r["symbol"], r["timeframe"]) for r in out] == [
        ("X", "1s"), ("X", "1h"), ("X", "1d"), ("Y", "1s"), ("Y", "1h"), ("Y", "1d"),
    ]  # fmt: skip
    assert {r["status"] for r in out} == {"confirmed"}
    assert bars.on_eof() == []


def amending(amend_window_ms: int = 3_600_000, **params) -> BarEngine:
    ctx = OperatorContext(node_id="bars", late_policy="amend", amend_window_ns=amend_window_ms * 1_000_000)
    return BarEngine(BarParams(**params), ctx)


def test_drop_policy_applies_a_late_trade_to_no_bar_even_where_its_bar_is_open():
    # time (min)   0         1         2         5
    # 1m bars      [-- b0 --)[-- b1 --)[-- b2 --) ...
    # 5m bars      [------------------ B0 ------------)
    # watermark               1:00 (b0 confirmed)
    # late trade     0:30 -> ts < watermark: quarantined, in neither b0 nor B0 (still open)
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1m", "5m"], emit_forming=False)
    bars.on_batch("ticks", batch(trade("X", t0, 10.0, seq=1), trade("X", t0 + 70 * S, 11.0, seq=2)))
    assert [r["timeframe"] for r in rows(bars.on_watermark(t0 + 60 * S))] == ["1m"]
    emits = bars.on_batch("ticks", batch(trade("X", t0 + 30 * S, 99.0, size=3.0, seq=7)))
    (late,) = rows(emits, "quarantine")
    assert [name for name, _ in emits] == ["quarantine"]
    assert late["source"] == "bars/t/X" and late["row"] == 7 and late["reason"] == "late"
    assert late["symbol"] == "X" and late["ts"] == t0 + 30 * S
    for text in ("X", "2024-01-02T10:00:30Z", "older than the watermark 2024-01-02T10:01:00Z", "late_policy drop"):
        assert text in late["detail"]
    assert '"price": 99.0' in late["raw"]
    final = {r["timeframe"]: r for r in rows(bars.on_eof())}
    assert (final["5m"]["high"], final["5m"]["trade_count"], final["5m"]["volume"]) == (11.0, 2, 2.0)
    assert final["1m"]["ts"] == t0 + 60 * S and final["1m"]["trade_count"] == 1
    metrics = bars.metrics()
    assert metrics["late"] == metrics["late_quarantined"] == 1
    assert metrics["bars_corrected"] == {}


def test_amend_policy_corrects_the_confirmed_bar_and_updates_the_open_one():
    # same timeline as above, late_policy amend: the late 0:30 trade (price 99, size 3)
    # corrects the confirmed 1m bar b0 at once and joins the open 5m bar B0.
    t0 = _utc_ns("2024-01-02 10:00")
    bars = amending(timeframes=["1m", "5m"], emit_forming=False)
    bars.on_batch("ticks", batch(trade("X", t0, 10.0, seq=1), trade("X", t0 + 70 * S, 11.0, seq=2)))
    (b0,) = rows(bars.on_watermark(t0 + 60 * S))
    assert (b0["status"], b0["close"], b0["trade_count"]) == ("confirmed", 10.0, 1)
    emits = bars.on_batch("ticks", batch(trade("X", t0 + 30 * S, 99.0, size=3.0, seq=7)))
    (corrected,) = rows(emits)
    assert [name for name, _ in emits] == ["bars"]
    assert (corrected["timeframe"], corrected["ts"], corrected["status"]) == ("1m", t0, "corrected")
    # hand-worked: trades (0:00, 10.0 x 1) and (0:30, 99.0 x 3)
    assert (corrected["open"], corrected["high"], corrected["low"], corrected["close"]) == (10.0, 99.0, 10.0, 99.0)
    assert (corrected["volume"], corrected["trade_count"]) == (4.0, 2)
    assert corrected["vwap"] == pytest.approx((10.0 + 3 * 99.0) / 4, rel=1e-15)
    # a second late trade corrects the corrected bar (0:45 closes it now)
    (again,) = rows(bars.on_batch("ticks", batch(trade("X", t0 + 45 * S, 5.0, seq=8))))
    assert (again["low"], again["close"], again["trade_count"], again["status"]) == (5.0, 5.0, 3, "corrected")
    final = {r["timeframe"]: r for r in rows(bars.on_eof())}
    five = final["5m"]
    assert (five["open"], five["high"], five["low"], five["trade_count"]) == (10.0, 99.0, 5.0, 4)
    metrics = bars.metrics()
    assert (metrics["late"], metrics["late_quarantined"]) == (2, 0)
    assert metrics["bars_corrected"] == {"X": {"1m": 2}}


def test_amend_a_bar_that_had_no_trades_is_confirmed_once_then_corrected():
    # 1m bars: 10:00 has a trade, 10:01 none; watermark 10:03 confirms 10:00 only.
    # A late trade at 10:01:30 creates bar 10:01: first emitted as confirmed, not corrected.
    t0 = _utc_ns("2024-01-02 10:00")
    bars = amending(timeframes=["1m"], emit_forming=False)
    bars.on_batch("ticks", batch(trade("X", t0, 1.0, seq=1), trade("X", t0 + 190 * S, 2.0, seq=2)))
    assert [r["ts"] for r in rows(bars.on_watermark(t0 + 180 * S))] == [t0]
    (created,) = rows(bars.on_batch("ticks", batch(trade("X", t0 + 90 * S, 7.0, seq=3))))
    assert (created["ts"], created["status"], created["trade_count"]) == (t0 + 60 * S, "confirmed", 1)
    (fixed,) = rows(bars.on_batch("ticks", batch(trade("X", t0 + 100 * S, 8.0, seq=4))))
    assert (fixed["ts"], fixed["status"], fixed["close"], fixed["trade_count"]) == (t0 + 60 * S, "corrected", 8.0, 2)
    assert bars.metrics()["bars_confirmed"] == {"X": {"1m": 2}}


def test_amend_window_bounds_what_can_still_be_corrected():
    # amend_window_ms 60 000: at watermark 10:05 bars ending at or before 10:04 are no
    # longer kept; a trade older than 10:04 is quarantined, a trade at 10:04:10 corrects.
    t0 = _utc_ns("2024-01-02 10:00")
    bars = amending(timeframes=["1m"], emit_forming=False, amend_window_ms=60_000)
    bars.on_batch("ticks", batch(*(trade("X", t0 + m * 60 * S + 5 * S, 1.0 + m, seq=m) for m in range(6))))
    assert len(rows(bars.on_watermark(t0 + 300 * S))) == 5
    emits = bars.on_batch("ticks", batch(trade("X", t0 + 230 * S, 9.0, seq=10), trade("X", t0 + 250 * S, 9.0, seq=11)))
    (late,) = rows(emits, "quarantine")
    assert late["row"] == 10 and "amend_window_ms 60000" in late["detail"]
    (fixed,) = rows(emits)
    assert (fixed["ts"], fixed["status"], fixed["high"]) == (t0 + 240 * S, "corrected", 9.0)
    metrics = bars.metrics()
    assert (metrics["late"], metrics["late_quarantined"]) == (2, 1)


def test_forming_rows_are_throttled_by_event_time():
    # forming_interval 60 s; one trade per 10 s into the 1h bar; a watermark after each.
    # time (s)        0   10  20 ... 60  70 ... 120
    # forming row     x                x            x     (at most one per 60 s of watermark time)
    t0 = _utc_ns("2024-01-02 10:00")
    ctx = OperatorContext(node_id="bars", forming_interval_ns=60 * S)
    bars = BarEngine(BarParams(timeframes=["1h"]), ctx)
    sent = []
    for k in range(13):
        bars.on_batch("ticks", batch(trade("X", t0 + 10 * k * S, 1.0 + k, seq=k)))
        sent += [(k, r["trade_count"]) for r in rows(bars.on_watermark(t0 + 10 * k * S + 1))]
    assert sent == [(0, 1), (6, 7), (12, 13)]
    # an update held back goes out at the first watermark one interval later, with no new trade
    bars.on_batch("ticks", batch(trade("X", t0 + 121 * S, 50.0, seq=20)))
    assert rows(bars.on_watermark(t0 + 150 * S)) == []
    (late_update,) = rows(bars.on_watermark(t0 + 180 * S + 1))
    assert (late_update["status"], late_update["trade_count"], late_update["close"]) == ("forming", 14, 50.0)
    assert rows(bars.on_watermark(t0 + 300 * S)) == []  # nothing new touched: nothing sent


def test_trade_late_for_every_timeframe_updates_nothing():
    day = _utc_ns("2024-01-02")
    bars = engine(timeframes=["1m", "1d"], emit_forming=False)
    bars.on_batch("ticks", batch(trade("X", day + 3600 * S, 1.0, seq=1)))
    assert [r["timeframe"] for r in rows(bars.on_watermark(day + 86_400 * S))] == ["1m", "1d"]
    emits = bars.on_batch("ticks", batch(trade("X", day + 7200 * S, 2.0, seq=2)))
    assert [name for name, _ in emits] == ["quarantine"]
    assert "older than the watermark 2024-01-03T00:00:00Z" in rows(emits, "quarantine")[0]["detail"]
    assert bars.on_eof() == []
    assert bars.metrics()["late_quarantined"] == 1


def test_trade_after_eof_is_late_not_a_second_confirmation():
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1m"])
    bars.on_batch("ticks", batch(trade("X", t0, 1.0)))
    bars.on_eof()
    emits = bars.on_batch("ticks", batch(trade("X", t0 + S, 2.0, seq=5)))
    assert [name for name, _ in emits] == ["quarantine"]
    assert "end-of-stream" in rows(emits, "quarantine")[0]["detail"]


def test_invalid_trades_are_quarantined():
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1m"], emit_forming=False)
    emits = bars.on_batch(
        "ticks",
        batch(
            trade("X", t0, float("nan"), seq=1),
            trade("X", t0, 5.0, size=-1.0, seq=2),
            trade("X", t0, 4.0, seq=3),
        ),
    )
    assert [(r["row"], r["reason"]) for r in rows(emits, "quarantine")] == [
        (1, "invalid_trade"),
        (2, "invalid_trade"),
    ]
    (bar,) = rows(bars.on_eof())
    assert bar["open"] == 4.0 and bar["trade_count"] == 1
    assert bars.metrics()["invalid"] == 2


def test_zero_volume_bar_has_vwap_equal_to_close():
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1m"], emit_forming=False)
    bars.on_batch(
        "ticks", batch(trade("X", t0, 5.0, size=0.0, seq=1), trade("X", t0 + S, 6.0, size=0.0, seq=2))
    )
    (bar,) = rows(bars.on_eof())
    assert bar["volume"] == 0.0 and bar["vwap"] == 6.0


def test_many_symbols_in_one_batch_come_out_sorted():
    t0 = _utc_ns("2024-01-02 10:00")
    bars = engine(timeframes=["1m", "1s"])
    bars.on_batch("ticks", batch(*(trade(s, t0 + i * S, 1.0 + i, seq=i) for i, s in enumerate("ZYXZYX"))))
    emits = bars.on_watermark(t0)  # nothing ends by t0: every touched bar is forming
    assert [(r["symbol"], r["timeframe"], r["ts"]) for r in rows(emits)] == [
        ("X", "1s", t0 + 2 * S), ("X", "1s", t0 + 5 * S), ("X", "1m", t0),
        ("Y", "1s", t0 + S), ("Y", "1s", t0 + 4 * S), ("Y", "1m", t0),
        ("Z", "1s", t0), ("Z", "1s", t0 + 3 * S), ("Z", "1m", t0),
    ]  # fmt: skip
    assert {r["status"] for r in rows(emits)} == {"forming"}


def test_outside_session_trades_are_in_intraday_bars_only():
    nine = pd.Timestamp("2012-06-21 09:00", tz=NY).value
    ten = pd.Timestamp("2012-06-21 10:00", tz=NY).value
    bars = engine(timeframes=["1h", "1d"], sessions={"default": AMZN_SESSION}, emit_forming=False)
    bars.on_batch("ticks", batch(trade("AMZN", nine, 1.0, seq=1), trade("AMZN", ten, 2.0, seq=2)))
    out = {(r["timeframe"], r["ts"]): r for r in rows(bars.on_eof())}
    assert out[("1h", _utc_ns("2012-06-21 13:00"))]["open"] == 1.0
    assert out[("1d", _utc_ns("2012-06-21 13:30"))]["open"] == 2.0
    assert out[("1d", _utc_ns("2012-06-21 13:30"))]["trade_count"] == 1
    assert bars.metrics()["outside_session"] == 1


# --------------------------------------------------------------------------- sessions, DST
@pytest.mark.parametrize(
    ("local_day", "open_utc"),
    [
        ("2021-03-12", "2021-03-12 14:30"),  # Friday, EST (UTC-5)
        ("2021-03-15", "2021-03-15 13:30"),  # Monday after spring-forward, EDT (UTC-4)
        ("2021-11-05", "2021-11-05 13:30"),  # Friday, EDT
        ("2021-11-08", "2021-11-08 14:30"),  # Monday after fall-back, EST
    ],
)
def test_daily_bar_ts_follows_dst(local_day, open_utc):
    noon = pd.Timestamp(f"{local_day} 12:00", tz=NY).value
    bars = engine(timeframes=["1d"], sessions={"SPY": AMZN_SESSION}, emit_forming=False)
    bars.on_batch("ticks", batch(trade("SPY", noon, 400.0)))
    close_utc = _utc_ns(open_utc) + int(6.5 * 3600) * S
    assert bars.on_watermark(close_utc - 1) == []
    (bar,) = rows(bars.on_watermark(close_utc))
    assert bar["ts"] == _utc_ns(open_utc)


@pytest.mark.parametrize(
    ("local_day", "open_utc", "end_utc"),
    [
        ("2021-03-14", "2021-03-14 05:00", "2021-03-15 04:00"),  # 23-hour day
        ("2021-11-07", "2021-11-07 04:00", "2021-11-08 05:00"),  # 25-hour day
    ],
)
def test_local_calendar_day_on_dst_sundays(local_day, open_utc, end_utc):
    # A 00:00-24:00 New York session: the 1d bar is the local day, 23 or 25 hours long.
    bars = engine(timeframes=["1d"], sessions={"default": {"tz": NY}}, emit_forming=False)
    first = _utc_ns(open_utc)
    last = _utc_ns(end_utc) - 1
    bars.on_batch(
        "ticks",
        batch(
            trade("ES", first - 1, 1.0, seq=1), trade("ES", first, 2.0, seq=2), trade("ES", last, 3.0, seq=3)
        ),
    )
    (previous,) = rows(bars.on_watermark(first))
    assert previous["close"] == 1.0
    assert bars.on_watermark(_utc_ns(end_utc) - 1) == []
    (bar,) = rows(bars.on_watermark(_utc_ns(end_utc)))
    assert (bar["ts"], bar["open"], bar["close"], bar["trade_count"]) == (first, 2.0, 3.0, 2)


def test_session_open_in_the_spring_forward_gap_moves_forward():
    # 02:30 does not exist in New York on 2021-03-14; like PEP 495 fold=0 it maps to 03:30 EDT.
    bars = engine(timeframes=["1d"], sessions={"default": {"tz": NY, "open": "02:30", "close": "12:00"}})
    bars.on_batch("ticks", batch(trade("ES", _utc_ns("2021-03-14 10:00"), 1.0)))
    (bar,) = rows(bars.on_eof())
    assert bar["ts"] == _utc_ns("2021-03-14 07:30")


# --------------------------------------------------------------------------- params
def test_registered_kind_and_defaults():
    assert load_kind("bars") is BarEngine
    assert BarEngine.Params is BarParams and BarEngine.keyed
    params = BarParams()
    assert params.timeframes == list(TIMEFRAMES) and params.emit_forming is True
    assert params.session_for("ANY").tz == "UTC"
    assert BarParams(sessions={"default": AMZN_SESSION, "BTC": {}}).session_for("X").tz == NY


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"timeframes": []}, "at least 1 item"),
        (
            {"timeframes": ["1m", "7q"]},
            r"timeframes\.1\n.*'7q' is not a timeframe \(1s, 1m, 5m, 15m, 1h, 1d\)",
        ),
        ({"timeframes": ["1m", "1h", "1m"]}, "timeframes must be unique, got 1m more than once"),
        (
            {"sessions": {"AMZN": {"tz": "America/New_Yrok"}}},
            "'America/New_Yrok' is not a known IANA time zone",
        ),
        (
            {"sessions": {"AMZN": {"tz": NY, "open": "9:30"}}},
            r"sessions\.AMZN\.open\n.*'9:30' is not a time HH:MM",
        ),
        ({"sessions": {"AMZN": {"open": "24:00"}}}, "'24:00' is not a time HH:MM from 00:00 to 23:59"),
        ({"sessions": {"AMZN": {"close": "16:60"}}}, "'16:60' is not a time HH:MM from 00:00 to 24:00"),
        ({"sessions": {"AMZN": {"open": "16:00", "close": "09:30"}}}, "close 09:30 must be after open 16:00"),
        ({"sessions": {"AMZN": {"tz": NY, "opens": "09:30"}}}, "Extra inputs are not permitted"),
        ({"emit_forming": True, "window": 3}, "Extra inputs are not permitted"),
    ],
)
def test_params_are_validated(params, message):
    with pytest.raises(ValidationError, match=message):
        BarParams(**params)


def test_quarantine_details_use_iso_utc_with_nanoseconds():
    from actors.bars import _iso

    assert _iso(_utc_ns("2012-06-21 13:30") + 17_459_617) == "2012-06-21T13:30:00.017459617Z"
    assert _iso(int(datetime(2024, 1, 2, tzinfo=timezone.utc).timestamp()) * S) == "2024-01-02T00:00:00Z"
