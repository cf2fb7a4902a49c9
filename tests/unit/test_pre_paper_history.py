"""The seed's four warm-start tests (shared/seeds/004_pre_paper_history.md, "Unit Tests"), on the
real AMZN bars of the fixture backtest (its decisions.parquet: the bars it decided on).

    cache (websocket)          needed: the 41 newest bars (dual_sma 10/30: 31 + margin 10)
    ......[=======20=======]|now
    [===21 fetched===]          <- test 1: the provider fills the leading gap: SUFFICIENT
    (nothing)                   <- test 2: provider fails or has nothing: DEGRADED, NO-SIGNALS
                [==20==][live bars one by one ...21st]  <- test 4: websocket bars complete it
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pre_paper.cache import HistoryCache
from pre_paper.history import HistoryStatus, required_bars
from pre_paper.loader import ensure_history
from pre_paper.manifest import load_promoted
from pre_paper.providers import ProviderChain
from pre_paper.providers.parquet import ParquetProvider
from strategies.base import make_strategy
from tests.prepaper import (
    bar_batch, copy_backtests, decisions_of, events_of, make_pre_paper, manifest_1m, read_only, take, tree_digest,
)  # fmt: skip

NY = "America/New_York"


def amzn_bars() -> dict[str, np.ndarray]:
    """The AMZN 1m bars the fixture backtest decided on (real LOBSTER data), ascending."""
    table = pq.read_table(manifest_1m().parent / "decisions.parquet")
    table = table.filter(pc.equal(table["symbol"], "AMZN")).sort_by("ts")
    bars = {name: table[name].to_numpy() for name in ("ts", "open", "high", "low", "close", "volume")}
    bars["vwap"] = np.full(len(bars["ts"]), np.nan)
    return bars


def test_required_bars_is_warmup_plus_pattern_age_plus_margin():
    assert required_bars(make_strategy("dual_sma", {"fast": 10, "slow": 30})) == 31 + 0 + 10

    class Pattern:
        warmup_bars = 50
        max_pattern_age_bars = 5

    assert required_bars(Pattern(), safety_margin=10) == 65  # the seed's example: 50 + 5 + 10


def test_warm_start_fetches_missing_range_and_becomes_sufficient(tmp_path):
    bars = amzn_bars()
    cache = HistoryCache(tmp_path / "cache.db")
    i0 = 200
    cache.append("AMZN", "1m", NY, take(bars, slice(i0, i0 + 20)), "websocket", 1)
    now = pd.Timestamp(int(bars["ts"][i0 + 19]) + 60 * 10**9, tz="UTC")  # the 20th cached bar just closed
    seen = []
    result = ensure_history("AMZN", "1m", "1m", None, now, None, ParquetProvider(manifest_1m().parent / "decisions.parquet"),
                            True, calendar="XNYS", required_bars=41, observe=seen.append, cache=cache)  # fmt: skip
    assert [r.status for r in seen] == [HistoryStatus.LOADING] and seen[0].gaps and not seen[0].fetch_attempted
    assert result.status is HistoryStatus.SUFFICIENT and result.gaps == [] and result.fetch_attempted and result.fetch_success
    assert result.bars_in_window == 41
    assert result.required_start_ts == pd.Timestamp(int(bars["ts"][i0 - 21]), tz="UTC")  # the 41st newest bar
    fetched = cache.read("AMZN", "1m", int(bars["ts"][i0 - 21]), int(bars["ts"][i0]))
    assert set(fetched.source) == {"historical"} and len(fetched) == 21
    expected = pd.read_parquet(manifest_1m().parent / "decisions.parquet").query("symbol == 'AMZN'").sort_values("ts").iloc[i0 - 21 : i0]
    np.testing.assert_array_equal(fetched.ts, expected["ts"].to_numpy())
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(fetched, column), expected[column].to_numpy())
    assert set(cache.read("AMZN", "1m", int(bars["ts"][i0])).source) == {"websocket"}  # the live bars untouched


def test_incomplete_history_keeps_degraded_and_no_signals(tmp_path):
    bars = amzn_bars()
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a Parquet file")
    now = pd.Timestamp("2012-06-25T11:00:00-04:00")  # the next Monday: the Parquet has no bars of that day
    for provider, expected in (
        (ParquetProvider(broken), "cannot read"),
        (ParquetProvider(manifest_1m().parent / "decisions.parquet"), "had no bars"),
    ):
        cache = HistoryCache(tmp_path / f"cache-{len(expected)}.db")
        result = ensure_history("AMZN", "1m", "1m", None, now, None, provider, True, calendar="XNYS", required_bars=41, cache=cache)
        assert result.status is HistoryStatus.DEGRADED and result.fetch_attempted and not result.fetch_success
        assert expected in result.reason and result.reason.startswith("insufficient history")
    # the runner, with the failing provider, on live bars of that Monday (their values: the
    # fixture day's bars, moved by three trading days): no decision, NO-SIGNALS with the reason
    monday = {k: v[:30] for k, v in bars.items()}
    monday["ts"] = monday["ts"] + (stamp_day("2012-06-25") - stamp_day("2012-06-21"))
    op = make_pre_paper(manifest_1m(), tmp_path, calendars={"AMZN": "XNYS"}, clock="event",
                        providers=[{"kind": "backtest_parquet", "path": str(broken)}])  # fmt: skip
    emits = op.on_batch("bars", bar_batch(monday, "AMZN", "1m"))
    emits += op.on_watermark(int(monday["ts"][-1]) + 60 * 10**9)
    emits += op.on_eof()
    assert decisions_of(emits) is None
    no_signals = [e for e in events_of(emits, "no_signals") if e["symbol"] == "AMZN"]
    assert no_signals[0]["reason"].startswith("insufficient history") and "cannot read" in no_signals[0]["reason"]
    assert op.metrics()["symbols"]["AMZN"]["suppressed_bars"] == 30 and op.status()["AMZN"] == "degraded"


def stamp_day(day: str) -> int:
    return int(pd.Timestamp(day, tz=NY).value)


def test_no_cross_contamination_never_writes_backtest_parquet(tmp_path):
    """Backtest artifacts and a bar Parquet folder made read-only for real (chmod, or a
    read-only bind mount as root): a warm start and a run read them, write nothing there."""
    root = copy_backtests(tmp_path / "artifacts" / "backtests")
    manifest = next(p for p in root.glob("*/run_manifest.json") if load_promoted(p).timeframe == "1m")
    intraday = tmp_path / "data" / "intraday"
    table = pq.read_table(manifest.parent / "decisions.parquet").select(["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"])
    pq.write_to_dataset(table, intraday, partition_cols=["symbol", "timeframe"])
    before = {d: tree_digest(d) for d in (root, intraday)}
    bars = amzn_bars()
    writable = tmp_path / "writable"
    writable.mkdir()
    with read_only(root), read_only(intraday):
        chain = ProviderChain([ParquetProvider(manifest.parent / "decisions.parquet"), ParquetProvider(intraday)])
        result = ensure_history("AMZN", "1m", "1m", None, pd.Timestamp(int(bars["ts"][100]), tz="UTC"), writable / "c.db", chain, True,
                                calendar="XNYS", required_bars=41)  # fmt: skip
        assert result.status is HistoryStatus.SUFFICIENT and result.fetch_success
        op = make_pre_paper(manifest, writable, calendars={"AMZN": "XNYS"}, clock="event",
                            providers=[{"kind": "backtest_parquet"}, {"kind": "backtest_parquet", "path": str(intraday)}])  # fmt: skip
        live = take(bars, slice(150, 200))
        emits = op.on_batch("bars", bar_batch(live, "AMZN", "1m")) + op.on_watermark(int(live["ts"][-1]) + 60 * 10**9) + op.on_eof()
        op.close()
        assert decisions_of(emits).num_rows == 50  # warm-started from the read-only Parquet: every live bar decided
    assert {d: tree_digest(d) for d in (root, intraday)} == before
    assert {p.name.split("-")[0] for p in writable.iterdir()} == {"c.db", "cache.db"}  # only the caches were written


def test_cache_append_websocket_bars_completes_window(tmp_path):
    bars = amzn_bars()
    i0 = 100
    cache = HistoryCache(tmp_path / "cache.db")
    cache.append("AMZN", "1m", NY, take(bars, slice(i0, i0 + 20)), "historical", 1)
    cache.close()
    op = make_pre_paper(manifest_1m(), tmp_path, calendars={"AMZN": "XNYS"}, clock="event")
    statuses, decided = [], []
    for i in range(i0 + 20, i0 + 60):  # live bars, one per watermark, as a live bar engine confirms them
        one = take(bars, slice(i, i + 1))
        emits = op.on_batch("bars", bar_batch(one, "AMZN", "1m")) + op.on_watermark(int(one["ts"][0]) + 60 * 10**9)
        statuses.append(op.status()["AMZN"])
        table = decisions_of(emits)
        if table is not None:
            decided += table["ts"].to_pylist()
    first = statuses.index("sufficient")
    assert statuses[:first] == ["degraded"] * first and set(statuses[first:]) == {"sufficient"}
    assert first == 20  # the 21st live bar completes the 41 (20 cached + 21 live)
    assert decided == bars["ts"][i0 + 40 : i0 + 60].tolist()
    op.close()
    rows = HistoryCache(tmp_path / "cache.db").read("AMZN", "1m")
    assert len(rows) == 60 and list(rows.source) == ["historical"] * 20 + ["websocket"] * 40
