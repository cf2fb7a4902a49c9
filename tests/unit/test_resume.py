"""A run stopped dead mid-way and resumed from its last checkpoint leaves the outputs of an unstopped run.

In-process (no Ray): the driver is interrupted from inside (as a killed driver, it never
gets to finish the run), then ``build_graph(resume=True)`` continues the same run id from
its last complete checkpoint. The store's tables must equal a clean run's, row for row.
The real thing (SIGKILL of ``run.py``, then ``--resume``) is tests/integration/test_recovery.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from db.jobs import read_job
from graph.build import build_graph
from graph.spec import load_graph
from tests.conftest import LOBSTER, TRADES, FIXTURES
from tests.hostile.cuts import table, write_graph

FILES = [{**LOBSTER, "message_file": str(FIXTURES / LOBSTER["message_file"]), "orderbook_file": str(FIXTURES / LOBSTER["orderbook_file"])},
         {**TRADES, "path": str(FIXTURES / TRADES["path"])}]  # fmt: skip


class Crash(BaseException):
    """Stands for the driver's process dying: not an Exception, so nothing handles it as a failure."""


def graph(tmp_path):
    return write_graph(tmp_path, FILES, symbols=["AMZN", "BTCUSDT"], source={"batch_rows": 2_000})


def outputs(tmp_path) -> dict[str, pd.DataFrame]:
    quarantine = table(tmp_path, "quarantine").drop(columns="run_id")
    return {"bars": table(tmp_path, "bars_ohlcv"), "ticks": table(tmp_path, "tick_data"), "quarantine": quarantine}


@pytest.mark.parametrize("crash_after", [20_000, 50_000])
def test_a_resumed_run_leaves_the_tables_of_an_unstopped_run(tmp_path, crash_after):
    clean = tmp_path / "clean"
    build_graph(load_graph(str(graph(clean)), env={}), backend="local").run()
    expected = outputs(clean)

    crashed = tmp_path / "crashed"
    loaded = load_graph(str(graph(crashed)), env={})
    loaded.spec.runtime.checkpoint_interval_ms = 1  # a checkpoint at every step
    loaded.spec.runtime.checkpoint_dir = str(crashed / "ckpt")
    run = build_graph(loaded, backend="local")

    def crash(rows: int, watermark) -> None:
        if rows >= crash_after:
            raise Crash

    with pytest.raises(Crash):
        run.run(on_progress=crash)
    assert run.last_complete is not None and 0 < len(table(crashed, "tick_data")) < len(expected["ticks"])

    resumed = build_graph(loaded, backend="local", run_id=run.run_id, resume=True)
    assert resumed.resumed_from == run.last_complete
    resumed.run()
    got = outputs(crashed)
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, check_exact=True, obj=name)
    row = read_job(f"sqlite:///{crashed / 'store.db'}", run.run_id)
    assert row["status"] == "completed" and row["metadata"]["resumed_from_checkpoint"] == run.last_complete
    assert not (crashed / "ckpt" / run.run_id).exists()  # a completed run keeps no checkpoints


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    loaded = load_graph(str(graph(tmp_path)), env={})
    loaded.spec.runtime.checkpoint_dir = str(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"run 0123456789abcdef has no complete checkpoint in .*ckpt/0123456789abcdef"):
        build_graph(loaded, backend="local", run_id="0123456789abcdef", resume=True)
