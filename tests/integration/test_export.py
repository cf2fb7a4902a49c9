"""``python run.py export``: stored ticks, bars and signals to Parquet and CSV, read back by
pyarrow, pandas, polars and DuckDB; bad arguments fail with one clear line.

The store and the tick catalog are filled by the real main job with signals
(``config/replay.yaml``): ticks and per-tick signals in the catalog, bars and bar-level
signals in SQL. Exported ticks are compared with the ticks the job's own source and
normalizer emit (run again here, without the catalog); exported signals with the
catalog's files read by pandas and the SQL table read by SQLAlchemy.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.normalizer import Normalizer
from actors.replayer import Replayer
from commands.export import main, parse_time
from db.export import export_schema
from db.read import read_range_async, read_table
from graph.build import build_graph
from graph.operator import OperatorContext, Watermark
from graph.schemas import TICK
from graph.spec import load_graph

ROOT = Path(__file__).resolve().parents[2]
DAY = ("2012-06-21", "2012-06-22")
NS = 10**9


_CATALOGS: dict[str, Path] = {}  # store URL -> the catalog the same job wrote


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("export_store")
    url = f"sqlite:///{tmp / 'store.db'}"
    overrides = [f"store.url={url}", f"source.job_database_url={url}", f"parquet.path={tmp / 'parquet'}",
                 f"catalog.path={tmp / 'catalog'}"]  # fmt: skip
    loaded = load_graph("replay.yaml", overrides, env={})
    build_graph(loaded, backend="local").run()
    _CATALOGS[url] = tmp / "catalog"
    return url


def export(url: str, *args: str) -> int:
    return main([*args, "--database-url", url, "--catalog-dir", str(_CATALOGS[url])])


def accepted_ticks(symbol: str, start: int, end: int) -> pa.Table:
    """The ticks the main job's source and normalizer emit for ``symbol`` in [start, end),
    run here in-process (not through the catalog), in (ts, seq) order."""
    loaded = load_graph("replay.yaml", env={})
    source_params = Replayer.Params.model_validate(loaded.spec.node("source").params, context={"base_dir": loaded.base_dir})
    source = Replayer(source_params.model_copy(update={"job_database_url": None}), OperatorContext(node_id="source"))
    normalizer = Normalizer(Normalizer.Params.model_validate(loaded.spec.node("normalizer").params), OperatorContext(node_id="normalizer"))
    batches = []
    for event in source.events():
        if isinstance(event, Watermark):
            normalizer.on_watermark(event.ts)
        elif event[0] == "ticks":
            batches += [b for stream, b in normalizer.on_batch("ticks", event[1]) if stream == "ticks"]
    frame = pa.Table.from_batches(batches).to_pandas()
    frame = frame[(frame["symbol"] == symbol) & (frame["ts"] >= start) & (frame["ts"] < end)]
    return pa.Table.from_pandas(frame.sort_values(["ts", "seq"], kind="stable"), schema=TICK, preserve_index=False)


def stored(url: str, table: str, symbols: list[str], start: int, end: int, **where) -> pa.Table:
    import asyncio

    return asyncio.run(read_range_async(url, table, symbols=symbols, start_ns=start, end_ns=end, where=where))


def as_stored(table: pa.Table) -> pa.Table:
    """An export read back, with its timestamps as the stored int64 ns."""
    schema = pa.schema([f.with_type(pa.int64()) if pa.types.is_timestamp(f.type) else f for f in table.schema])
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(table.columns, schema)], schema=schema)


def job_rows(url: str) -> pd.DataFrame:
    """job_runs rows, oldest first."""
    return read_table(url, "job_runs").to_pandas().sort_values("started_at", ignore_index=True)


def test_bars_parquet_round_trips_exactly_and_is_readable_by_pandas_polars_and_duckdb(url, tmp_path, capsys):
    out = tmp_path / "bars" / "amzn_btc_1m.parquet"
    # AMZN trades on 2012-06-21, BTCUSDT on 2020-02-22: one range covering both days
    assert export(url, "bars", "--symbols", "AMZN,BTCUSDT", "--start", DAY[0], "--end", "2020-02-23", "--timeframe", "1m", "--output", str(out)) == 0
    message = capsys.readouterr().out
    back = pq.read_table(out)
    expected = stored(url, "bars_ohlcv", ["AMZN", "BTCUSDT"], 1_340_236_800 * NS, 1_582_416_000 * NS, timeframe="1m")
    assert expected.num_rows == 387 + 126  # 6h30 of AMZN minutes (3 without trades), 2h06 of BTCUSDT
    assert f"exported {expected.num_rows:,} bars 1m rows" in message
    assert back.schema.equals(export_schema("bars"))  # typed columns, nullability kept
    assert back.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert as_stored(back).equals(expected)  # every row and value exactly
    frame = pd.read_parquet(out)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]" and frame["trade_count"].dtype == np.int64
    assert frame["ts"].iloc[0] == pd.Timestamp("2012-06-21 13:30", tz="UTC")
    polars = pl.read_parquet(out)
    assert polars.schema["ts"] == pl.Datetime("ns", "UTC") and polars.schema["volume"] == pl.Float64
    assert polars["ts"].cast(pl.Int64).to_list() == expected.column("ts").to_pylist()
    rows = duckdb.sql(f"SELECT epoch_ns(ts), typeof(ts), close FROM '{out}' ORDER BY symbol, ts").fetchall()
    assert [r[0] for r in rows] == expected.column("ts").to_pylist()  # nanoseconds kept
    assert rows[0][1].startswith("TIMESTAMPTZ") or rows[0][1] == "TIMESTAMP WITH TIME ZONE"
    assert [r[2] for r in rows] == expected.column("close").to_pylist()


def test_ticks_parquet_keeps_nulls_and_nanosecond_timestamps(url, tmp_path):
    out = tmp_path / "ticks.parquet"
    start, end = "2012-06-21T13:30:00.017459617Z", "2012-06-21T13:30:01Z"
    assert export(url, "ticks", "--symbols", "AMZN", "--start", start, "--end", end, "--output", str(out)) == 0
    back = pq.read_table(out)
    expected = accepted_ticks("AMZN", parse_time(start, "s"), parse_time(end, "e"))
    assert back.num_rows == expected.num_rows > 5 and as_stored(back).equals(expected)  # values, dtypes, order
    assert back.schema.equals(export_schema("ticks"))
    assert back.column("ts")[0].value == 1_340_285_400_017_459_617  # the first LOBSTER event, to the ns
    assert back.column("price").null_count > 0  # quote rows
    assert duckdb.sql(f"SELECT count(*) FILTER (WHERE price IS NULL) FROM '{out}'").fetchall()[0][0] == back.column("price").null_count
    assert pl.read_parquet(out)["price"].null_count() == back.column("price").null_count


def test_signals_csv_has_a_header_and_the_stored_values(url, tmp_path):
    out = tmp_path / "spread.csv"
    assert export(url, "signals", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--names", "spread_bps,rsi_14_1m", "--output", str(out)) == 0
    text = out.read_text()
    assert text.splitlines()[0] == '"provider","symbol","ts","name","value","score","metadata","created_at"'
    frame = pd.read_csv(io.StringIO(text))
    spread = pd.read_parquet(_CATALOGS[url] / "signals", filters=[("symbol", "==", "AMZN"), ("name", "==", "spread_bps")])
    spread["ts"] = spread["ts"].astype("int64")
    rsi = stored(url, "signals", ["AMZN"], 1_340_236_800 * NS, 1_340_323_200 * NS, name="rsi_14_1m").to_pandas()
    expected = pd.concat([spread, rsi]).sort_values(["ts", "name"], kind="stable", ignore_index=True)
    assert frame["created_at"].isna().sum() == len(spread) and frame["created_at"].notna().sum() == len(rsi) > 300
    assert len(frame) == len(expected) > 53_000
    assert (pd.to_datetime(frame["ts"], utc=True).astype("int64") == expected["ts"]).all()
    np.testing.assert_array_equal(frame["value"].to_numpy(), expected["value"].to_numpy())  # shortest round-trip floats
    assert frame["score"].isna().sum() == expected["score"].isna().sum()


def test_an_empty_result_writes_the_schema_and_says_so(url, tmp_path, capsys):
    out = tmp_path / "none.parquet"
    before = len(job_rows(url))
    assert export(url, "signals", "--symbols", "BTCUSDT", "--start", "2030-01-01", "--end", "2030-01-02", "--output", str(out)) == 0
    assert "no signals rows matched (BTCUSDT; 2030-01-01T00:00:00Z to 2030-01-02T00:00:00Z): wrote an empty parquet file with the schema" in capsys.readouterr().out
    back = pq.read_table(out)
    assert back.num_rows == 0 and back.schema.equals(export_schema("signals"))
    assert pl.read_parquet(out).shape == (0, 8) and duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall() == [(0,)]
    csv = tmp_path / "none.csv"
    assert export(url, "ticks", "--symbols", "AMZN", "--start", "2030-01-01", "--end", "2030-01-02", "--output", str(csv)) == 0
    assert csv.read_text().count("\n") == 1  # the header only
    jobs = job_rows(url).iloc[before:]
    assert jobs["rows_written"].tolist() == [0, 0] and (jobs["status"] == "completed").all()


def test_each_export_is_a_job_run(url, tmp_path):
    out = tmp_path / "job.parquet"
    before = len(job_rows(url))
    assert export(url, "bars", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--timeframe", "1d", "--output", str(out)) == 0
    jobs = job_rows(url)
    assert len(jobs) == before + 1
    job = jobs.iloc[-1]
    assert (job["job_name"], job["status"], job["rows_written"]) == ("export", "completed", 1)
    assert job["symbols"] == '["AMZN"]' and job["min_ts"] == job["max_ts"] == 1_340_285_400 * NS
    assert f'"output":"{out}"' in job["metadata"] and '"timeframe":"1d"' in job["metadata"]
    assert job["completed_at"] >= job["started_at"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bars", "--symbols", "AMZN", "--start", "2012-06-22", "--end", "2012-06-21"],
         r"--end 2012-06-21T00:00:00Z must be after --start 2012-06-22T00:00:00Z"),
        (["bars", "--symbols", "AMZN,NOPE", "--start", DAY[0], "--end", DAY[1]],
         r"--symbols: unknown symbol\(s\) 'NOPE': not in bars_ohlcv on sqlite:///.*store.db \(stored: AMZN, BTCUSDT\)"),
        (["bars", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--timeframe", "7q"],
         r"--timeframe: '7q' is not a timeframe \(1s, 1m, 5m, 15m, 1h, 1d\)"),
        (["ticks", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--timeframe", "1m"],
         r"--timeframe: applies to bars only, not ticks"),
        (["ticks", "--symbols", "AMZN", "--start", "21/06/2012", "--end", DAY[1]],
         r"--start '21/06/2012': not an ISO 8601 date/time"),
        (["signals", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--format", "xlsx"],
         r"--format: 'xlsx' is not one of parquet, csv"),
    ],  # fmt: skip
)
def test_bad_arguments_fail_with_one_clear_line_and_write_nothing(url, tmp_path, capsys, args, message):
    out = tmp_path / "bad.parquet"
    before = len(job_rows(url))
    assert export(url, *args, "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists() and len(job_rows(url)) == before


def test_an_unwritable_output_or_a_missing_database_is_named(url, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert export(url, "bars", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--output", str(blocker / "x.parquet")) == 2
    assert f"--output: cannot write {blocker / 'x.parquet'}: {blocker} is a file, not a directory" in capsys.readouterr().err
    assert export(url, "bars", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--output", str(tmp_path)) == 2
    assert "is a directory; give a file path" in capsys.readouterr().err
    missing = tmp_path / "nothing.db"
    assert main(["bars", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1], "--database-url", f"sqlite:///{missing}",
                 "--output", str(tmp_path / "x.parquet")]) == 2  # fmt: skip
    assert f"--database-url: no SQLite database at {missing}" in capsys.readouterr().err and not missing.exists()


def test_parse_time_keeps_nanoseconds_and_zones():
    assert parse_time("2012-06-21", "--start") == 1_340_236_800 * NS
    assert parse_time("2012-06-21T13:30:00", "--start") == 1_340_285_400 * NS  # no zone: UTC
    assert parse_time("2012-06-21T09:30:00-04:00", "--start") == 1_340_285_400 * NS
    assert parse_time("2012-06-21T13:30:00.017459617Z", "--start") == 1_340_285_400_017_459_617
    assert parse_time("2012-06-21T13:30:00.5+00:00", "--start") == 1_340_285_400_500_000_000
    with pytest.raises(ValueError, match=r"--end '2012-06-21T25:00': not an ISO 8601"):
        parse_time("2012-06-21T25:00", "--end")


def test_run_py_dispatches_the_subcommand_without_tracebacks(url, tmp_path):
    out = tmp_path / "cli.csv"
    ok = subprocess.run(
        [sys.executable, "run.py", "export", "bars", "--symbols", "AMZN", "--start", DAY[0], "--end", DAY[1],
         "--database-url", url, "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "exported 387 bars 1m rows" in ok.stdout and out.read_text().startswith('"symbol","timeframe","ts"')
    bad = subprocess.run(
        [sys.executable, "run.py", "export", "bars", "--symbols", "AMZN", "--start", DAY[1], "--end", DAY[0],
         "--database-url", url, "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: --end") and "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "run.py", "export", "candles"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "invalid choice: 'candles'" in usage.stderr and "Traceback" not in usage.stderr
