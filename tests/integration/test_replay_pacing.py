"""Paced replays in real time, through whole graphs: wall-clock pacing, speed-independent
output, pause via the pause file, job_runs rows written by graph runs, and one run on Ray.

These tests take wall time on purpose (speed 1.0 of a 5 s slice takes 5 s); the bounds
are generous (+-10%) because they check pacing, not throughput.
"""

from __future__ import annotations

import shutil
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from db.jobs import read_job
from db.read import read_bars
from graph.build import build_graph
from graph.messages import Barrier, Data
from graph.runtime import NodeFailure, Route
from graph.spec import load_graph
from tests.conftest import CONFIG, LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, TARDIS_QUOTES, TARDIS_TRADES
from tests.reference import assert_bars_match, lobster_trades, reference_bars, tardis_trades

S = 1_000_000_000
LOBSTER = (
    f"{{format: lobster, message_file: {LOBSTER_MESSAGES}, orderbook_file: {LOBSTER_ORDERBOOK}, "
    'symbol: AMZN, date: "2012-06-21"}'
)


def graph_file(tmp_path: Path, source_params: str, *, extra_nodes: str = "", name: str = "paced") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: {name}
        event_time: {{forming_interval_ms: 1000}}
        nodes:
          - id: source
            kind: replay
            params: {{{source_params}}}
          - id: normalizer
            kind: normalizer
            inputs: [source]
          - id: bars
            kind: bars
            inputs: [normalizer]
            params:
              sessions: {{AMZN: {{tz: America/New_York, open: "09:30", close: "16:00"}}}}
        """)
        + textwrap.indent(textwrap.dedent(extra_nodes), "  ")
    )
    return path


def run_collecting(path: Path, overrides=(), **run_kwargs):
    """Run in-process; returns (RunResult, every message the bar engine sent downstream)."""
    run = build_graph(load_graph(path, overrides, env={}), backend="local")
    messages: list[tuple] = []
    host = run.hosts[("bars", 0)]
    inner = host.transport

    class Tap:
        def send(self, target, shard, channel, batch):
            messages.extend(batch) if target == "collect" else inner.send(target, shard, channel, batch)

        def drain(self):
            inner.drain()

    host.routes.append(Route(target="collect", streams=frozenset({"bars"}), key=None, num_shards=1))
    host.transport = Tap()
    return run.run(**run_kwargs), messages


def bars_frame(messages: list[tuple]) -> pd.DataFrame:
    return pa.Table.from_batches([m.batch for m in messages if isinstance(m, Data)]).to_pandas()


def lobster_event_span_s(start: int, end: int) -> float:
    """Seconds from the first to the last LOBSTER event (trade or quote) in [start, end), by pandas."""
    raw = pd.read_csv(LOBSTER_MESSAGES, header=None, usecols=[0], names=["time"], dtype={"time": str})
    seconds = raw["time"].astype(float) * S
    ts = pd.Timestamp("2012-06-21", tz="America/New_York").value + seconds.round().astype(np.int64)
    inside = ts[(ts >= start) & (ts < end)]
    return (inside.max() - inside.min()) / S


def test_speed_one_replays_a_five_second_slice_in_five_seconds(tmp_path):
    start, end = pd.Timestamp("2012-06-21 14:00:00", tz="UTC"), pd.Timestamp("2012-06-21 14:00:05", tz="UTC")
    path = graph_file(
        tmp_path, f"files: [{LOBSTER}], speed: 1.0, start: '{start.isoformat()}', end: '{end.isoformat()}'"
    )
    result, messages = run_collecting(path)
    span_s = lobster_event_span_s(start.value, end.value)  # the slice's events span almost the full 5 s
    assert 4.5 < span_s <= 5.0
    assert 4.5 <= result.elapsed_s <= 5.5, f"5 s slice replayed in {result.elapsed_s:.2f} s"
    assert result.elapsed_s >= span_s - 0.05  # never ahead of the data's own timing
    confirmed = bars_frame(messages).query("status == 'confirmed' and timeframe == '1s'")
    trades = lobster_trades()
    trades = trades[(trades["ts"] >= start.value) & (trades["ts"] < end.value)]
    assert_bars_match(confirmed, reference_bars(trades, "1s"), "AMZN 1s")


def test_burst_and_speed_20_emit_identical_bars(tmp_path):
    # one minute of BTCUSDT trades + quotes: 3 s at speed 20
    # the same event-time batch grid for both (forming rows are compared too)
    window = "start: '2020-02-22T00:01:00Z', end: '2020-02-22T00:02:00Z', batch_interval_ms: 100"
    files = (
        f"files: [{{format: tardis_trades, path: {TARDIS_TRADES}}}, {{format: tardis_quotes, path: {TARDIS_QUOTES}}}]"
    )
    outputs = {}
    for speed in (0, 20):
        path = graph_file(tmp_path, f"{files}, {window}, speed: {speed}", name=f"speed{speed}")
        result, messages = run_collecting(path)
        outputs[speed] = (result.elapsed_s, messages)
    (burst_s, burst), (paced_s, paced) = outputs[0], outputs[20]
    assert paced_s > 2.5 > burst_s  # paced: ~60 s / 20
    # the stream is a function of the data (checkpoint barriers, wall-clock driven, aside)
    burst, paced = ([m for m in ms if not isinstance(m, Barrier)] for ms in (burst, paced))
    assert [type(m) for m in burst] == [type(m) for m in paced]
    for a, b in zip(burst, paced):
        assert a == b  # data (forming rows included), watermarks, end-of-stream
    confirmed = bars_frame(paced).query("status == 'confirmed'")
    trades = tardis_trades()
    lo, hi = pd.Timestamp("2020-02-22 00:01", tz="UTC").value, pd.Timestamp("2020-02-22 00:02", tz="UTC").value
    trades = trades[(trades["ts"] >= lo) & (trades["ts"] < hi)]
    for timeframe in ("1s", "1m"):
        got = confirmed[confirmed["timeframe"] == timeframe]
        assert_bars_match(got, reference_bars(trades, timeframe), f"BTCUSDT {timeframe}")


def test_a_pause_file_holds_the_replay_and_it_resumes_where_it_stopped(tmp_path):
    flag = tmp_path / "replay.pause"
    window = "start: '2020-02-22T00:01:00Z', end: '2020-02-22T00:01:20Z'"  # 20 s at speed 10
    path = graph_file(
        tmp_path, f"files: [{{format: tardis_trades, path: {TARDIS_TRADES}}}], {window}, speed: 10, pause_file: {flag}"
    )
    flag.touch()
    timeline: list[tuple[int, bool]] = []  # (rows emitted, paused) at each driver step
    timer = threading.Timer(1.5, flag.unlink)

    def progress(rows: int, watermark: int | None) -> None:
        if not timeline:
            timer.start()  # paused for the first 1.5 s of the run
        timeline.append((rows, flag.exists()))

    try:
        result, messages = run_collecting(path, on_progress=progress)
    finally:
        timer.cancel()
    trades = tardis_trades()
    lo, hi = pd.Timestamp("2020-02-22 00:01:00", tz="UTC").value, pd.Timestamp("2020-02-22 00:01:20", tz="UTC").value
    trades = trades[(trades["ts"] >= lo) & (trades["ts"] < hi)]
    paced_s = (trades["ts"].max() - trades["ts"].min()) / S / 10
    assert len([rows for rows, paused in timeline if paused]) >= 10  # the driver kept stepping, ~50 ms apart
    assert max(rows for rows, paused in timeline if paused) == 0  # nothing left while paused
    # resumed where it stopped: the pause adds to the paced time, nothing is caught up in a burst
    assert 1.5 + paced_s - 0.1 <= result.elapsed_s <= 1.5 + paced_s + 0.8, (result.elapsed_s, paced_s)
    confirmed = bars_frame(messages).query("status == 'confirmed' and timeframe == '1s'")
    assert_bars_match(confirmed, reference_bars(trades, "1s"), "1s")


def test_job_rows_for_completed_cancelled_and_failed_graph_runs(tmp_path):
    jobs = f"sqlite:///{tmp_path / 'jobs.db'}"
    window = "start: '2020-02-22T00:00:00Z', end: '2020-02-22T00:01:00Z'"
    trades = tmp_path / "trades.csv"
    shutil.copy(TARDIS_TRADES, trades)
    params = f"files: [{{format: tardis_trades, path: {trades}}}], {window}, job_database_url: '{jobs}'"

    def job_of(result) -> dict:
        (source,) = [h for h in result.hosts if h["node_id"] == "source"]
        return read_job(jobs, source["operator"]["replay_run_id"])

    # completed: burst to the end
    result, _ = run_collecting(graph_file(tmp_path, params, name="done"))
    row = job_of(result)
    expected = tardis_trades().query("ts < @pd.Timestamp('2020-02-22 00:01', tz='UTC').value")
    assert (row["status"], row["rows_written"], row["min_ts"], row["max_ts"]) == (
        "completed", len(expected), expected["ts"].min(), expected["ts"].max(),
    )  # fmt: skip
    # cancelled: a 60 s slice at speed 1, stopped by the driver after 1 s
    result, _ = run_collecting(graph_file(tmp_path, params + ", speed: 1.0", name="stopped"), duration_s=1.0)
    row = job_of(result)
    assert result.stopped_early and row["status"] == "cancelled"
    assert 0 < row["rows_written"] < len(expected) and row["completed_at"] > row["started_at"]
    # failed: the input file disappears while the replay runs
    run = build_graph(load_graph(graph_file(tmp_path, params + ", speed: 20", name="failing"), env={}), "local")
    source = run.hosts[("source", 0)]
    with pytest.raises(
        NodeFailure, match=r"node 'source' \(shard 0\) failed: FileNotFoundError: .*trades\.csv disappeared"
    ):
        run.run(on_progress=lambda rows, wm: trades.exists() and rows and trades.unlink())
    row = read_job(jobs, source.op.run_id)
    assert row["status"] == "failed" and "trades.csv disappeared during the replay" in row["error_message"]


def test_replay_paced_yaml_on_ray(ray_session, tmp_path):
    # the example graph, sped up to 50x (5 min of AMZN -> ~6 s), on Ray: paced, stored, a job row
    db = tmp_path / "paced.db"
    overrides = ["source.speed=50", f"source.pause_file={tmp_path / 'none.pause'}"]
    loaded = load_graph(CONFIG / "replay_paced.yaml", overrides, env={"TICKGRAPH_DATABASE_URL": f"sqlite:///{db}"})
    result = build_graph(loaded, backend="ray").run()
    lo, hi = pd.Timestamp("2012-06-21 14:00", tz="UTC").value, pd.Timestamp("2012-06-21 14:05", tz="UTC").value
    paced_s = lobster_event_span_s(lo, hi) / 50
    assert 0.9 * paced_s <= result.elapsed_s <= 1.1 * paced_s + 1.0, (result.elapsed_s, paced_s)
    (source,) = [h for h in result.hosts if h["node_id"] == "source"]
    row = read_job(f"sqlite:///{db}", source["operator"]["replay_run_id"])
    trades = lobster_trades()
    trades = trades[(trades["ts"] >= lo) & (trades["ts"] < hi)]
    assert row["status"] == "completed" and row["symbols"] == ["AMZN"] and row["provider"] == "lobster"
    for timeframe in ("1s", "1m", "5m"):
        stored = read_bars(f"sqlite:///{db}", symbol="AMZN", timeframe=timeframe)
        assert_bars_match(stored, reference_bars(trades, timeframe), f"AMZN {timeframe}")
