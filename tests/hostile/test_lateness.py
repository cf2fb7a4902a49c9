"""Lateness is a property of the stream, not of its batching (hostile-input case 4).

A tick is late when it is older than the watermark *at its own position in the stream*
(the running maximum of event time before it, minus the allowed lateness). So the same
files give the same accepted ticks, quarantine rows and bars for every ``batch_rows``,
``batch_interval_ms`` and speed. Two inputs cut from the fixtures (1,200 LOBSTER AMZN
messages and 600 Tardis BTCUSDT trades):

* ``moved``: 10 AMZN messages and 10 BTCUSDT trades moved 5 minutes back in time, in
  place (allowed lateness 0): with 65,536-row batches they used to pass, with 1,000-row
  batches they were late;
* ``shuffled``: every BTCUSDT trade reordered at random within its 1-second cell
  (allowed lateness 1 s): nothing is late, and the bars equal the unshuffled ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import LOBSTER_MESSAGES
from tests.hostile.cuts import (
    TARDIS_HEADER,
    fixture_lines,
    lobster_cut,
    run_graph,
    table,
    tardis_field,
    tardis_spec,
    write_graph,
    write_lines,
)
from tests.conftest import TARDIS_TRADES

MESSAGES, TRADES = 1_200, 600
MOVED = range(1_000, 1_010)  # AMZN message rows and BTCUSDT trade rows moved back
BATCHINGS = [
    {"batch_rows": 1},
    {"batch_rows": 7},
    {"batch_rows": 1_000},
    {"batch_rows": 65_536},
    {"speed": 1_000.0, "batch_interval_ms": 100, "max_gap_ms": 60_000},  # paced
]


def moved_input(directory) -> list[dict]:
    directory.mkdir(parents=True, exist_ok=True)
    lobster = lobster_cut(directory / "lobster", rows=MESSAGES)
    lines = fixture_lines(LOBSTER_MESSAGES, MESSAGES, skip_header=False)
    for row in MOVED:
        time, rest = lines[row].split(b",", 1)
        seconds, _, fraction = time.partition(b".")
        lines[row] = b"%d.%s,%s" % (int(seconds) - 300, fraction, rest)
    write_lines(directory / "lobster" / "message.csv", lines)
    trades = fixture_lines(TARDIS_TRADES, TRADES, skip_header=True)
    for row in [r - 500 for r in MOVED]:
        us = int(trades[row].split(b",")[2])
        trades[row] = tardis_field(trades[row], "timestamp", b"%d" % (us - 300_000_000))
    tardis = write_lines(directory / "trades.csv", trades, TARDIS_HEADER)
    return [lobster, tardis_spec(tardis)]


def shuffled_lines(seed: int) -> list[bytes]:
    trades = fixture_lines(TARDIS_TRADES, TRADES, skip_header=True)
    cells = np.array([int(line.split(b",")[2]) // 1_000_000 for line in trades])
    order = np.lexsort((np.random.default_rng(seed).random(len(trades)), cells))
    return [trades[i] for i in order]


def run(tmp_path, files: list[dict], source: dict, lateness_ms: int) -> dict[str, pd.DataFrame]:
    graph = write_graph(tmp_path, files, source=source, event_time={"allowed_lateness_ms": lateness_ms})
    summary = run_graph(graph)
    quarantine = table(tmp_path, "quarantine").drop(columns="run_id")
    return {
        "ticks": table(tmp_path, "tick_data"),
        "quarantine": quarantine.sort_values(["source", "position"], ignore_index=True),
        "bars": table(tmp_path, "bars_ohlcv"),
        "summary": pd.DataFrame([{k: summary[k] for k in ("ticks_read", "ticks_accepted", "quarantined_total")}]),
    }


def assert_identical(runs: list[dict[str, pd.DataFrame]]) -> None:
    first = runs[0]
    for other in runs[1:]:
        for name, frame in first.items():
            pd.testing.assert_frame_equal(frame, other[name], check_exact=True, obj=name)


def test_ticks_moved_beyond_the_lateness_are_late_for_every_batching(tmp_path):
    files = moved_input(tmp_path / "input")
    runs = [run(tmp_path / f"run{i}", files, source, 0) for i, source in enumerate(BATCHINGS)]
    assert_identical(runs)
    quarantine = runs[0]["quarantine"]
    assert set(quarantine["reason"]) == {"late"} and len(quarantine) == 2 * len(MOVED)
    assert sorted(quarantine.loc[quarantine["symbol"] == "AMZN", "row"]) == list(MOVED)
    amzn_ticks = runs[0]["ticks"].query("symbol == 'AMZN'")
    assert len(amzn_ticks) == MESSAGES - len(MOVED) and not set(MOVED) & set(amzn_ticks["seq"])
    assert runs[0]["summary"]["ticks_read"][0] == MESSAGES + TRADES


@pytest.mark.parametrize("seed", [1])
def test_a_shuffle_within_the_lateness_changes_nothing_for_every_batching(tmp_path, seed):
    write_lines(tmp_path / "shuffled.csv", shuffled_lines(seed), TARDIS_HEADER)
    write_lines(tmp_path / "ordered.csv", fixture_lines(TARDIS_TRADES, TRADES, skip_header=True), TARDIS_HEADER)
    shuffled = [tardis_spec(tmp_path / "shuffled.csv")]
    runs = [run(tmp_path / f"run{i}", shuffled, source, 1_000) for i, source in enumerate(BATCHINGS)]
    assert_identical(runs)
    assert runs[0]["quarantine"].empty and runs[0]["summary"]["ticks_accepted"][0] == TRADES
    ordered = run(tmp_path / "ordered", [tardis_spec(tmp_path / "ordered.csv")], {}, 1_000)
    pd.testing.assert_frame_equal(runs[0]["bars"], ordered["bars"], check_exact=True)
