"""Hostile tick files cut from the fixtures: nothing lost, nothing corrupted, each bad row once.

Every test runs the replay graph in-process on a 500-row cut of a real fixture with a few
rows spoiled, and checks the store against the cut's own rows read independently
(pandas), row by row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from graph.text import printable
from tests.conftest import TARDIS_TRADES
from tests.hostile.cuts import (
    fixture_lines,
    lobster_cut,
    run_graph,
    table,
    tardis_cut,
    tardis_field,
    tardis_frame,
    tardis_spec,
    write_graph,
)

ROWS = 500
LINES = fixture_lines(TARDIS_TRADES, ROWS, skip_header=True)
REFERENCE = tardis_frame(rows=ROWS)  # the cut's rows, read by pandas


def accepted_ticks(tmp_path) -> pd.DataFrame:
    ticks = table(tmp_path, "tick_data").sort_values(["ts", "seq"], ignore_index=True)
    return ticks[["ts", "price", "size", "seq"]]


def expected_ticks(dropped: list[int]) -> pd.DataFrame:
    kept = REFERENCE.drop(index=dropped).sort_values(["ts", "seq"], ignore_index=True)
    return kept[["ts", "price", "size", "seq"]]


def assert_counts(summary: dict, read: int, accepted: int, quarantine: pd.DataFrame) -> None:
    assert summary["ticks_read"] == read
    assert summary["ticks_accepted"] == accepted
    assert summary["quarantined_total"] == read - accepted == len(quarantine)


# -- 1. a stray double quote ---------------------------------------------------------------


def test_a_stray_quote_pair_quarantines_two_rows_and_keeps_the_other_498(tmp_path):
    # row 100's side opens a quote that row 150's side closes: read with quote handling,
    # rows 100-150 became one field (450 of 500 read, a chimera row stored)
    spoiled = {100: tardis_field(LINES[100], "side", b'"buy'), 150: tardis_field(LINES[150], "side", b'sell"')}
    path = tardis_cut(tmp_path / "trades.csv", replace=spoiled)
    summary = run_graph(write_graph(tmp_path, [tardis_spec(path)]))
    quarantine = table(tmp_path, "quarantine")
    assert_counts(summary, read=500, accepted=498, quarantine=quarantine)
    assert quarantine["row"].tolist() == [100, 150]
    assert set(quarantine["reason"]) == {"malformed_row"}
    assert quarantine["detail"].tolist() == [
        "column 'side': '\"buy' is not one of 'buy', 'sell', 'unknown'",
        "column 'side': 'sell\"' is not one of 'buy', 'sell', 'unknown'",
    ]
    assert quarantine["raw"].tolist() == [spoiled[100].decode(), spoiled[150].decode()]
    pd.testing.assert_frame_equal(accepted_ticks(tmp_path), expected_ticks([100, 150]), check_dtype=False)


def test_a_stray_quote_in_a_canonical_csv_written_by_pyarrow(tmp_path):
    # pyarrow's CSV writer quotes every string value ("BTCUSDT"): those are unwrapped; a
    # lone quote is part of the value and spoils only its own row
    frame = REFERENCE.assign(symbol="BTCUSDT", provider="binance-futures", side="buy")
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "ticks.csv")
    lines = (tmp_path / "ticks.csv").read_bytes().splitlines()
    assert lines[1].count(b'"buy"') == 1  # the writer did quote
    lines[101] = lines[101].replace(b'"buy"', b'"buy')
    lines[151] = lines[151].replace(b'"buy"', b'buy"')
    (tmp_path / "ticks.csv").write_bytes(b"\n".join(lines) + b"\n")
    summary = run_graph(write_graph(tmp_path, [{"format": "canonical", "path": str(tmp_path / "ticks.csv")}]))
    quarantine = table(tmp_path, "quarantine")
    assert_counts(summary, read=500, accepted=498, quarantine=quarantine)
    assert quarantine["row"].tolist() == [100, 150]
    pd.testing.assert_frame_equal(accepted_ticks(tmp_path), expected_ticks([100, 150]), check_dtype=False)


# -- 2. timestamps in the wrong unit ---------------------------------------------------------


def test_nanoseconds_in_the_microsecond_field_are_quarantined_not_wrapped_to_1840(tmp_path):
    lines = [tardis_field(line, "timestamp", line.split(b",")[2] + b"000") for line in LINES]
    path = tardis_cut(tmp_path / "trades.csv", replace=dict(enumerate(lines)))
    summary = run_graph(write_graph(tmp_path, [tardis_spec(path)]))
    quarantine = table(tmp_path, "quarantine")
    assert_counts(summary, read=500, accepted=0, quarantine=quarantine)
    assert set(quarantine["reason"]) == {"bad_timestamp"}
    first = quarantine["detail"][0]
    assert first.startswith("column 'timestamp': 1582329602111000000 us overflows int64 nanoseconds; ")
    assert "as nanoseconds it is 2020-02-22T00:00:02.111Z: likely nanoseconds in a microseconds field" in first
    assert table(tmp_path, "tick_data").empty and table(tmp_path, "bars_ohlcv").empty


def test_ticks_in_2264_2150_and_1970_are_quarantined_and_move_no_watermark(tmp_path):
    # row 10: year 2264 (ns overflow int64), row 20: 2150 (outside the plausible range),
    # row 30: seconds written in the microsecond field (1970). None may make later rows late.
    year_2264 = b"9330000000000000"  # us
    year_2150 = b"5700000000000000"
    seconds = LINES[30].split(b",")[2][:10]
    spoiled = {
        10: tardis_field(LINES[10], "timestamp", year_2264),
        20: tardis_field(LINES[20], "timestamp", year_2150),
        30: tardis_field(LINES[30], "timestamp", seconds),
    }
    path = tardis_cut(tmp_path / "trades.csv", replace=spoiled)
    summary = run_graph(write_graph(tmp_path, [tardis_spec(path)]))
    quarantine = table(tmp_path, "quarantine").sort_values("ts", na_position="first", ignore_index=True)
    assert_counts(summary, read=500, accepted=497, quarantine=quarantine)
    # row 10 cannot become a tick (the reader names the file row); 20 and 30 are ticks the
    # normalizer rejects (it names their seq, the trade id)
    assert quarantine["row"].tolist() == [10, REFERENCE["seq"][30], REFERENCE["seq"][20]]
    assert quarantine["source"].tolist() == [str(path), "normalizer/binance-futures/BTCUSDT", "normalizer/binance-futures/BTCUSDT"]
    assert set(quarantine["reason"]) == {"bad_timestamp"}
    detail_2264, detail_1970, detail_2150 = quarantine["detail"]
    assert "9330000000000000 us overflows int64 nanoseconds" in detail_2264
    assert detail_2150.startswith("ts 5700000000000000000 (2150-08-17T05:20:00Z)")
    assert "is outside the plausible event-time range [1990-01-01T00:00:00Z, 2100-01-01T00:00:00Z)" in detail_2150
    assert detail_1970.startswith(f"ts {int(seconds) * 1000} (1970-01-")
    assert "likely seconds read as microseconds" in detail_1970
    assert "late" not in summary["quarantined"]
    pd.testing.assert_frame_equal(accepted_ticks(tmp_path), expected_ticks([10, 20, 30]), check_dtype=False)
    assert table(tmp_path, "bars_ohlcv")["ts"].min() >= REFERENCE["ts"].min() // 10**9 // 86_400 * 86_400 * 10**9


def test_the_plausible_range_is_the_graphs_to_set(tmp_path):
    path = tardis_cut(tmp_path / "trades.csv", replace={499: tardis_field(LINES[499], "timestamp", b"5700000000000000")})
    graph = write_graph(tmp_path, [tardis_spec(path)], event_time={"latest": "2200-01-01T00:00:00Z"})
    summary = run_graph(graph)
    assert summary["ticks_accepted"] == 500 and summary["quarantined_total"] == 0


# -- 3. bytes that are not text ----------------------------------------------------------------


def test_a_binary_block_and_a_latin1_byte_lose_no_good_row(tmp_path):
    rng = np.random.default_rng(9)
    block = bytes(rng.integers(0, 256, 3_000, dtype=np.uint8))
    block_lines = [line for line in block.splitlines() if line]
    latin1 = tardis_field(LINES[300], "side", "s\xe9ll".encode("latin-1"))
    unused = tardis_field(LINES[400], "local_timestamp", b"1582329602\xff")  # a column tickgraph does not read
    path = tardis_cut(tmp_path / "trades.csv", replace={300: latin1, 400: unused}, insert={200: [block]})
    summary = run_graph(write_graph(tmp_path, [tardis_spec(path)]))
    quarantine = table(tmp_path, "quarantine").sort_values("row", ignore_index=True)
    read = ROWS + len(block_lines)
    assert_counts(summary, read=read, accepted=499, quarantine=quarantine)
    # the block's lines are data rows 200 .. 200 + n - 1; row 300 of the cut is after them
    assert quarantine["row"].tolist() == [*range(200, 200 + len(block_lines)), 300 + len(block_lines)]
    assert quarantine["detail"].iloc[-1] == "column 'side' is not UTF-8 text (byte 0xe9 at offset 1)"
    assert quarantine["raw"].iloc[-1] == printable(latin1.decode("utf-8", "backslashreplace"))
    for text in [*quarantine["raw"], *quarantine["detail"]]:  # escaped: nothing that garbles a terminal
        assert text == printable(text) and "\x00" not in text and "\x1b" not in text
    pd.testing.assert_frame_equal(accepted_ticks(tmp_path), expected_ticks([300]), check_dtype=False)
    jobs = table(tmp_path, "job_runs")
    assert jobs["status"].tolist() == ["completed"] and jobs["error_message"].isna().all()


# -- 6. one LOBSTER pair, one outcome -------------------------------------------------------------


def test_a_bad_lobster_orderbook_row_is_one_outcome(tmp_path):
    spec = lobster_cut(tmp_path / "lobster", rows=ROWS, book={250: b"2239500,100,oops,100"})
    summary = run_graph(write_graph(tmp_path, [spec], symbols=["AMZN"]))
    quarantine = table(tmp_path, "quarantine")
    assert_counts(summary, read=500, accepted=499, quarantine=quarantine)
    (row,) = quarantine.to_dict("records")
    assert (row["row"], row["reason"], row["source"]) == (250, "malformed_row", spec["message_file"])
    assert row["detail"] == f"orderbook file {spec['orderbook_file']} row 250: column 'bid_price_1': 'oops' is not a number"
    assert 250 not in table(tmp_path, "tick_data")["seq"].tolist()


@pytest.mark.parametrize("block_bytes", [64, 4 << 20])
def test_readers_agree_whatever_the_block_size(tmp_path, block_bytes):
    # the fast path and the line path give every row the same verdict
    from actors.tick_formats import read_tardis_trades

    path = tardis_cut(
        tmp_path / "trades.csv",
        replace={5: tardis_field(LINES[5], "side", b'"buy'), 6: tardis_field(LINES[6], "price", b"9682x")},
        insert={100: [b"\x00\x01binary\xfe", b"a,b,c"]},
    )
    chunks = list(read_tardis_trades(path, block_bytes=block_bytes))
    good = sum(c.ticks.num_rows for c in chunks)
    bad = sorted(r for c in chunks if c.quarantine is not None for r in c.quarantine.column("row").to_pylist())
    assert (good, bad) == (498, [5, 6, 100, 101])
