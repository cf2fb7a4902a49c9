"""live.yaml end to end against the local server: bars equal an independent computation,
``--duration`` and Ctrl-C flush forming bars and stop cleanly, and a recorded session
replayed through the same downstream graph gives the same confirmed bars (parity).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from actors.recorder import replay_files
from db.read import read_bars
from graph.build import build_graph
from graph.spec import load_graph
from tests.conftest import ROOT
from tests.live.conftest import frames
from tests.live.expected import binance_ticks, coinbase_ticks, expected_bars
from tests.live.graphs import derived_graph, run_cli
from tests.live.server import Expect, Feed, Hold, Play, wait_for
from tests.reference import assert_bars_match

TIMEFRAMES = ("1s", "1m", "5m", "15m", "1h", "1d")
BINANCE_SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
COINBASE_PRODUCTS = ["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR", "SKL-GBP"]


def _binance_overrides(server, tmp_path) -> list[str]:
    symbols = "[" + ",".join(BINANCE_SYMBOLS) + "]"
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    return [
        "--set", f"source.params.url={server.url('/stream')}",
        "--set", f"source.symbols={symbols}",
        "--set", "source.channels=[aggTrade,bookTicker]",
        "--set", f"normalizer.symbols={symbols}",
        "--set", f"store.url={url}",
        "--set", f"parquet.path={tmp_path / 'pq'}",
        "--set", f"recorder.path={tmp_path / 'rec'}",
        "--set", f"recorder.url={url}",
    ]  # fmt: skip


def _assert_all_bars(url: str, trades: list[dict], symbols: list[str]) -> None:
    """Every reference bar is stored once: final in ``bars_ohlcv`` or, if the session did
    not see it whole, in ``bars_partial``. Partial are exactly the bars that opened before
    the symbol's first trade (the session started mid-bar) and, at most, the last bar of
    each (symbol, timeframe), open when the session stopped."""
    key = ["symbol", "timeframe", "ts"]
    for symbol in symbols:
        first_trade = min((t["ts"] for t in trades if t["symbol"] == symbol), default=None)
        for timeframe in TIMEFRAMES:
            expected = expected_bars(trades, symbol, timeframe)
            final = read_bars(url, symbol=symbol, timeframe=timeframe)
            partial = read_bars(url, symbol=symbol, timeframe=timeframe, partial=True)
            label = f"{symbol} {timeframe}"
            assert not set(final["ts"]) & set(partial["ts"]), f"{label}: a bar both final and partial"
            stored = pd.concat([final, partial]).sort_values(key).reset_index(drop=True)
            assert_bars_match(stored, expected, label)
            if first_trade is None:  # quotes only: no bars
                assert final.empty and partial.empty, label
                continue
            opens = expected.index.to_numpy()  # bar open times
            began_before = set(opens[opens < first_trade].tolist())
            assert began_before <= set(partial["ts"]), f"{label}: a bar begun before the session is final"
            assert set(partial["ts"]) - began_before <= {int(opens.max())}, f"{label}: a closed bar is partial"


def test_live_yaml_with_duration_stores_the_bars_of_the_recorded_frames(server, tmp_path):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed, interval_s=0.001), Hold()])
    summary_path = tmp_path / "summary.json"
    proc = run_cli(
        "--graph", "live.yaml", "--backend", "local", "--no-progress", "--duration", "4",
        "--summary-json", str(summary_path), *_binance_overrides(server, tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert feed.done
    trades, quotes = binance_ticks(lines)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _assert_all_bars(url, trades, BINANCE_SYMBOLS)  # every bar, including the still-open 1h/1d ones
    summary = json.loads(summary_path.read_text())
    assert summary["stopped_early"] and summary["ticks_read"] == len(trades) + len(quotes) == 86
    db = sqlite3.connect(tmp_path / "db.sqlite")
    for table, counted in (("bars_ohlcv", summary["bars_confirmed"]), ("bars_partial", summary["bars_partial"])):
        stored = db.execute(f"select symbol, timeframe, count(*) from {table} group by 1, 2").fetchall()
        assert {(s, tf): n for s, per in counted.items() for tf, n in per.items() if n} == {(s, tf): n for s, tf, n in stored}, table
    assert summary["bars_partial"]  # the 1h and 1d bars were open at the stop
    assert "open bars stored as partial; python run.py --resume" in proc.stdout
    assert sqlite3.connect(tmp_path / "db.sqlite").execute("select count(*) from tick_data").fetchone() == (86,)


def test_ctrl_c_flushes_forming_bars_and_stops_cleanly(server, tmp_path):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed, interval_s=0.001), Hold()])
    summary_path = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--graph", "live.yaml", "--backend", "local", "--no-progress",
         "--summary-json", str(summary_path), *_binance_overrides(server, tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def recorded() -> bool:  # the recorder's upserts show every tick went through the graph
            try:
                return sqlite3.connect(tmp_path / "db.sqlite").execute("select count(*) from tick_data").fetchone()[0] == 86
            except sqlite3.OperationalError:
                return False

        wait_for(recorded, timeout_s=60, interval_s=0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "interrupt: stopping sources and flushing" in stderr
    trades, _ = binance_ticks(lines)
    _assert_all_bars(f"sqlite:///{tmp_path / 'db.sqlite'}", trades, BINANCE_SYMBOLS)
    assert json.loads(summary_path.read_text())["stopped_early"] is True


def _run_local(graph, stop) -> dict:
    run = build_graph(load_graph(graph), backend="local")
    source = run.hosts[("source", 0)].op
    result = run.run(should_stop=lambda: stop(source), duration_s=60)
    return {host["node_id"]: host for host in result.hosts}


def _coinbase_live(server, tmp_path, event_time=None, skip_snapshot=False, **params):
    lines = frames("coinbase_exchange_capture_2021-04-17")
    if skip_snapshot:  # frames 2..22: the last trade of each product before the subscription
        lines = lines[:2] + lines[23:]
    feed = Feed(lines)
    server.route("/feed", [Expect(1), Play(feed), Hold()])
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    source = {"kind": "coinbase", "params": {"url": server.url("/feed"), "symbols": COINBASE_PRODUCTS, "channels": ["matches", "ticker"], **params}}
    graph = derived_graph(tmp_path / "live.yaml", source=source, symbols=COINBASE_PRODUCTS, outputs=live_dir, event_time=event_time)
    total = sum(len(ticks) for ticks in coinbase_ticks(lines))
    hosts = _run_local(graph, lambda op: feed.done and op.metrics()["ticks"] == total)
    return lines, live_dir, hosts


def _replay(tmp_path, live_dir, event_time=None, **params):
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    source = {"kind": "file_replay", "params": {"files": replay_files(live_dir / "rec"), **params}}
    graph = derived_graph(tmp_path / "replay.yaml", source=source, symbols=COINBASE_PRODUCTS, outputs=replay_dir, event_time=event_time)
    hosts = _run_local(graph, lambda op: False)
    return replay_dir, hosts


def _bars(directory) -> pd.DataFrame:
    """Every stored bar, final and partial (a live session's first bars are partial; its
    replay, which starts with the same first tick, cannot know that and confirms them)."""
    url = f"sqlite:///{directory / 'db.sqlite'}"
    both = pd.concat([read_bars(url), read_bars(url, partial=True)])
    return both.sort_values(["symbol", "timeframe", "ts"]).reset_index(drop=True)


def test_coinbase_session_bars_and_replay_parity(server, tmp_path):
    lines, live_dir, live_hosts = _coinbase_live(server, tmp_path)
    trades, _ = coinbase_ticks(lines)
    assert live_hosts["bars"]["quarantined"] == {}  # the subscription snapshot made nothing late
    _assert_all_bars(f"sqlite:///{live_dir / 'db.sqlite'}", trades, COINBASE_PRODUCTS)
    # the recording, replayed through the same downstream graph (one node swapped)
    replay_dir, replay_hosts = _replay(tmp_path, live_dir)
    assert replay_hosts["recorder"]["operator"]["recorded"] == 0  # replayed ticks are not re-recorded
    live, replayed = _bars(live_dir), _bars(replay_dir)
    assert len(live) == len(replayed) == sum(len(expected_bars(trades, p, tf)) for p in COINBASE_PRODUCTS for tf in TIMEFRAMES)
    exact = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "trade_count"]
    pd.testing.assert_frame_equal(live[exact], replayed[exact], check_exact=True)
    # float sums may differ in the last bit when the batches differ (actors/bars.py docstring)
    np.testing.assert_allclose(live[["volume", "vwap"]], replayed[["volume", "vwap"]], rtol=1e-12, atol=0)


def test_parity_is_bit_exact_when_batches_match(server, tmp_path):
    # One tick per batch on both sides: the same float sums, the same bars table bit for
    # bit. The session starts after Coinbase's subscription snapshot: a tick-by-tick
    # replay cannot know that the snapshot's stale trades did not advance the live
    # watermark and would see some of them as late (see the module docstring of
    # actors/live/coinbase.py and the report).
    lines, live_dir, live_hosts = _coinbase_live(server, tmp_path, skip_snapshot=True, batch_rows=1)
    replay_dir, replay_hosts = _replay(tmp_path, live_dir, batch_rows=1)
    total = sum(len(ticks) for ticks in coinbase_ticks(lines))
    assert live_hosts["source"]["rows_out"]["ticks"] == replay_hosts["source"]["rows_out"]["ticks"] == total
    assert live_hosts["bars"]["quarantined"] == replay_hosts["bars"]["quarantined"] == {}
    live, replayed = _bars(live_dir), _bars(replay_dir)
    trades, _ = coinbase_ticks(lines)
    assert len(live) == sum(len(expected_bars(trades, p, tf)) for p in COINBASE_PRODUCTS for tf in TIMEFRAMES)
    pd.testing.assert_frame_equal(live, replayed, check_exact=True)


@pytest.mark.ray
def test_live_graph_on_ray(ray_session, server, tmp_path):
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed, interval_s=0.001), Hold()])
    source = {"kind": "binance", "params": {"url": server.url("/stream"), "symbols": BINANCE_SYMBOLS, "channels": ["aggTrade", "bookTicker"]}}
    graph = derived_graph(tmp_path / "live.yaml", source=source, symbols=BINANCE_SYMBOLS, outputs=tmp_path)
    run = build_graph(load_graph(graph), backend="ray")
    started = os.times().elapsed
    result = run.run(should_stop=lambda: feed.done and os.times().elapsed - started > 3, duration_s=60)
    assert result.stopped_early
    source_metrics = next(h for h in result.hosts if h["node_id"] == "source")["operator"]
    assert source_metrics["ticks"] == 86
    trades, _ = binance_ticks(lines)
    _assert_all_bars(f"sqlite:///{tmp_path / 'db.sqlite'}", trades, BINANCE_SYMBOLS)


def test_a_stop_hands_over_every_tick_still_buffered_in_the_source(server, tmp_path):
    """Linger 10 minutes: when the stop comes, every received tick is still inside the
    source's buffer; the host must drain it before end-of-stream (nothing received is lost).

    Idle advance is off: these are 2021 frames, and a wall-clock watermark (2026) would
    rightly make every one of them late while they wait in the buffer."""
    lines = frames("binance_spot_combined_capture_2021-10-12")
    feed = Feed(lines)
    server.route("/stream", [Expect(1), Play(feed, interval_s=0.001), Hold()])
    out = tmp_path / "out"
    out.mkdir()
    source = {"kind": "binance", "params": {
        "url": server.url("/stream"), "symbols": BINANCE_SYMBOLS, "channels": ["aggTrade", "bookTicker"],
        "linger_ms": 600_000,
    }}  # fmt: skip
    graph = derived_graph(
        tmp_path / "live.yaml", source=source, symbols=BINANCE_SYMBOLS, outputs=out,
        event_time={"allowed_lateness_ms": 500, "idle_timeout_ms": None},
    )  # fmt: skip
    trades, quotes = binance_ticks(lines)
    sent_at: list[float] = []

    def stop(op) -> bool:  # all frames sent + 1 s to parse them; none emitted yet (linger)
        if feed.done and not sent_at:
            sent_at.append(time.monotonic())
        if sent_at and time.monotonic() - sent_at[0] > 1.0:
            assert op.metrics()["ticks"] == 0, "the ticks left the source before the stop"
            return True
        return False

    hosts = _run_local(graph, stop)
    assert hosts["normalizer"]["rows_in"] == len(trades) + len(quotes) == 86
    _assert_all_bars(f"sqlite:///{out / 'db.sqlite'}", trades, BINANCE_SYMBOLS)
