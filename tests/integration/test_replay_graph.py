"""The shipped main job, ``config/replay.yaml``, on real Ray actors and in-process.

Bars in ``bars_ohlcv`` are checked against an independent pandas computation from
the raw LOBSTER and Tardis files (tests/reference.py), for every timeframe.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from actors.parquet_sink import bars_dataset, latest_bars
from db.read import read_bars, read_table
from graph.build import build_graph
from graph.runtime import NodeFailure
from graph.spec import load_graph
from tests.conftest import run_main_job
from tests.reference import assert_bars_match, lobster_trades, reference_bars, tardis_trades

pytestmark = pytest.mark.ray

TIMEFRAMES = ["1s", "1m", "5m", "15m", "1h", "1d"]
AMZN_SESSION = ("America/New_York", "09:30", "16:00")


def run_replay(tmp_path, backend: str, *extra: str):
    return run_main_job(tmp_path, backend, *extra)


@pytest.fixture(scope="module")
def ray_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay_ray")
    url, summary = run_replay(tmp, "ray")
    return tmp, url, summary


@pytest.fixture(scope="module")
def references():
    return {"AMZN": lobster_trades(), "BTCUSDT": tardis_trades()}


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
@pytest.mark.parametrize("symbol", ["AMZN", "BTCUSDT"])
def test_stored_bars_equal_an_independent_pandas_computation(ray_run, references, symbol, timeframe):
    _, url, _ = ray_run
    stored = read_bars(url, symbol=symbol, timeframe=timeframe)
    session = AMZN_SESSION if symbol == "AMZN" else None
    expected = reference_bars(references[symbol], timeframe, session)
    assert_bars_match(stored, expected, f"{symbol} {timeframe}")


def test_the_days_totals_match_the_data(ray_run):
    _, url, summary = ray_run
    amzn_1m = read_bars(url, symbol="AMZN", timeframe="1m")
    assert amzn_1m["volume"].sum() == 810_755
    assert amzn_1m["trade_count"].sum() == 11_419
    btc_1m = read_bars(url, symbol="BTCUSDT", timeframe="1m")
    assert btc_1m["trade_count"].sum() == 9_999
    assert btc_1m["volume"].sum() == pytest.approx(4_024.301, rel=1e-12)
    # 57,515 LOBSTER rows (trades and quotes) + 9,999 Tardis trades
    assert summary["ticks_read"] == 57_515 + 9_999
    assert summary["ticks_read"] == summary["ticks_accepted"] + summary["quarantined_total"]
    counted = {s: {tf: len(read_bars(url, symbol=s, timeframe=tf)) for tf in TIMEFRAMES} for s in ("AMZN", "BTCUSDT")}
    assert summary["bars_confirmed"] == counted


def test_parquet_files_hold_the_same_bars_as_the_table(ray_run):
    tmp, url, _ = ray_run
    stored = read_bars(url).sort_values(["symbol", "timeframe", "ts"]).reset_index(drop=True)
    files = latest_bars(bars_dataset(tmp / "parquet").to_table()).to_pandas()
    files["ts"] = files["ts"].astype("int64")  # timestamp[ns, UTC] in the files
    files = files[stored.columns].sort_values(["symbol", "timeframe", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(files, stored, check_dtype=False)


def test_running_the_job_twice_leaves_identical_rows(ray_run, tmp_path):
    tmp, url, _ = ray_run
    before = read_table(url, "bars_ohlcv")
    run_replay(tmp, "local")  # same database, same parquet folder (in-process: the Ray time is spent elsewhere)
    after = read_table(url, "bars_ohlcv")
    assert after.equals(before)


@pytest.mark.parametrize("parallelism", [4])  # the module's Ray run has 2 shards
def test_bar_parallelism_does_not_change_the_bars(ray_run, tmp_path, parallelism):
    _, url, _ = ray_run
    other, _ = run_replay(tmp_path, "ray", f"bars.parallelism={parallelism}")
    assert read_table(other, "bars_ohlcv").equals(read_table(url, "bars_ohlcv"))


def test_in_process_chain_equals_the_ray_graph(ray_run, tmp_path):
    _, url, ray_summary = ray_run
    local, summary = run_replay(tmp_path, "local")
    assert read_table(local, "bars_ohlcv").equals(read_table(url, "bars_ohlcv"))
    assert summary["bars_confirmed"] == ray_summary["bars_confirmed"]


def test_a_failing_node_stops_the_graph_and_is_named(ray_session, tmp_path):
    # the Parquet folder passes validation; its bars/ folder is a file, found out at the write
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "bars").write_text("a file where the parquet sink wants a folder")
    loaded = load_graph(
        "replay.yaml",
        [f"store.url=sqlite:///{tmp_path / 'x.db'}", f"source.job_database_url=sqlite:///{tmp_path / 'x.db'}", f"parquet.path={tmp_path / 'pq'}",
         f"catalog.path={tmp_path / 'catalog'}"],
        env={},
    )
    with pytest.raises(NodeFailure) as info:
        build_graph(loaded, backend="ray").run()
    assert info.value.node_id == "parquet"
    assert "bars" in str(info.value)
    # the job row says what happened: the sink failed at end-of-stream, so the run failed
    (job,) = read_table(f"sqlite:///{tmp_path / 'x.db'}", "job_runs").to_pylist()
    assert job["job_name"] == "replay" and job["status"] == "failed"
    assert job["error_message"].startswith("node 'parquet' (shard 0) failed: ")


def test_the_replay_is_recorded_in_job_runs(ray_run):
    _, url, _ = ray_run
    jobs = [j for j in read_table(url, "job_runs").to_pylist() if j["status"] == "completed"]
    assert jobs, "no completed replay job"
    job = jobs[0]
    assert job["rows_written"] == 57_515 + 9_999
    assert sorted(json.loads(job["symbols"])) == ["AMZN", "BTCUSDT"]
    # the first LOBSTER row (a trade at 09:30:00.017459617 New York) opens the day
    assert job["min_ts"] == lobster_trades()["ts"].min()
    assert job["completed_at"] >= job["started_at"]


def test_arrow_batches_cross_actor_boundaries_unchanged(ray_session):
    """A RecordBatch round-trips through Ray's object store with schema and values intact."""
    from graph.schemas import TICK

    batch = pa.RecordBatch.from_pylist(
        [{"symbol": "AMZN", "ts": 1, "price": 223.82, "size": 1.0, "side": "buy", "bid": None, "ask": None,
          "bid_size": None, "ask_size": None, "provider": "lobster", "seq": 0, "origin": "replay"}],
        schema=TICK,
    )  # fmt: skip
    echoed = ray_session.get(ray_session.put(batch))
    assert echoed.equals(batch) and echoed.schema.equals(TICK)
