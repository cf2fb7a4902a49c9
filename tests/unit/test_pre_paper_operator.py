"""The ``pre_paper`` operator without Ray: it speaks only on sufficient history, decides exactly as
the backtest's strategy node does, goes DEGRADED when the clock outruns the feed and recovers
after a backfill, and continues exactly after a restore. Bars are SYNTHETIC (tests/prepaper.py);
the peer is a plain ``strategy`` node (the backtest's) fed every bar.

    bars     0 ................. 40 41 ....... 59 | 60 .. 69 | 70 ...
    status   DEGRADED (warm-up) | SUFFICIENT       | feed drop: outdated | backfilled: SUFFICIENT
    emits    NO-SIGNALS         | decisions        | nothing             | decisions (= uninterrupted)
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from actors.strategy import StrategyNode, StrategyNodeParams
from backtest.hashing import table_sha256
from graph.operator import OperatorContext
from pre_paper.cache import HistoryCache
from pre_paper.calendars import trading_calendar
from pre_paper.manifest import load_promoted
from tests.prepaper import (
    MINUTE, FakeClock, bar_batch, decisions_of, events_of, make_pre_paper, manifest_1m, stamp, synthetic_bars, take,
)  # fmt: skip

T0 = stamp("2024-03-05T10:00:00Z")


def btc_bars(n: int = 200, seed: int = 11) -> dict[str, np.ndarray]:
    """SYNTHETIC 1m BTCUSDT bars from T0 (24/7)."""
    return synthetic_bars(trading_calendar("24/7"), "1m", T0, T0 + n * MINUTE, seed=seed, price=250.0)


def peer_decisions(bars: dict[str, np.ndarray], symbol: str = "BTCUSDT") -> pa.Table:
    """The backtest's strategy node on every bar, one batch (its own alignment)."""
    params = StrategyNodeParams.model_validate(load_promoted(manifest_1m()).strategy_params)
    node = StrategyNode(params, OperatorContext("peer"))
    node.on_batch("bars", bar_batch(bars, symbol, "1m"))
    return decisions_of(node.on_eof())


def feed(op, bars: dict[str, np.ndarray], chunks: list[int], symbol: str = "BTCUSDT", clock: FakeClock | None = None) -> list:
    """Feed ``bars`` in chunks of the given sizes, a watermark at each chunk's last bar end."""
    emits, at = [], 0
    for size in chunks:
        part = take(bars, slice(at, at + size))
        at += size
        end = int(part["ts"][-1]) + MINUTE
        if clock is not None:
            clock.set(end + 10**9)
        emits += op.on_batch("bars", bar_batch(part, symbol, "1m"))
        emits += op.on_watermark(end)
    return emits


def test_no_signals_until_sufficient_then_exactly_the_backtests_decisions(tmp_path):
    bars = btc_bars()
    expected = peer_decisions(bars)
    op = make_pre_paper(manifest_1m(), tmp_path / "a", clock="event")
    emits = feed(op, bars, [1] * 200) + op.on_eof()
    got = decisions_of(emits)
    assert got["ts"][0].as_py() == int(bars["ts"][40])  # the 41st bar is the first with 41 bars of history
    tail = expected.slice(40)
    assert table_sha256(got) == table_sha256(tail) and got.num_rows == 160
    assert pc.sum(pc.is_finite(got["target"])).as_py() >= 2  # the walk crosses: real decisions, not only "keep"
    periods = [json.loads(e["detail"]) for e in events_of(emits, "no_signals") if e["symbol"] == "BTCUSDT"]
    assert [p["period"] for p in periods] == ["start", "end"] and periods[1]["bars_suppressed"] == 40
    signals = [b for s, b in emits if s == "signals"]
    assert sum(b.num_rows for b in signals) == pc.sum(pc.is_finite(got["target"])).as_py()
    assert {b.column("name")[0].as_py() for b in signals} == {"pre_paper_dual_sma"}


@pytest.mark.parametrize("chunks", [[200], [7] * 28 + [4], [1, 39, 1, 1, 50, 108]])
def test_decisions_do_not_depend_on_batching(tmp_path, chunks):
    bars = btc_bars()
    one = decisions_of(feed(make_pre_paper(manifest_1m(), tmp_path / "one", clock="event"), bars, [1] * 200))
    op = make_pre_paper(manifest_1m(), tmp_path / "many", clock="event")
    got = decisions_of(feed(op, bars, chunks) + op.on_eof())
    assert table_sha256(got) == table_sha256(one)


def test_a_silent_feed_goes_degraded_then_sufficient_after_backfill(tmp_path):
    bars = btc_bars(160)
    provider = tmp_path / "history.parquet"  # the vendor's bars: every minute, the silent ones too
    columns = {k: pa.array(v) for k, v in bars.items()}
    pq.write_table(pa.table({"symbol": pa.array(["BTCUSDT"] * 160), **columns}), provider)
    cache = HistoryCache(tmp_path / "cache.db")
    cache.append("BTCUSDT", "1m", "UTC", take(bars, slice(0, 41)), "historical", 0)  # a warm cache
    cache.close()
    clock = FakeClock(int(bars["ts"][41]))
    op = make_pre_paper(manifest_1m(), tmp_path, clock_ns=clock, clock="wall", backfill_retry_s=0,
                        providers=[{"kind": "backtest_parquet", "path": str(provider)}])  # fmt: skip
    emits = feed(op, take(bars, slice(41, 160)), [1] * 20, clock=clock)  # bars 41..60 live
    assert op.status()["BTCUSDT"] == "sufficient" and decisions_of(emits).num_rows == 20
    # the feed goes silent: the clock runs on, watermarks come from the idle advance
    silent = []
    for minute in range(1, 13):
        clock.set(int(bars["ts"][61]) + minute * MINUTE)
        silent += op.on_watermark(clock.now - 2 * 10**9)
    status = events_of(silent, "status")
    assert [e["status"] for e in status] == ["degraded"] and status[0]["reason"].startswith("outdated history")
    assert decisions_of(silent) is None
    # bars 61..72 never came live; the feed resumes at bar 73: the hole is a feed drop, backfilled
    resumed = feed(op, take(bars, slice(73, 160)), [1] * 20, clock=clock)
    checks = [e for e in events_of(resumed, "check")]
    assert any('"fetch_attempted": true' in c["detail"] for c in checks)
    loading = [c for c in checks if c["status"] == "loading"]
    assert loading and loading[0]["reason"].startswith("backfilling 1 range(s): outdated history: a feed drop left")
    assert [e["status"] for e in events_of(resumed, "status")] == ["sufficient"]
    got = decisions_of(resumed)
    expected = peer_decisions(take(bars, slice(0, 93))).slice(73)
    assert table_sha256(got) == table_sha256(expected)  # as if the feed had never dropped
    rows = HistoryCache(tmp_path / "cache.db").read("BTCUSDT", "1m")
    by_ts = dict(zip(rows.ts.tolist(), rows.source.tolist()))
    assert {by_ts[int(t)] for t in bars["ts"][61:73]} == {"historical"} and by_ts[int(bars["ts"][73])] == "websocket"


def test_a_restored_runner_continues_exactly_as_an_uninterrupted_one(tmp_path):
    bars = btc_bars(220)
    hole = np.r_[np.arange(0, 90), np.arange(100, 220)]  # ten quiet minutes: a gap, a NO-SIGNALS period
    bars = take(bars, hole)
    chunks = [13] * 16 + [2]
    whole = make_pre_paper(manifest_1m(), tmp_path / "whole", clock="event", paper_fills=True)
    expected = feed(whole, bars, chunks) + whole.on_eof()
    first = make_pre_paper(manifest_1m(), tmp_path / "split", clock="event", paper_fills=True)
    got = feed(first, bars, chunks[:7])
    tail = take(bars, slice(91, 210))
    got += first.on_batch("bars", bar_batch(take(tail, slice(0, 5)), "BTCUSDT", "1m"))  # held, not yet released
    state = pickle.loads(pickle.dumps(first.snapshot()))
    first.close()
    second = make_pre_paper(manifest_1m(), tmp_path / "split", clock="event", paper_fills=True)
    second.restore(state)
    got += second.on_watermark(int(tail["ts"][4]) + MINUTE)
    got += feed(second, take(tail, slice(5, None)), [13] * 8 + [10]) + second.on_eof()
    from actors.pre_paper import PrePaper

    for stream in ("decisions", "equity", "fills", "trades", "signals"):
        a = pa.Table.from_batches([b for s, b in expected if s == stream], schema=PrePaper.outputs[stream])
        b = pa.Table.from_batches([b for s, b in got if s == stream], schema=PrePaper.outputs[stream])
        assert a.num_rows > 0 and table_sha256(a) == table_sha256(b), stream
    assert _without_cache_path(events_of(expected)) == _without_cache_path(events_of(got))
    assert whole.metrics() == second.metrics()


def _without_cache_path(events: list[dict]) -> list[dict]:
    """Events with the runs' (different) cache paths taken out of the start events."""
    import json

    out = []
    for e in events:
        detail = json.loads(e["detail"]) if e["detail"] else None
        if e["kind"] == "start":
            detail["runtime_config"].pop("cache")
        out.append({**e, "detail": detail})
    return out


def make_audit(path, run_id: str = "r", flush_interval_ms: int = 0):
    """A ``pre_paper_audit`` sink writing ``path/run_id`` (interval 0: at every input; its clock stands still)."""
    from actors.pre_paper_audit import PrePaperAudit, PrePaperAuditParams

    params = PrePaperAuditParams.model_validate({"path": str(path), "run_id": run_id, "flush_interval_ms": flush_interval_ms})
    return PrePaperAudit(params, OperatorContext(node_id="audit", clock_ns=FakeClock(T0)))


def test_a_restored_audit_takes_back_what_was_written_after_the_checkpoint(tmp_path):
    bars = take(btc_bars(120), np.r_[np.arange(0, 60), np.arange(75, 120)])  # warm-up, decisions, a gap, decisions
    op = make_pre_paper(manifest_1m(), tmp_path, clock="event", paper_fills=True)
    emits = [(s, b) for s, b in feed(op, bars, [5] * 21) + op.on_eof() if s in ("events", "decisions", "fills", "equity", "trades")]
    whole = make_audit(tmp_path / "whole")
    for stream, batch in emits:
        whole.on_batch(stream, batch)
    whole.on_eof()
    k = len(emits) // 2
    first = make_audit(tmp_path / "split")
    for stream, batch in emits[:k]:
        first.on_batch(stream, batch)
    state = pickle.loads(pickle.dumps(first.snapshot()))
    parts_at_checkpoint = len(list((tmp_path / "split" / "r").rglob("*.parquet")))
    for stream, batch in emits[k : k + 10]:  # written, then lost with the actor: sent again after the restart
        first.on_batch(stream, batch)
    assert len(list((tmp_path / "split" / "r").rglob("*.parquet"))) > parts_at_checkpoint
    second = make_audit(tmp_path / "split", flush_interval_ms=10**9)  # writes fewer parts than the lost ones
    second.restore(state)
    for stream, batch in emits[k:]:
        second.on_batch(stream, batch)
    second.on_eof()
    a, b = tmp_path / "whole" / "r", tmp_path / "split" / "r"
    assert (a / "pre_paper.log").read_text() == (b / "pre_paper.log").read_text()
    assert json.loads((a / "history_check_results.json").read_text()) == json.loads((b / "history_check_results.json").read_text())
    manifests = [json.loads((d / "pre_paper_manifest.json").read_text()) for d in (a, b)]
    assert manifests[0]["execution_summary"]["signals_emitted"] > 0 and manifests[0]["execution_summary"]["no_signals_periods"] == 2
    without_files = [{k: v for k, v in m.items() if k != "artifacts"} for m in manifests]
    assert without_files[0] == without_files[1]
    for files in ("signals/decisions", "paper/fills", "paper/equity", "paper/trades"):
        tables = [pa.concat_tables([pq.read_table(p) for p in sorted(d.glob(f"{files}-*.parquet"))]) for d in (a, b)]
        time = "ts" if "ts" in tables[0].schema.names else "entry_ts"
        tables = [t.sort_by([("symbol", "ascending"), (time, "ascending")]) for t in tables]
        assert tables[0].num_rows > 0 and table_sha256(tables[0]) == table_sha256(tables[1]), files


def test_paper_fills_fill_the_decisions_at_the_next_bars_open(tmp_path):
    bars = btc_bars()
    op = make_pre_paper(manifest_1m(), tmp_path, clock="event", paper_fills=True)
    emits = feed(op, bars, [25] * 8) + op.on_eof()
    decisions = decisions_of(emits)
    fills = pa.Table.from_batches([b for s, b in emits if s == "fills"])
    equity = pa.Table.from_batches([b for s, b in emits if s == "equity"])
    assert equity.num_rows == 200  # every bar marked, the NO-SIGNALS ones included
    targets = {t: v for t, v in zip(decisions["ts"].to_pylist(), decisions["target"].to_pylist()) if v == v}
    assert fills.num_rows >= 2
    opens = dict(zip(bars["ts"].tolist(), bars["open"].tolist()))
    for row in fills.to_pylist():
        assert row["decision_ts"] in targets and row["ts"] == row["decision_ts"] + MINUTE
        assert row["reference_price"] == opens[row["ts"]]  # the next bar's open (no slippage in this run)
        assert np.sign(row["position_after"]) in (np.sign(targets[row["decision_ts"]]), 0.0)


def test_foreign_bars_other_timeframes_corrections_and_out_of_order_bars(tmp_path):
    bars = btc_bars(60)
    op = make_pre_paper(manifest_1m(), tmp_path, clock="event")
    emits = feed(op, bars, [50])
    emits += op.on_batch("bars", bar_batch(take(bars, slice(0, 3)), "MSFT", "1m"))  # not in the manifest
    emits += op.on_batch("bars", bar_batch(take(bars, slice(0, 3)), "BTCUSDT", "5m"))
    emits += op.on_batch("bars", bar_batch(take(bars, slice(49, 50)), "BTCUSDT", "1m", status="corrected"))
    emits += op.on_batch("bars", bar_batch(take(bars, slice(10, 11)), "BTCUSDT", "1m"))  # an old bar, confirmed again
    emits += op.on_watermark(int(bars["ts"][55]))
    quarantine = [r for s, b in emits if s == "quarantine" for r in b.to_pylist()]
    assert [(r["reason"], r["ts"]) for r in quarantine] == [("out_of_order_bar", int(bars["ts"][10]))]
    assert {k: op.metrics()[k] for k in ("foreign_bars", "other_timeframes", "corrections")} == {"foreign_bars": 3, "other_timeframes": 3, "corrections": 1}
