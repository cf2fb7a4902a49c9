"""Unit tests of actors/parquet_sink.py, with bars built from real LOBSTER trades."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from actors.parquet_sink import BAR_FILE_SCHEMA, ParquetSink, ParquetSinkParams, bars_dataset, latest_bars
from graph.operator import OperatorContext
from tests.reference import lobster_bar_rows
from graph.schemas import BAR, QUARANTINE

BAR_KEY = ["symbol", "timeframe", "ts"]


@cache
def lobster_bars() -> pd.DataFrame:
    """Confirmed AMZN 1m and 5m bars computed with pandas (tests/reference.py)."""
    return lobster_bar_rows(("1m", "5m"))


def two_symbols() -> pd.DataFrame:
    """The AMZN bars plus the same bars relabelled as an FX pair whose name needs escaping."""
    amzn = lobster_bars()
    return pd.concat([amzn, amzn.assign(symbol="EUR/USD")], ignore_index=True)


def bar_stream(bars: pd.DataFrame, rows_per_batch: int = 40) -> list[pa.RecordBatch]:
    """Bars as a bar engine emits them, time-ordered across symbols and timeframes, each
    bar first 'forming' (stale values) then 'confirmed'."""
    ordered = bars.sort_values(["ts", "timeframe", "symbol"], kind="stable", ignore_index=True)
    forming = ordered.assign(status="forming", close=ordered["open"], trade_count=1)
    interleaved = pd.concat([forming, ordered]).sort_index(kind="stable")
    return pa.Table.from_pandas(interleaved, schema=BAR, preserve_index=False).to_batches(
        max_chunksize=rows_per_batch
    )


def write(path: Path, batches: list[tuple[str, pa.RecordBatch]], **params) -> ParquetSink:
    sink = ParquetSink(ParquetSinkParams(path=path, **params), OperatorContext(node_id="parquet"))
    for stream, batch in batches:
        assert sink.on_batch(stream, batch) == []
    assert sink.on_eof() == []
    sink.close()
    return sink


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expected_bars(bars: pd.DataFrame) -> pd.DataFrame:
    return bars.drop(columns="status").sort_values(BAR_KEY, ignore_index=True)


def test_round_trip_equals_the_confirmed_bars(tmp_path):
    bars = two_symbols()
    sink = write(tmp_path, [("bars", b) for b in bar_stream(bars)])
    assert sink.metrics() == {
        "rows_written": {"bars": 930, "quarantine": 0}, "files_written": 4, "forming_ignored": 930,
    }  # fmt: skip

    table = bars_dataset(tmp_path).to_table()
    assert set(table["revision"].to_pylist()) == {0}  # confirmed, never corrected
    frame = latest_bars(table).to_pandas()
    frame["ts"] = frame["ts"].astype("int64")
    frame = frame.sort_values(BAR_KEY, ignore_index=True)
    pd.testing.assert_frame_equal(frame, expected_bars(bars), check_dtype=False, check_exact=True)

    # a plain hive-partitioned read recovers the partition columns too
    plain = pd.read_parquet(tmp_path / "bars")
    assert set(plain["symbol"].astype(str)) == {"AMZN", "EUR/USD"}
    assert set(plain["timeframe"].astype(str)) == {"1m", "5m"}
    assert len(plain) == 930
    generic = ds.dataset(tmp_path / "bars", format="parquet", partitioning="hive").to_table()
    assert sorted(set(generic["symbol"].to_pylist())) == ["AMZN", "EUR/USD"]
    assert generic.num_rows == 930


def test_layout_names_and_file_schema(tmp_path):
    bars = lobster_bars()
    write(tmp_path, [("bars", b) for b in bar_stream(bars)])
    first_1m = bars[bars["timeframe"] == "1m"]["ts"].min()
    first_5m = bars[bars["timeframe"] == "5m"]["ts"].min()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == [
        f"bars/symbol=AMZN/timeframe=1m/part-{first_1m}.parquet",
        f"bars/symbol=AMZN/timeframe=5m/part-{first_5m}.parquet",
    ]
    schema = pq.read_schema(tmp_path / f"bars/symbol=AMZN/timeframe=1m/part-{first_1m}.parquet")
    assert schema.remove_metadata().equals(BAR_FILE_SCHEMA)
    assert "symbol" not in schema.names and "timeframe" not in schema.names and "status" not in schema.names
    assert schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert pd.Timestamp(first_1m, tz="UTC") == pd.Timestamp("2012-06-21 13:30", tz="UTC")  # 09:30 EDT


def test_rows_per_file_splits_a_partition_independently_of_batching(tmp_path):
    bars = lobster_bars()
    one_minute = bars[bars["timeframe"] == "1m"].reset_index(drop=True)
    write(tmp_path / "a", [("bars", b) for b in bar_stream(bars, 7)], rows_per_file=100)
    write(tmp_path / "b", [("bars", b) for b in bar_stream(bars, 333)], rows_per_file=100)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    folder = tmp_path / "a" / "bars" / "symbol=AMZN" / "timeframe=1m"
    files = sorted(folder.glob("*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    assert [p.name for p in files] == [f"part-{one_minute['ts'][i]}.parquet" for i in (0, 100, 200, 300)]
    assert [pq.read_metadata(p).num_rows for p in files] == [100, 100, 100, 87]


def test_a_rerun_rewrites_identical_files(tmp_path):
    batches = [("bars", b) for b in bar_stream(two_symbols())]
    write(tmp_path, batches, rows_per_file=50)
    before = digests(tmp_path)
    write(tmp_path, batches, rows_per_file=50)
    assert digests(tmp_path) == before
    assert len(before) == len(list(tmp_path.rglob("*.parquet")))  # no temporary files left


def test_quarantine_rows_are_written(tmp_path):
    rows = pa.RecordBatch.from_pylist(
        [
            dict(run_id="r1", source="normalize", position=i, row=i, symbol="AMZN" if i % 2 else None,
                 ts=1_340_285_400_000_000_000 + i, reason="bad_price", detail=f"price -{i}.0 must be a finite number > 0",
                 raw=None)
            for i in range(5)
        ],
        schema=QUARANTINE,
    )  # fmt: skip
    sink = write(tmp_path, [("quarantine", rows.slice(0, 2)), ("quarantine", rows.slice(2))], rows_per_file=3)
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == ["part-0.parquet", "part-1.parquet"]
    table = ds.dataset(tmp_path / "quarantine", format="parquet").to_table()
    assert table["ts"].type == pa.timestamp("ns", tz="UTC")
    back = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
    assert back.cast(QUARANTINE).sort_by("row").equals(pa.Table.from_batches([rows]))
    assert sink.metrics()["rows_written"]["quarantine"] == 5


def test_an_unknown_stream_is_named_in_the_error(tmp_path):
    sink = ParquetSink(ParquetSinkParams(path=tmp_path), OperatorContext(node_id="parquet"))
    with pytest.raises(
        ValueError,
        match=r"parquet_sink 'parquet': unknown input stream 'ticks'; expected 'bars' or 'quarantine'",
    ):
        sink.on_batch("ticks", pa.RecordBatch.from_pylist([], schema=BAR))


def test_forming_only_input_writes_nothing(tmp_path):
    forming = pa.RecordBatch.from_pandas(
        lobster_bars().iloc[:5].assign(status="forming"), schema=BAR, preserve_index=False
    )
    sink = write(tmp_path, [("bars", forming)])
    assert sink.metrics()["files_written"] == 0 and not list(tmp_path.rglob("*.parquet"))


def test_a_relative_path_resolves_against_the_graph_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = ParquetSinkParams.model_validate({"path": "out"}, context={"base_dir": tmp_path / "config"})
    assert params.path == tmp_path / "config" / "out"
    assert ParquetSinkParams().path == tmp_path / "out" / "parquet"  # the default, without context
    with pytest.raises(ValueError, match="must be a positive integer, was 0"):
        ParquetSinkParams(rows_per_file=0)
