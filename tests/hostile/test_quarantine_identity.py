"""Every rejected input row is one quarantine row, and the summary counts what the table holds (case 5).

The quarantine table was keyed ``(source, row, reason)`` with ``row`` = seq, so three
resends of one trade (same source, seq and reason) upserted into one row while the
summary counted three. A rejection is now identified by ``(run_id, source, position)``.
"""

from __future__ import annotations

from tests.conftest import TARDIS_TRADES
from tests.hostile.cuts import fixture_lines, run_graph, table, tardis_cut, tardis_field, tardis_spec, write_graph

LINES = fixture_lines(TARDIS_TRADES, 500, skip_header=True)


def test_three_resends_of_one_trade_are_three_quarantine_rows(tmp_path):
    # the trade of row 50 delivered four times in a row (a reconnect replaying it), plus a
    # bad price on the same trade id later on: four rejections of one (source, seq)
    resent = [LINES[50]] * 3
    bad_price = tardis_field(LINES[50], "price", b"-1")
    path = tardis_cut(tmp_path / "trades.csv", insert={51: resent, 52: [bad_price]})
    summary = run_graph(write_graph(tmp_path, [tardis_spec(path)]))
    quarantine = table(tmp_path, "quarantine")
    trade_id = int(LINES[50].split(b",")[4])
    assert summary["quarantined"] == {"duplicate": 3, "bad_price": 1}
    assert summary["quarantined_total"] == len(quarantine) == 4
    assert (quarantine["row"] == trade_id).all()
    assert sorted(quarantine["reason"]) == ["bad_price", "duplicate", "duplicate", "duplicate"]
    assert quarantine["position"].tolist() == [0, 1, 2, 3]  # in stream order at the normalizer
    jobs = table(tmp_path, "job_runs")
    assert set(quarantine["run_id"]) == set(jobs["id"])  # joins the job row of the run
    assert summary["ticks_read"] == 504 == summary["ticks_accepted"] + len(quarantine)


def test_a_second_run_records_its_own_rejections(tmp_path):
    path = tardis_cut(tmp_path / "trades.csv", insert={51: [LINES[50]]})
    graph = write_graph(tmp_path, [tardis_spec(path)])
    first, second = run_graph(graph), run_graph(graph)
    quarantine = table(tmp_path, "quarantine")
    assert first["quarantined_total"] == second["quarantined_total"] == 1
    assert len(quarantine) == 2 and quarantine["run_id"].nunique() == 2
    assert table(tmp_path, "job_runs")["status"].tolist() == ["completed", "completed"]
    assert len(table(tmp_path, "tick_data")) == 500  # ticks upsert: the rerun leaves identical rows
