"""Kill tests on Ray: an actor killed mid-replay costs nothing (checkpoints, restarts, global rollback).

The main job (``config/replay.yaml``: replay, normalizer, two bar shards, five signals,
SQL store, Parquet, parity) runs with a checkpoint every 150 ms; at a seeded point of the
replay one actor is killed with ``ray.kill``. The run must complete (no exception), its
``job_runs`` row say ``completed`` with ``restarts >= 1``, and ``bars_ohlcv``, ``signals``,
``tick_data`` and the parity hashes equal those of an unfailed run; SQLite triggers record
every UPDATE of a stored row (an upsert changes a row only when a value differs), so no
primary key was ever written with a different value; every tick is counted once.
"""

from __future__ import annotations

import random
import sqlite3

import pandas as pd
import pytest

from db.jobs import read_job
from graph.build import build_graph
from graph.summary import build_summary
from tests.integration.recovery_jobs import TABLES, audited, main_job, outputs

pytestmark = pytest.mark.ray
@pytest.fixture(scope="module")
def unfailed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unfailed")
    loaded, _ = main_job(tmp)
    summary = build_summary(loaded, build_graph(loaded, backend="local").run())
    return outputs(tmp), summary


@pytest.mark.parametrize(
    ("victim", "seed"),
    [(("bars", 1), 2), (("normalizer", 0), 3), (("store", 0), 4)],
    ids=["bars#1", "source+normalizer chain", "store"],
)
def test_killing_an_actor_mid_replay_changes_nothing(ray_session, tmp_path, unfailed, victim, seed):
    expected, expected_summary = unfailed
    audited(tmp_path)
    loaded, url = main_job(tmp_path)
    run = build_graph(loaded, backend="ray")
    threshold = random.Random(seed).randint(8_192, 50_000)
    killed = []

    def kill(rows: int, watermark) -> None:
        if not killed and rows >= threshold and run.last_complete is not None:
            killed.append(rows)
            ray_session.kill(run.hosts[victim], no_restart=True)

    summary = build_summary(loaded, run.run(on_progress=kill))
    assert killed, "the kill happened"
    assert run.restarts >= 1
    row = read_job(url, run.run_id)
    assert row["status"] == "completed" and row["metadata"]["restarts"] >= 1
    got = outputs(tmp_path)
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], expected[name], check_exact=True, obj=name)
    assert summary["parity"] == expected_summary["parity"]
    assert summary["ticks_read"] == expected_summary["ticks_read"] == summary["ticks_accepted"] + summary["quarantined_total"]
    assert summary["bars_confirmed"] == expected_summary["bars_confirmed"]
    changed = sqlite3.connect(tmp_path / "store.db").execute("select count(*) from audit").fetchone()[0]
    assert changed == 0  # rows sent again after the checkpoint were identical to the stored ones


def test_a_killed_driver_resumes_from_its_last_checkpoint(tmp_path, unfailed):
    # run.py (in-process backend: the driver is the whole run; the kill tests above cover
    # Ray), SIGKILLed once a checkpoint is complete; then `run.py --resume RUN_ID` finishes it.
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    expected, expected_summary = unfailed
    audited(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sets = [
        f"store.url={url}", f"source.job_database_url={url}", f"parquet.path={tmp_path / 'parquet'}",
        "source.batch_rows=4096", "runtime.pump_events=1", "runtime.checkpoint_interval_ms=150",
        f"runtime.checkpoint_dir={tmp_path / 'ckpt'}",
    ]  # fmt: skip
    args = [sys.executable, str(ROOT / "run.py"), "--graph", "replay.yaml", "--no-progress", "--backend", "local",
            *(f"--set={s}" for s in sets)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    driver = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not list((tmp_path / "ckpt").glob("*/*/COMPLETE.json")):
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint completed"
            time.sleep(0.02)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    run_id = run_dir.name
    assert read_job(url, run_id)["status"] == "running"  # the killed driver recorded nothing more
    summary_json = tmp_path / "summary.json"
    resumed = subprocess.run([*args, "--resume", run_id, "--summary-json", str(summary_json)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"run {run_id}: resumed from checkpoint " in resumed.stderr
    got = outputs(tmp_path)
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], expected[name], check_exact=True, obj=name)
    import json

    summary = json.loads(summary_json.read_text())
    assert summary["parity"] == expected_summary["parity"]
    assert summary["ticks_read"] == expected_summary["ticks_read"]
    assert read_job(url, run_id)["status"] == "completed"
    assert sqlite3.connect(tmp_path / "store.db").execute("select count(*) from audit").fetchone()[0] == 0


def test_three_nodes_give_the_one_node_hashes_and_survive_losing_a_worker_node(tmp_path, unfailed):
    # a Ray cluster of a head and two workers on this machine, in its own process
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    expected, expected_summary = unfailed
    audited(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    job = subprocess.run([sys.executable, "-m", "tests.integration.cluster_job", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=420)  # fmt: skip
    assert job.returncode == 0, job.stderr[-4000:]
    report = json.loads((tmp_path / "cluster.json").read_text())
    assert report["nodes"] == 3
    placed = report["placed"]
    assert placed["bars#0"] != placed["bars#1"]  # the keyed node's shards on two machines
    assert len(set(placed.values())) == 3
    assert report["removed_at_rows"] and report["restarts"] >= 1
    from graph.failures import ACTOR_DIED_ERRORS

    assert any(f": {name}:" in report["recoveries"][0]["failure"] for name in ACTOR_DIED_ERRORS)  # a lost actor, not an operator error
    got = outputs(tmp_path)
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], expected[name], check_exact=True, obj=name)
    summary = report["summary"]
    assert summary["parity"] == expected_summary["parity"]
    assert summary["ticks_read"] == expected_summary["ticks_read"] == summary["ticks_accepted"] + summary["quarantined_total"]
    assert read_job(f"sqlite:///{tmp_path / 'store.db'}", report["run_id"])["status"] == "completed"
    assert sqlite3.connect(tmp_path / "store.db").execute("select count(*) from audit").fetchone()[0] == 0
