"""Backtest-live parity: the live pre-paper graph (config/pre_paper.yaml) with its source swapped
for a replay of the fixture day's ticks emits exactly the decisions the backtest of the same
manifest emitted for the same bars after warm-up -- same bars, same decisions, same order: a
hash of both signal streams matches. At speed 0 over the whole fixture day(s) on Ray (with the
pre_paper actor killed mid-replay: a restart from the last checkpoint changes nothing), and at
speed 0 and 20 over a 200-second window (1s bars) in-process; the whole day at speed 20 takes
25 minutes and runs with TICKGRAPH_SLOW_TESTS=1.

    backtest   [bar 0 ............................................. bar n]  decisions.parquet
    pre-paper  [NO-SIGNALS: 40 warm-up bars][decisions ............ bar n]  signals/*.parquet
                                              ^ first decision: the hashes of both from here match
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from backtest.hashing import table_sha256
from graph.build import build_graph
from graph.partition import shard_of
from graph.spec import load_graph
from pre_paper.graphs import manifest_overrides
from pre_paper.manifest import load_promoted
from tests.backtests import tick_files
from tests.conftest import CONFIG, LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, TARDIS_TRADES
from tests.golden import GoldenData, require_golden
from tests.prepaper import manifest_1m, manifest_1s, stamp

GOLDEN = (
    GoldenData("AMZN ticks (LOBSTER)", (LOBSTER_MESSAGES, LOBSTER_ORDERBOOK), "2012-06-21T09:30:00-04:00", "2012-06-21T16:00:00-04:00"),
    GoldenData("BTCUSDT trades (Tardis)", (TARDIS_TRADES,), "2020-02-22T00:00:02+00:00", "2020-02-22T02:05:47+00:00"),
)


def pre_paper_graph(tmp_path: Path, manifest: Path, replay: dict, *, shards: int = 1, backend: str = "local",
                    kill: Callable[[Any], Callable[[int, Any], None]] | None = None) -> tuple[dict, Path, Any]:  # fmt: skip
    """Run config/pre_paper.yaml (its store node left out) with the source swapped for a replay.

    Args:
        kill: given the run, the ``on_progress`` hook that kills an actor (checkpoints every 250 ms).

    Returns:
        (the pre_paper node's metrics per shard, the audit directory, the run).
    """
    doc = yaml.safe_load((CONFIG / "pre_paper.yaml").read_text())
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] != "store"]
    path = tmp_path / "pre_paper.yaml"  # every relative path of the template is overridden below
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    overrides = manifest_overrides(path, manifest, replay=replay, run_id="parity")
    overrides += [
        f"pre_paper.cache={tmp_path / 'cache.db'}", "pre_paper.providers=[]", f"audit.path={tmp_path / 'audit'}",
        'pre_paper.calendars={"AMZN": "XNYS", "default": "24/7"}', f"pre_paper.parallelism={shards}", "bars.parallelism=1",
        f"runtime.checkpoint_dir={tmp_path / 'checkpoints'}", f"runtime.checkpoint_interval_ms={250 if kill else 0}",
        *(["runtime.pump_events=2"] if kill else []),
    ]  # fmt: skip
    loaded = load_graph(path, overrides, env={})
    run = build_graph(loaded, backend=backend)
    result = run.run(on_progress=kill(run) if kill else None)
    metrics = {h["shard"]: h["operator"] for h in result.hosts if h["node_id"] == "pre_paper"}
    return metrics, tmp_path / "audit" / "parity", run


def emitted(audit: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(str(audit / "signals" / "*.parquet")))]).sort_by(
        [("symbol", "ascending"), ("ts", "ascending")]
    )


def assert_parity(audit: Path, manifest: Path, symbols: tuple[str, ...], until: int | None = None) -> dict[str, int]:
    """Per symbol: the pre-paper decisions hash equal to the backtest's from the first pre-paper decision on."""
    backtest = pq.read_table(manifest.parent / "decisions.parquet")
    ours = emitted(audit)
    firsts = {}
    for symbol in symbols:
        mine = ours.filter(pc.equal(ours["symbol"], symbol))
        first = mine["ts"][0].as_py()
        theirs = backtest.filter(pc.and_(pc.equal(backtest["symbol"], symbol), pc.greater_equal(backtest["ts"], first)))
        if until is not None:
            theirs = theirs.filter(pc.less(theirs["ts"], until))
        theirs = theirs.sort_by("ts")
        assert mine.num_rows == theirs.num_rows > 0, symbol
        assert table_sha256(mine) == table_sha256(theirs), symbol
        assert pc.sum(pc.is_finite(mine["target"])).as_py() >= 1, symbol  # real targets among them
        firsts[symbol] = first
    return firsts


@pytest.mark.golden
@pytest.mark.ray
def test_a_replayed_fixture_day_on_ray_emits_the_backtests_signals_through_a_dead_actor(tmp_path, ray_session):
    """The pre_paper actor holding AMZN is killed mid-replay, after a checkpoint: the run restarts
    from it (global rollback) and its signals, statuses and audit are still the backtest's."""
    require_golden(*GOLDEN)
    manifest = manifest_1m()
    killed: list[int] = []

    def kill(run):
        def on_progress(rows: int, watermark) -> None:
            if not killed and rows >= 30_000 and run.last_complete is not None:
                killed.append(rows)
                ray_session.kill(run.hosts[("pre_paper", shard_of("AMZN", 2))], no_restart=True)

        return on_progress

    replay = {"files": tick_files(), "speed": 0, "batch_rows": 4096}  # small batches: progress to kill in
    metrics, audit, run = pre_paper_graph(tmp_path, manifest, replay, shards=2, backend="ray", kill=kill)
    assert killed and run.restarts >= 1, "the kill happened and the run restarted"
    firsts = assert_parity(audit, manifest, ("AMZN", "BTCUSDT"))
    backtest = pq.read_table(manifest.parent / "decisions.parquet")
    for symbol, first in firsts.items():  # the first decision is the 41st bar (31 warm-up + 10 margin)
        bars = backtest.filter(pc.equal(backtest["symbol"], symbol)).sort_by("ts")["ts"].to_pylist()
        assert bars.index(first) == 40
    doc = json.loads((audit / "pre_paper_manifest.json").read_text())
    run = load_promoted(manifest)
    assert doc["backtest_atom"]["manifest_hash"] == run.manifest_hash and doc["backtest_atom"]["source_run_id"] == run.run_hash
    assert doc["runtime_config"]["required_bars"] == 41 and doc["identity"]["state"] == "completed"
    summary = doc["execution_summary"]
    ours = emitted(audit)
    assert summary["decisions"] == ours.num_rows and summary["signals_emitted"] == pc.sum(pc.is_finite(ours["target"])).as_py()
    assert summary["no_signals_periods"] == 2 and summary["no_signals_bars"] == 80
    assert {s: c["status"] for s, c in doc["history_status"]["initial_check"].items()} == {"AMZN": "degraded", "BTCUSDT": "degraded"}
    checks = json.loads((audit / "history_check_results.json").read_text())
    assert [c["status"] for c in checks if c["symbol"] == "BTCUSDT"][-1] == "sufficient"
    assert sorted(shard for shard, m in metrics.items() if m["symbols"]) == [0, 1]  # the two symbols on two shards
    log = (audit / "pre_paper.log").read_text()
    assert "NO-SIGNALS start" in log and "NO-SIGNALS end (40 bars suppressed)" in log


WINDOW = {"start": "2020-02-22T00:00:00Z", "end": "2020-02-22T00:03:20Z"}


@pytest.mark.golden
@pytest.mark.parametrize("speed", [0, 20])
def test_a_replayed_window_at_speed_0_and_20_emits_the_backtests_signals(tmp_path, speed):
    require_golden(GOLDEN[1])
    manifest = manifest_1s()
    replay = {"files": [{"format": "tardis_trades", "path": str(TARDIS_TRADES)}], "speed": speed, **WINDOW}
    _, audit, _ = pre_paper_graph(tmp_path, manifest, replay)
    until = stamp(WINDOW["end"])
    assert_parity(audit, manifest, ("BTCUSDT",), until=until)
    assert emitted(audit).num_rows >= 60  # a minute and more of decisions after the 31-bar warm-up


@pytest.mark.golden
@pytest.mark.skipif(os.environ.get("TICKGRAPH_SLOW_TESTS") != "1", reason="the whole fixture day at speed 20 takes ~25 minutes (TICKGRAPH_SLOW_TESTS=1)")
def test_the_whole_fixture_day_at_speed_20(tmp_path):
    require_golden(*GOLDEN)
    manifest = manifest_1m()
    _, audit, _ = pre_paper_graph(tmp_path, manifest, {"files": tick_files(), "speed": 20, "max_gap_ms": 60_000})
    assert_parity(audit, manifest, ("AMZN", "BTCUSDT"))
