"""The driver owns the run's ``job_runs`` row (graph/run_record.py), for every graph run.

In-process runs of small graphs over the real fixtures; the row is read back from SQLite
and compared with what the run did (pandas reads of the same files).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from db.jobs import read_job, start_job, update_job
from graph.build import build_graph
from graph.runtime import NodeFailure
from graph.spec import load_graph
from tests.conftest import TARDIS_QUOTES, TARDIS_TRADES
from tests.hostile.cuts import write_graph


def graph(tmp_path: Path, files: list[dict], **kwargs) -> tuple[Path, str]:
    path = write_graph(tmp_path, files, **kwargs)
    return path, f"sqlite:///{tmp_path / 'store.db'}"


def trades_and_quotes() -> list[dict]:
    return [{"format": "tardis_trades", "path": str(TARDIS_TRADES)}, {"format": "tardis_quotes", "path": str(TARDIS_QUOTES)}]


def test_a_completed_run_is_one_row_describing_what_was_emitted(tmp_path):
    path, url = graph(tmp_path, trades_and_quotes())
    run = build_graph(load_graph(str(path), env={}), backend="local")
    run.run()
    row = read_job(url, run.run_id)
    frames = [pd.read_csv(TARDIS_TRADES), pd.read_csv(TARDIS_QUOTES)]
    stamps = pd.concat([f["timestamp"] for f in frames]) * 1000
    assert (row["job_name"], row["status"], row["error_message"]) == ("replay", "completed", None)
    assert (row["rows_written"], row["min_ts"], row["max_ts"]) == (sum(map(len, frames)), stamps.min(), stamps.max())
    assert row["symbols"] == ["BTCUSDT"] and row["provider"] == "binance-futures"
    assert row["metadata"]["graph"] == "hostile" and row["metadata"]["restarts"] == 0
    assert row["started_at"] <= row["metadata"]["heartbeat_ns"] <= row["completed_at"]


def test_a_file_vanishing_mid_run_fails_the_row_with_the_sources_error(tmp_path):
    copy = tmp_path / "trades.csv"
    shutil.copy(TARDIS_TRADES, copy)
    path, url = graph(tmp_path, [{"format": "tardis_trades", "path": str(copy)}], source={"batch_rows": 500})
    run = build_graph(load_graph(str(path), env={}), backend="local")

    def on_progress(rows: int, watermark) -> None:
        copy.unlink(missing_ok=True)  # gone after the first step

    with pytest.raises(NodeFailure, match=r"node 'source' \(shard 0\) failed: FileNotFoundError"):
        run.run(on_progress=on_progress)
    row = read_job(url, run.run_id)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("node 'source' (shard 0) failed: FileNotFoundError: ")
    assert "disappeared during the replay" in row["error_message"]


def test_a_stopped_run_is_cancelled(tmp_path):
    path, url = graph(tmp_path, trades_and_quotes(), source={"batch_rows": 1_000})
    run = build_graph(load_graph(str(path), env={}), backend="local")
    steps = []
    result = run.run(should_stop=lambda: bool(steps.append(1)) or len(steps) > 2)
    row = read_job(url, run.run_id)
    assert result.stopped_early and row["status"] == "cancelled"
    assert 0 < row["rows_written"] < 19_998


def test_a_run_whose_driver_vanished_is_marked_abandoned_by_the_next(tmp_path):
    path, url = graph(tmp_path, trades_and_quotes())
    old = start_job(url, "replay", metadata_json={"heartbeat_ns": time.time_ns() - 10 * 60 * 10**9})
    recent = start_job(url, "replay", metadata_json={"heartbeat_ns": time.time_ns()})
    build_graph(load_graph(str(path), env={}), backend="local").run()
    assert read_job(url, old)["status"] == "abandoned"
    assert read_job(url, old)["error_message"] == "the run's driver stopped without recording an outcome"
    assert read_job(url, recent)["status"] == "running"  # its driver is alive (a fresh heartbeat)
    update_job(url, recent, metadata_patch={"heartbeat_ns": 0})


def test_any_graph_naming_a_job_database_is_recorded(tmp_path):
    path = tmp_path / "g.yaml"
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    path.write_text(
        f"name: plain\nruntime: {{job_database_url: '{url}'}}\n"
        f"nodes:\n  - {{id: src, kind: file_replay, params: {{files: [{{format: tardis_trades, path: '{TARDIS_TRADES}'}}]}}}}\n"
        "  - {id: norm, kind: normalizer, inputs: [src]}\n"
    )
    run = build_graph(load_graph(str(path), env={}), backend="local")
    run.run()
    row = read_job(url, run.run_id)
    assert (row["job_name"], row["status"]) == ("graph", "completed")


def test_a_restart_whose_redeploy_fails_records_the_run_failed(tmp_path):
    # In-process stand-ins for what only Ray produces: an actor death mid-run (raised from
    # the progress hook) and a redeploy that fails with an operator error (not restartable).
    path, url = graph(tmp_path, trades_and_quotes(), source={"batch_rows": 500})
    run = build_graph(load_graph(str(path), env={}), backend="local")
    run._restartable = lambda failure: failure.actor_died  # the local backend never restarts
    died = []

    def on_progress(rows: int, watermark) -> None:
        if not died:
            died.append(rows)
            raise NodeFailure("bars", 0, "ActorDiedError: The actor died unexpectedly", actor_died=True)

    def redeploy(restore):
        raise NodeFailure("store", 0, "OSError: [Errno 28] No space left on device")

    run._deploy = redeploy
    with pytest.raises(NodeFailure, match=r"node 'store' \(shard 0\) failed: OSError"):
        run.run(on_progress=on_progress)
    row = read_job(url, run.run_id)
    assert row["status"] == "failed"  # never left 'running' by the failed restart
    assert row["error_message"] == "node 'store' (shard 0) failed: OSError: [Errno 28] No space left on device"
    assert run.restarts == 1 and died
