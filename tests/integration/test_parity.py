"""Parity of the replay graph: the bars hash is the same across runs, shard counts,
batchings, in-process vs Ray, and burst vs paced replay; proofs from a run verify.

Runs use ``config/replay.yaml`` (the main job, which includes the ``parity`` node) in-process,
except one on Ray. The bars hash is also checked against an independent computation:
the rows stored in ``bars_ohlcv``, sorted by (bar end, symbol, timeframe, ts), hashed
with the chain formula written out here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import orjson
import pyarrow as pa
import pytest

from db.read import read_bars, read_table
from graph.build import build_graph
from graph.runtime import NodeFailure
from graph.schemas import BAR
from graph.spec import load_graph
from graph.summary import build_summary
from parity.canonical import canonical_fields, encode_rows
from parity.proof import KEY_ENV, verify_proof
from tests.conftest import LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, ROOT, TARDIS_TRADES

KEY = "integration-test-key"
BAR_LENGTH_NS = {"1s": 10**9, "1m": 60 * 10**9, "5m": 300 * 10**9, "15m": 900 * 10**9, "1h": 3600 * 10**9,
                 "1d": 26 * 3600 * 10**9}  # fmt: skip
TF_RANK = {tf: i for i, tf in enumerate(BAR_LENGTH_NS)}


def run_parity(tmp_path, *overrides: str, backend: str = "local", name: str = "run"):
    url = f"sqlite:///{tmp_path / (name + '.db')}"
    loaded = load_graph(
        "replay.yaml",
        [f"store.url={url}", f"source.job_database_url={url}", f"parquet.path={tmp_path / (name + '_parquet')}",
         f"catalog.path={tmp_path / (name + '_catalog')}", *overrides],
        env={},
    )
    summary = build_summary(loaded, build_graph(loaded, backend=backend).run())
    return summary, url


def _digests(root):
    """SHA-256 of every file of a catalog, by path relative to it."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity_baseline")
    return (*run_parity(tmp, "bars.parallelism=1"), tmp)


def test_the_summary_holds_the_final_hash_of_every_tracked_stream(baseline):
    summary, _, _ = baseline
    assert set(summary["parity"]) == {"bars", "ticks"}
    assert summary["parity"]["ticks"]["messages"] == summary["ticks_accepted"]
    confirmed = sum(n for per_tf in summary["bars_confirmed"].values() for n in per_tf.values())
    assert summary["parity"]["bars"]["messages"] == confirmed
    assert all(len(s["hash"]) == 64 for s in summary["parity"].values())


def test_the_bars_hash_is_the_hash_of_the_stored_bars_in_bar_end_order(baseline):
    summary, url, _ = baseline
    stored = read_bars(url)
    stored["status"] = "confirmed"
    stored["end"] = stored["ts"] + stored["timeframe"].map(BAR_LENGTH_NS)
    stored["rank"] = stored["timeframe"].map(TF_RANK)
    stored = stored.sort_values(["end", "symbol", "rank", "ts"])
    batch = pa.RecordBatch.from_pandas(stored[BAR.names], schema=BAR, preserve_index=False)
    fields = canonical_fields(BAR)
    h = hashlib.sha256(b"tickgraph-parity/2\nbars\n" + orjson.dumps(list(fields)) + b"\n53").digest()
    for row in encode_rows(batch, fields):
        h = hashlib.sha256(h + row).digest()
    assert summary["parity"]["bars"] == {"messages": len(stored), "hash": h.hex()}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(["bars.parallelism=1"], id="second-run"),
        pytest.param(["bars.parallelism=4"], id="parallelism-4"),
        pytest.param(["bars.parallelism=4", "source.batch_rows=997"], id="parallelism-4-small-batches"),
    ],
)
def test_the_bars_hash_is_the_same_for_every_run_shard_count_and_batching(baseline, tmp_path, overrides):
    expected, expected_url, _ = baseline
    summary, url = run_parity(tmp_path, *overrides)
    assert summary["parity"] == expected["parity"]
    # the signals too, bit for bit (every row, sorted by key; created_at is wall time)
    got, want = (read_table(u, "signals").drop_columns(["created_at"]) for u in (url, expected_url))
    assert got.num_rows == want.num_rows > 0 and got.equals(want)
    # the ticks and per-tick signals in the tick catalog: the same files, byte for byte
    catalogs = [_digests(tmp_path / "run_catalog"), _digests(baseline[2] / "run_catalog")]
    assert catalogs[0] == catalogs[1] and any(name.startswith("signals/") for name in catalogs[0])
    forming = [s["operator"]["ordering"]["bars"] for s in summary["nodes"]["parity"]["shards"]]
    assert forming[0]["out_of_order"] == 0 and forming[0]["pending"] == 0


def test_two_runs_write_byte_identical_proofs_that_verify(baseline, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    expected, _, _ = baseline
    first, second = tmp_path / "a.proof.json", tmp_path / "b.proof.json"
    run_parity(tmp_path, "bars.parallelism=2", f"parity.proof_path={first}", name="a")
    run_parity(tmp_path, "bars.parallelism=3", f"parity.proof_path={second}", name="b")
    assert first.read_bytes() == second.read_bytes()
    document = verify_proof(first, KEY.encode())
    streams = {name: {"messages": s["messages"], "hash": s["hash"]} for name, s in document["streams"].items()}
    assert streams == expected["parity"]
    assert [f["sha256"] for f in document["data_files"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, TARDIS_TRADES)
    ]
    assert document["graph"]["sha256"] == hashlib.sha256((ROOT / "config/replay.yaml").read_bytes()).hexdigest()
    verify = subprocess.run([sys.executable, str(ROOT / "run.py"), "parity", "verify", str(first)],
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), KEY_ENV: KEY},
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_a_proof_path_without_a_key_stops_the_graph_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(NodeFailure, match=f"environment variable {KEY_ENV} is not set") as info:
        run_parity(tmp_path, f"parity.proof_path={tmp_path / 'p.json'}")
    assert info.value.node_id == "parity"


def test_the_cli_writes_the_parity_key_into_the_summary_json(baseline, tmp_path):
    expected, _, _ = baseline
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--graph", "replay.yaml", "--backend", "local", "--no-progress",
         "--set", f"store.url=sqlite:///{tmp_path / 'cli.db'}", "--set", f"parquet.path={tmp_path / 'pq'}",
         "--set", f"source.job_database_url=sqlite:///{tmp_path / 'cli.db'}", "--set", f"catalog.path={tmp_path / 'catalog'}",
         "--summary-json", str(out)],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["parity"] == expected["parity"]


def test_a_paced_replay_hashes_like_a_burst_replay(tmp_path):
    # Two minutes of AMZN (13:30-13:32 UTC, the first minutes of the session): speed 20
    # paces them over about 6 s of wall time; speed 0 is a burst.
    replay = ["source.kind=replay", "source.params.start=2012-06-21T13:30:00Z", "source.params.end=2012-06-21T13:32:00Z"]
    burst, _ = run_parity(tmp_path, *replay, "source.params.speed=0", "bars.parallelism=1", name="burst")
    paced, _ = run_parity(tmp_path, *replay, "source.params.speed=20", "bars.parallelism=2", name="paced")
    assert burst["parity"]["bars"]["messages"] > 20 and burst["parity"]["ticks"]["messages"] > 400
    assert paced["parity"] == burst["parity"]
    assert paced["elapsed_s"] > 5.0  # it really was paced
