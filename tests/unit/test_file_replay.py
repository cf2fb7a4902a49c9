"""FileReplay: params validation, k-way merge order, batching, watermarks, quarantine, metrics.

Runs the source in-process (no Ray): ``events()`` is pulled to the end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from graph.registry import load_kind
from actors.file_replay import FileReplay
from graph.operator import OperatorContext, Watermark
from graph.schemas import QUARANTINE, QUARANTINE_ROW, TICK

from tests.conftest import BOOKS, FIXTURES, LOBSTER, MESSAGES, QUOTES, TRADES


def params(files: list[dict], base_dir: Path = FIXTURES, **extra) -> FileReplay.Params:
    return FileReplay.Params.model_validate({"files": files, **extra}, context={"base_dir": base_dir})


def run(p: FileReplay.Params, **kwargs) -> tuple[pa.Table, pa.Table, list, FileReplay]:
    """Pull every event; returns (ticks, quarantine, event log, source). Checks the stream contract."""
    source = FileReplay(p, OperatorContext("replay", base_dir=FIXTURES), **kwargs)
    ticks, bad, log = [], [], []
    for event in source.events():
        log.append(event)
        if isinstance(event, Watermark):
            assert isinstance(log[-2], tuple) and log[-2][0] == "ticks", "a watermark follows a ticks batch"
        elif event[0] == "ticks":
            assert event[1].schema.equals(TICK) and 0 < event[1].num_rows <= p.batch_rows
            ticks.append(event[1])
        else:
            assert event[0] == "quarantine" and event[1].schema.equals(QUARANTINE_ROW)
            bad.append(event[1])
    source.close()
    ticks_table = pa.Table.from_batches(ticks, schema=TICK)
    return ticks_table, pa.Table.from_batches(bad, schema=QUARANTINE_ROW), log, source


T0 = 1_582_329_600_000_000_000  # 2020-02-22T00:00:00Z: hand-written times are offsets from it


def write_csv(path: Path, rows: list[tuple[str, int]]) -> dict:
    """A canonical CSV; ``ts`` values are ns after T0 (so the times are plausible)."""
    path.write_text("symbol,ts\n" + "".join(f"{s},{T0 + t}\n" for s, t in rows))
    return {"format": "canonical", "path": str(path), "provider": path.stem}


# ----------------------------------------------------------------------------- params


def test_kind_registry_loads_file_replay():
    assert load_kind("file_replay") is FileReplay
    assert FileReplay.outputs == {"ticks": TICK, "quarantine": QUARANTINE}


def test_relative_paths_resolve_against_base_dir():
    p = params([LOBSTER, TRADES])
    assert p.files[0].message_file == FIXTURES / MESSAGES
    assert p.files[1].path.is_absolute() and p.batch_rows == 65_536 and p.symbols is None


def test_missing_file_is_a_validation_error_naming_the_field(tmp_path):
    expected = r"files\.0\.tardis_trades\.path\n  Value error, file not found: .*nope\.csv"
    with pytest.raises(ValidationError, match=expected):
        params([{"format": "tardis_trades", "path": "nope.csv"}], base_dir=tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tz": "Mars/Olympus"}, r"tz\n  Value error, 'Mars/Olympus' is not an IANA time zone name"),
        ({"date": "2012-02-30"}, r"date\n  Value error, '2012-02-30' is not a date in YYYY-MM-DD form"),
        ({"date": "21/06/2012"}, r"date\n  Value error, '21/06/2012' is not a date"),
        ({"symbol": ""}, r"symbol\n  String should have at least 1 character"),
        ({"depth": 10}, r"depth\n  Extra inputs are not permitted"),
    ],
)
def test_lobster_params_are_checked(change, message):
    with pytest.raises(ValidationError, match=message):
        params([{**LOBSTER, **change}])


@pytest.mark.parametrize(
    ("files", "extra", "message"),
    [
        ([], {}, "at least 1 item"),
        ([TRADES], {"batch_rows": 0}, r"batch_rows\n  Input should be greater than 0"),
        ([{"format": "csv", "path": "x"}], {}, "does not match any of the expected tags"),
        (
            [{**QUOTES, "format": "tardis_trades"}],
            {},
            r"not a Tardis tardis_trades CSV, lacks column\(s\) id, side, price, amount",
        ),
    ],
)
def test_replay_params_are_checked(files, extra, message):
    with pytest.raises(ValidationError, match=message):
        params(files, **extra)


def test_lobster_row_count_mismatch_is_a_validation_error_naming_both_files(tmp_path):
    book = tmp_path / "book.csv"
    book.write_text("".join((FIXTURES / BOOKS).read_text().splitlines(keepends=True)[:100]))
    expected = r"message file .*message_1\.csv has 57515 rows, orderbook file .*book\.csv has 100"
    with pytest.raises(ValidationError, match=expected):
        params([{**LOBSTER, "orderbook_file": str(book)}])


def test_canonical_without_provider_is_a_validation_error(tmp_path):
    spec = write_csv(tmp_path / "a.csv", [("X", 1)])
    with pytest.raises(ValidationError, match=r"lacks column\(s\) provider \(or set the 'provider' param\)"):
        params([{**spec, "provider": None}])


def test_vanished_file_raises_file_not_found_at_run_time(tmp_path):
    path = tmp_path / "quotes.csv"
    shutil.copy(FIXTURES / QUOTES["path"], path)
    p = params([TRADES, {**QUOTES, "path": str(path)}])
    path.unlink()
    with pytest.raises(FileNotFoundError, match=str(path)):
        run(p)


# ----------------------------------------------------------------------------- merge


@pytest.fixture(scope="module")
def merged() -> tuple[pa.Table, pa.Table, list, FileReplay]:
    return run(params([LOBSTER, TRADES, QUOTES]))


def file_of(ticks: pa.Table) -> np.ndarray:
    """0 = LOBSTER, 1 = Tardis trades, 2 = Tardis quotes (from provider and trade/quote kind)."""
    lobster = np.array(ticks.column("provider").to_pylist()) == "lobster"
    quote = ticks.column("price").is_null().to_numpy(zero_copy_only=False)
    return np.where(lobster, 0, np.where(quote, 2, 1))


def test_merge_is_event_time_ordered_with_file_order_ties(merged):
    ticks, bad, _, source = merged
    ts, seq, files = ticks.column("ts").to_numpy(), ticks.column("seq").to_numpy(), file_of(ticks)
    assert ticks.num_rows == 57_515 + 9_999 + 9_999 and bad.num_rows == 0
    assert (np.diff(ts) >= 0).all()
    order = np.lexsort((seq, files, ts))  # every fixture is in time order: key = ts
    np.testing.assert_array_equal(order, np.arange(len(ts)))
    ties = (np.diff(ts) == 0) & (np.diff(files) != 0)
    assert ties.sum() > 0, "the fixtures have cross-file ties (Tardis trades vs quotes)"
    assert source.metrics()["ticks"] == ticks.num_rows


def test_merge_output_is_identical_across_runs_and_block_sizes(merged):
    again, _, _, _ = run(params([LOBSTER, TRADES, QUOTES]))
    small_blocks, _, _, _ = run(params([LOBSTER, TRADES, QUOTES]), block_bytes=1 << 15)
    assert again.equals(merged[0]) and small_blocks.equals(merged[0])


def test_equal_timestamps_keep_file_order_then_row_order(tmp_path):
    #  ts:      10    20         30
    #  a.csv:   a0    a1 a2
    #  b.csv:         b0         b1
    #  c.csv:   c0    c1 c2
    a = write_csv(tmp_path / "a.csv", [("A", 10), ("A", 20), ("A", 20)])
    b = write_csv(tmp_path / "b.csv", [("B", 20), ("B", 30)])
    c = write_csv(tmp_path / "c.csv", [("C", 10), ("C", 20), ("C", 20)])
    ticks, _, _, _ = run(params([a, b, c], batch_rows=2))
    got = [f"{p}{s}" for p, s in zip(ticks.column("provider").to_pylist(), ticks.column("seq").to_pylist())]
    assert got == ["a0", "c0", "a1", "a2", "b0", "c1", "c2", "b1"]


def test_out_of_order_rows_replay_in_file_order(tmp_path):
    #  a.csv rows: 10 5 20      merge keys (running max): 10 10 20
    #  b.csv rows: 6 7 15
    a = write_csv(tmp_path / "a.csv", [("A", 10), ("A", 5), ("A", 20)])
    b = write_csv(tmp_path / "b.csv", [("B", 6), ("B", 7), ("B", 15)])
    ticks, _, log, _ = run(params([a, b], batch_rows=1))
    assert [t - T0 for t in ticks.column("ts").to_pylist()] == [6, 7, 10, 5, 15, 20]
    assert [e.ts - T0 for e in log if isinstance(e, Watermark)] == [6, 7, 10, 10, 15, 20]


def test_ties_spanning_read_chunks_still_go_to_the_earlier_file(tmp_path):
    #  a.csv: 40 rows at ts 20, read in several 64-byte chunks
    #  b.csv: one row at ts 20 -> must come after every a row
    a = write_csv(tmp_path / "a.csv", [("A", 20)] * 40)
    b = write_csv(tmp_path / "b.csv", [("B", 20)])
    ticks, _, _, _ = run(params([a, b]), block_bytes=64)
    assert ticks.column("provider").to_pylist() == ["a"] * 40 + ["b"]


@settings(max_examples=40, deadline=None)
@given(
    files=st.lists(st.lists(st.integers(0, 8), min_size=0, max_size=40), min_size=1, max_size=4),
    batch_rows=st.integers(1, 50),
)
def test_merge_matches_a_reference_sort(tmp_path_factory, files, batch_rows):
    directory = tmp_path_factory.mktemp("merge")
    specs, expected = [], []
    for index, stamps in enumerate(files):
        specs.append(write_csv(directory / f"f{index}.csv", [("S", t) for t in stamps]))
        key = -1
        for row, ts in enumerate(stamps):
            key = max(key, ts)
            expected.append((key, index, row, T0 + ts))
    ticks, _, _, _ = run(params(specs, batch_rows=batch_rows), block_bytes=64)
    got = list(zip(ticks.column("provider").to_pylist(), ticks.column("seq").to_pylist()))
    assert got == [(f"f{i}", row) for _, i, row, _ in sorted(expected)]


# ----------------------------------------------------------------------------- batching


def test_batch_size_does_not_change_the_output(merged):
    small, _, log, _ = run(params([LOBSTER, TRADES, QUOTES], batch_rows=1_000))
    assert small.equals(merged[0])
    assert sum(1 for e in log if isinstance(e, tuple) and e[0] == "ticks") == -(-small.num_rows // 1_000)
    high, marks = None, []
    for event in log:
        if isinstance(event, Watermark):
            assert event.ts >= high
            marks.append(event.ts)
        else:
            top = max(event[1].column("ts").to_pylist())
            high = top if high is None else max(high, top)
    assert marks == sorted(marks) and marks[-1] == high


# ----------------------------------------------------------------------------- filter, quarantine, metrics


def test_symbols_filter_skips_without_quarantine(merged):
    ticks, bad, _, source = run(params([LOBSTER, TRADES], symbols=["BTCUSDT"]))
    assert set(ticks.column("symbol").to_pylist()) == {"BTCUSDT"} and ticks.num_rows == 9_999
    metrics = source.metrics()
    assert bad.num_rows == 0 and metrics["quarantined"] == 0
    assert (metrics["filtered"], metrics["ticks"], metrics["rows_read"]) == (57_515, 9_999, 57_515 + 9_999)


def test_malformed_rows_are_quarantined_and_counted(tmp_path):
    message = tmp_path / "message.csv"
    lines = (FIXTURES / MESSAGES).read_text().splitlines()
    lines[100] = lines[100].replace(",1,", ",1,oops,", 1)  # wrong field count
    lines[200] = "34250.5,5,0,100,22x38200,-1"  # non-numeric price
    message.write_text("\n".join(lines) + "\n")
    ticks, bad, log, source = run(params([{**LOBSTER, "message_file": str(message)}, TRADES]))
    assert ticks.num_rows == 57_515 - 2 + 9_999
    assert bad.column("row").to_pylist() == [100, 200]
    assert bad.column("detail").to_pylist()[1] == "column 'price': '22x38200' is not a number"
    assert log[0][0] == "quarantine", "quarantine is emitted as found, before the ticks"
    stats = source.metrics()["files"][str(message)]
    assert stats == {
        "format": "lobster", "slow_path": True,
        "rows_read": 57_515, "ticks": 57_513, "quarantined": 2, "filtered": 0,
    }  # fmt: skip
    totals = source.metrics()
    assert (totals["rows_read"], totals["ticks"], totals["quarantined"]) == (57_515 + 9_999, ticks.num_rows, 2)


def test_close_mid_stream_releases_readers():
    source = FileReplay(params([LOBSTER, TRADES], batch_rows=10), OperatorContext("replay"))
    events = source.events()
    assert next(events)[0] == "ticks"
    source.close()
    assert source.metrics()["ticks"] == 10


def test_watermarks_lag_by_the_graphs_allowed_lateness():
    # each batch is followed by Watermark(max ts so far - allowed lateness)
    lateness = 1_500_000_000
    source = FileReplay(params([TRADES], batch_rows=997), OperatorContext("replay", allowed_lateness_ns=lateness))
    tops, marks = [], []
    for event in source.events():
        if isinstance(event, Watermark):
            marks.append(event.ts)
        elif event[0] == "ticks":
            tops.append(int(event[1].column("ts").to_numpy().max()))
    assert len(marks) == len(tops) == 11
    assert marks == [int(t) - lateness for t in np.maximum.accumulate(tops)]
