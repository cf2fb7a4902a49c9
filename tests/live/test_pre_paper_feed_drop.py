"""A feed drop during a pre-paper run: config/pre_paper.yaml against a local server playing Alpaca,
whose websocket goes silent mid-run; the history becomes DEGRADED ('outdated history'), then,
after the source reconnected and the hole was backfilled from the (local) Alpaca REST bars
endpoint, SUFFICIENT again -- all of it in history_check_results.json.

The clock is fake (graph.host's wall clock, as every operator of an in-process graph gets
it): 60 times the real one from a Tuesday 10:00 New York time, so a minute of market time is
a second of test time. Trades and REST bars are SYNTHETIC (a sine-wave price of the time).

    real s   0 ........ 4 | 4 ........ 11 | 11 ......... 15
    conn 0   trades       | silent (drop) | -
    conn 1   -            | -             | trades (after the reconnect)
    status   SUFFICIENT   | DEGRADED      | backfill -> SUFFICIENT
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import orjson
import pandas as pd
import yaml

import graph.host
from graph.build import build_graph
from graph.spec import load_graph
from pre_paper.graphs import manifest_overrides
from tests.conftest import CONFIG
from tests.live.server import Expect, Hold, Send, Silent
from tests.prepaper import manifest_amzn

SPEED = 60  # fake seconds per real second
T0 = int(pd.Timestamp("2024-03-05T10:00:00-05:00").value)


class FastClock:
    """``T0 + (real elapsed) x SPEED``, int ns UTC."""

    def __init__(self) -> None:
        self.real0 = time.time_ns()

    def __call__(self) -> int:
        return T0 + (time.time_ns() - self.real0) * SPEED


class FastTime:
    """The ``time`` module as ``graph.host`` sees it, with ``time_ns`` the fast clock."""

    def __init__(self, clock: FastClock) -> None:
        self.time_ns = clock

    def __getattr__(self, name: str):
        return getattr(time, name)


def price(ns: int) -> float:
    """SYNTHETIC: 180 + a 40-minute sine of the time."""
    return round(180.0 + 2.0 * math.sin(ns / (40 * 60e9) * 2 * math.pi), 2)


class LiveTrades:
    """A server step: Alpaca trade frames stamped with the fake clock, ``interval_s`` real apart."""

    def __init__(self, clock: FastClock, seconds: float, interval_s: float = 0.1) -> None:
        self.clock, self.seconds, self.interval_s = clock, seconds, interval_s

    async def __call__(self, conn) -> None:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            now = self.clock()
            stamp = pd.Timestamp(now, tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            await conn.send(orjson.dumps([{"T": "t", "S": "AMZN", "i": now, "x": "V", "p": price(now), "s": 100, "t": stamp}]).decode())
            await asyncio.sleep(self.interval_s)


def rest_bars(query: dict[str, str]) -> dict:
    """SYNTHETIC Alpaca v2 bars for every minute of ``[start, end]`` (its inclusive range)."""
    start, end = pd.Timestamp(query["start"]).floor("min"), pd.Timestamp(query["end"])
    bars = []
    for t in pd.date_range(start, end, freq="1min"):
        p = price(int(t.value))
        bars.append({"t": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": p, "h": p + 0.1, "l": p - 0.1, "c": p, "v": 1000, "n": 10, "vw": p})
    return {"bars": bars, "symbol": "AMZN", "next_page_token": None}


def handshake() -> list:
    return [Send('[{"T":"success","msg":"connected"}]'), Expect(1), Send('[{"T":"success","msg":"authenticated"}]'), Expect(2)]


def test_a_silent_feed_degrades_the_history_and_a_backfill_recovers_it(server, tmp_path, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key-id")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")
    clock = FastClock()
    monkeypatch.setattr(graph.host, "time", FastTime(clock))  # the hosts' OperatorContext.clock_ns
    # tolerance 2 x 1m + 180 s = 5 market minutes: more than the first live bar takes to be confirmed (the
    # bar the run starts in is partial, never confirmed), less than the silence
    server.route("/v2/iex", [*handshake(), LiveTrades(clock, 4.0), Silent(30)], [*handshake(), LiveTrades(clock, 30.0), Hold()])
    server.rest("/v2/stocks/AMZN/bars", rest_bars)
    doc = yaml.safe_load((CONFIG / "pre_paper.yaml").read_text())
    doc["event_time"] = {"allowed_lateness_ms": 5_000, "idle_timeout_ms": 20_000}  # fake ms: 0.08 s and 0.33 s real
    path = tmp_path / "pre_paper.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    overrides = manifest_overrides(path, manifest_amzn(), run_id="drop") + [
        f"source.params.url={server.url('/v2/iex')}", "source.params.silence_timeout_s=7", "source.params.heartbeat_s=null",
        "source.params.reconnect_initial_s=0.05", "source.params.jitter_seed=1", "bars.parallelism=1", "pre_paper.parallelism=1",
        f"pre_paper.cache={tmp_path / 'cache.db'}", "pre_paper.staleness_grace_s=180", "pre_paper.backfill_retry_s=0",
        f'pre_paper.providers=[{{"kind": "alpaca", "url": "{server.url("", scheme="http")}"}}]',
        f"audit.path={tmp_path / 'audit'}", "audit.flush_interval_ms=0", f"store.url=sqlite:///{tmp_path / 'db.sqlite'}",
        f"runtime.checkpoint_dir={tmp_path / 'checkpoints'}",
    ]  # fmt: skip
    run = build_graph(load_graph(path, overrides, env={}), backend="local")
    runner = run.hosts[("pre_paper", 0)].op.runners["AMZN"]
    started = time.monotonic()
    marks: dict[str, int] = {}

    def recovered() -> bool:  # stop once decisions flow again after the degraded period (or after 45 s)
        if runner.counts["degraded_periods"] and "decisions" not in marks:
            marks["decisions"] = runner.counts["decisions"]
        again = "decisions" in marks and runner.status.value == "sufficient" and runner.counts["decisions"] > marks["decisions"]
        return again or time.monotonic() - started > 45

    clock.real0 = time.time_ns()  # fake time starts with the run, not with the (slower) build
    run.run(should_stop=recovered)
    checks = json.loads((tmp_path / "audit" / "drop" / "history_check_results.json").read_text())
    sequence = [(c["status"], (c["reason"] or "").split(":")[0], c["trigger"]) for c in checks]
    # warm start: the 41 bars before the start (Monday's last minutes, Tuesday's from 09:30) from the REST endpoint
    assert sequence[:2] == [("loading", "backfilling 2 range(s)", "start"), ("sufficient", "", "start")]
    monday, tuesday = checks[0]["gaps"]
    assert monday["start"].startswith("2024-03-04T15:") and monday["end"] == "2024-03-04T16:00:00-05:00"
    assert tuesday["start"] == "2024-03-05T09:30:00-05:00"
    assert checks[1]["fetch_attempted"] and checks[1]["fetch_success"] and checks[1]["bars_in_window"] == 41
    degraded = [c for c in checks if c["status"] == "degraded"]
    assert degraded and degraded[0]["reason"].startswith("outdated history: the newest bar opened at") and degraded[0]["outdated"]
    assert degraded[0]["trigger"] == "clock"  # seen between bars, on the idle watermark: the feed was silent
    after = checks[checks.index(degraded[0]) + 1 :]
    loading = [c for c in after if c["status"] == "loading"]
    assert loading and "outdated history: a feed drop left" in loading[0]["reason"]
    hole = loading[0]["gaps"][0]
    back = next(c for c in after if c["status"] == "sufficient")
    assert back["fetch_attempted"] and back["fetch_success"] and back["gaps"] == []
    assert after.index(back) > after.index(loading[0])
    asked = [pd.Timestamp(q["start"]) for q in server.rest_requests["/v2/stocks/AMZN/bars"]]
    assert pd.Timestamp(hole["start"]) in asked  # the hole was asked for, to the nanosecond
    gap_minutes = (pd.Timestamp(hole["end"]) - pd.Timestamp(hole["start"])) / pd.Timedelta(minutes=1)
    assert 5 <= gap_minutes <= 12  # ~7 s real silence = ~7 market minutes; > 2 x 1m + 180 s: a gap
    log = (tmp_path / "audit" / "drop" / "pre_paper.log").read_text()
    assert "AMZN status degraded: outdated history" in log and log.rindex("AMZN status sufficient") > log.index("AMZN status degraded")
    manifest = json.loads((tmp_path / "audit" / "drop" / "pre_paper_manifest.json").read_text())
    assert manifest["execution_summary"]["degraded_periods"] >= 1 and manifest["history_status"]["final_check"]["AMZN"]["status"] == "sufficient"
    assert len(server.connections("/v2/iex")) >= 2  # the source reconnected
    assert "test-secret" not in (tmp_path / "audit" / "drop" / "pre_paper.log").read_text()
