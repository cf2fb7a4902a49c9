"""A recorded live session replays tick for tick, whatever the batching.

Live feeds stamp some ticks with a receive time (Binance ``bookTicker`` has no exchange
time) or send stale ones (Coinbase's subscription snapshot: the last trade of each
product); those must not move the live watermark, and the recording keeps that mark
(``advances_watermark``), so a replay of it through the ``replay`` kind with zero allowed
lateness, in batches of 1 row, 64 rows or 100 ms cells of event time, accepts the same
trades as the live session did and builds the same bars with the same bars hash (the
ticks come back in the tick catalog's (ts, seq) order, the same for every batching).

Each case: one live session (local backend, the recorded frames served by a local
WebSocket server, the recorder on), then three replays of its recording. The expected
bars come from the frames themselves (``tests/live/expected.py``), not from the code.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from actors.recorder import replay_params
from db.read import read_bars
from graph.build import build_graph
from graph.spec import load_graph
from tests.live.conftest import frames
from tests.live.expected import binance_ticks, coinbase_ticks, expected_bars
from tests.live.graphs import derived_graph
from tests.live.server import Expect, Feed, Hold, Play

TIMEFRAMES = ("1s", "1m", "5m", "15m", "1h", "1d")
BATCHINGS = {"1 row": {"batch_rows": 1}, "64 rows": {"batch_rows": 64}, "100 ms": {"batch_rows": 65_536, "batch_interval_ms": 100}}
ZERO_LATENESS = {"allowed_lateness_ms": 0, "late_policy": "drop", "idle_timeout_ms": None}
# live.yaml's own lateness, without idle advance: these are 2021 frames, and a watermark
# that follows today's wall clock would rightly make all of them late
LIVE_EVENT_TIME = {"allowed_lateness_ms": 500, "late_policy": "drop", "idle_timeout_ms": None}

SESSIONS = {
    "coinbase": dict(
        frames="coinbase_exchange_capture_2021-04-17", route="/feed", interval_s=0.0, parse=coinbase_ticks,
        symbols=["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR", "SKL-GBP"],
        params={"channels": ["matches", "ticker"]},
    ),
    # 30 ms between frames: the bookTicker quotes are stamped with receive times that
    # run ahead of the trades' exchange times
    "binance": dict(
        frames="binance_spot_combined_capture_2021-10-12", route="/stream", interval_s=0.03, parse=binance_ticks,
        symbols=["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"], params={"channels": ["aggTrade", "bookTicker"]},
    ),
}


def _with_parity(graph):
    """The derived graph with a parity node on its normalizer and bars (live.yaml has none)."""
    doc = yaml.safe_load(graph.read_text())
    doc["nodes"].append({"id": "parity", "kind": "parity", "inputs": ["normalizer", "bars"], "params": {"checkpoint_every": 1000}})
    graph.write_text(yaml.safe_dump(doc, sort_keys=False))
    return graph


def _run(graph, stop):
    run = build_graph(load_graph(_with_parity(graph)), backend="local")
    source = run.hosts[("source", 0)].op
    result = run.run(should_stop=lambda: stop(source), duration_s=60)
    return {host["node_id"]: host for host in result.hosts}


def _bars(directory) -> pd.DataFrame:
    url = f"sqlite:///{directory / 'db.sqlite'}"
    both = pd.concat([read_bars(url), read_bars(url, partial=True)])
    return both.sort_values(["symbol", "timeframe", "ts"]).reset_index(drop=True)


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_a_recorded_session_replays_to_the_same_bars_and_hashes_for_every_batching(server, tmp_path, name):
    case = SESSIONS[name]
    lines = frames(case["frames"])
    feed = Feed(lines)
    server.route(case["route"], [Expect(1), Play(feed, interval_s=case["interval_s"]), Hold()])
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    source = {"kind": name, "params": {"url": server.url(case["route"]), "symbols": case["symbols"], **case["params"]}}
    graph = derived_graph(tmp_path / "live.yaml", source=source, symbols=case["symbols"], outputs=live_dir, event_time=LIVE_EVENT_TIME)
    trades, quotes = case["parse"](lines)
    live_hosts = _run(graph, lambda op: feed.done and op.metrics()["ticks"] == len(trades) + len(quotes))
    assert live_hosts["bars"]["quarantined"] == {}
    live = _bars(live_dir)
    expected = sum(len(expected_bars(trades, s, tf)) for s in case["symbols"] for tf in TIMEFRAMES)
    assert len(live) == expected > 0
    live_hashes = live_hosts["parity"]["operator"]["parity"]

    hashes = {}
    for label, batching in BATCHINGS.items():
        out = tmp_path / label.replace(" ", "_")
        out.mkdir()
        replay = {"kind": "replay", "params": {**replay_params(live_dir / "rec"), **batching}}
        graph = derived_graph(tmp_path / f"{out.name}.yaml", source=replay, symbols=case["symbols"], outputs=out, event_time=ZERO_LATENESS)
        hosts = _run(graph, lambda op: False)
        assert hosts["source"]["rows_out"]["ticks"] == len(trades) + len(quotes), label
        assert hosts["normalizer"]["quarantined"] == {} and hosts["bars"]["quarantined"] == {}, f"{label}: late or rejected ticks"
        replayed = _bars(out)
        columns = [c for c in live.columns if c not in ("status", "origin", "replay_run_id", "created_at", "updated_at")]
        pd.testing.assert_frame_equal(replayed[columns], live[columns], check_exact=True, obj=f"{name} replay, {label}")
        hashes[label] = hosts["parity"]["operator"]["parity"]
    # Bars by value (status is provenance) equal the live session's. Ticks: the recording is
    # the tick catalog, which stores a symbol's ticks sorted by (ts, seq), and its replay
    # merges symbols in event time, so the live arrival order (Coinbase's stale snapshot
    # trades first, receive-time quotes) is not the replay's; every batching of the replay
    # hashes its ticks alike.
    for label, got in hashes.items():
        assert got["bars"] == live_hashes["bars"], f"{name} replay, {label}"
        assert got["ticks"] == hashes["1 row"]["ticks"], f"{name} replay, {label}"
