"""One sink's failure never wipes another's output, and no job row says what did not happen (case 7).

Unusable sink paths fail when the graph is validated (exit 2, nothing started). A sink
that fails while running (its directory replaced by a file mid-run) aborts the run: the
healthy SQL store still writes every row it received, and the replay's job row is
``failed`` with the failing node's error -- it used to be 0 rows stored and ``completed``.
"""

from __future__ import annotations

import shutil

import pytest

import run as cli
from graph.runtime import NodeFailure
from graph.spec import GraphError, load_graph
from tests.hostile.cuts import run_graph, table, tardis_cut, tardis_spec, write_graph


@pytest.fixture
def graph(tmp_path):
    return write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))], parquet=True)


def test_a_parquet_path_that_is_a_file_is_refused_before_anything_starts(tmp_path, graph, capsys):
    (tmp_path / "parquet").write_text("not a directory")
    with pytest.raises(GraphError, match=r"nodes\[4\]\.params\.path: .*/parquet exists and is not a directory"):
        load_graph(str(graph), env={})
    assert cli.main(["--graph", str(graph), "--backend", "local", "--no-progress"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "store.db").exists()  # nothing ran


def test_a_sqlite_store_in_a_path_that_cannot_exist_is_refused(tmp_path, graph):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    with pytest.raises(GraphError, match=r"nodes\[3\]\.params\.url: SQLite database .*x\.db cannot be written: .*blocker exists and is not a directory"):
        load_graph(str(graph), [f"store.url=sqlite:///{tmp_path / 'blocker' / 'x.db'}"], env={})


def test_a_sink_failing_mid_run_leaves_the_healthy_store_complete_and_the_job_failed(tmp_path, graph):
    clean = tmp_path / "clean"
    clean.mkdir()
    reference = run_graph(write_graph(clean, [tardis_spec(tardis_cut(clean / "trades.csv"))]))
    reference_bars = table(clean, "bars_ohlcv")

    from graph.build import build_graph

    run = build_graph(load_graph(str(graph), env={}), backend="local")  # valid and started ...
    shutil.rmtree(tmp_path / "parquet", ignore_errors=True)
    (tmp_path / "parquet").write_text("replaced by a file after the start")  # ... broken while running
    with pytest.raises(NodeFailure, match=r"node 'parquet' \(shard 0\) failed: (NotADirectory|FileExists)Error"):
        run.run()
    assert len(table(tmp_path, "tick_data")) == reference["ticks_accepted"] == 500
    assert table(tmp_path, "bars_ohlcv").equals(reference_bars)
    (job,) = table(tmp_path, "job_runs").to_dict("records")
    assert job["status"] == "failed"
    assert job["error_message"].startswith("node 'parquet' (shard 0) failed: ")


@pytest.mark.ray
def test_on_ray_too(ray_session, tmp_path, graph):
    from graph.build import build_graph

    run = build_graph(load_graph(str(graph), env={}), backend="ray")
    shutil.rmtree(tmp_path / "parquet", ignore_errors=True)
    (tmp_path / "parquet").write_text("replaced by a file after the start")
    with pytest.raises(NodeFailure, match=r"node 'parquet' \(shard 0\) failed: "):
        run.run()
    assert len(table(tmp_path, "tick_data")) == 500
    (job,) = table(tmp_path, "job_runs").to_dict("records")
    assert job["status"] == "failed" and "node 'parquet' (shard 0) failed" in job["error_message"]
