"""graph/schemas.py is the single definition: the SQL tables, the Parquet files and the
operators' declared streams must all derive from it."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph.registry import load_kind
from actors.normalizer import Normalizer
from actors.parquet_sink import (
    BAR_FILE_SCHEMA,
    PARTITION_COLUMNS,
    QUARANTINE_FILE_SCHEMA,
    ParquetSink,
    ParquetSinkParams,
    bars_dataset,
)
from actors.store import STREAM_TABLES, SqlStore, SqlStoreParams
from db.tables import INSERT_ONLY, arrow_schema, bars_ohlcv, quarantine, signals, tick_data
from graph.operator import OperatorContext
from graph.schemas import BAR, QUARANTINE, SIGNAL, TICK, empty_batch

SQLITE_TYPE = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}


@pytest.mark.parametrize("schema", [TICK, BAR, QUARANTINE, SIGNAL], ids=["TICK", "BAR", "QUARANTINE", "SIGNAL"])
def test_every_schema_has_unique_names_and_ts_in_int64_ns(schema):
    assert len(set(schema.names)) == len(schema.names)
    assert schema.field("ts").type == pa.int64()
    assert empty_batch(schema).num_rows == 0 and empty_batch(schema).schema.equals(schema)


def test_the_design_fields_are_all_there():
    # docs: /work/shared/DESIGN.md, "Schemas"
    assert {
        "symbol",
        "ts",
        "price",
        "size",
        "bid",
        "ask",
        "bid_size",
        "ask_size",
        "provider",
        "seq",
        "origin",
    } <= set(TICK.names)
    assert BAR.names == [
        "symbol",
        "timeframe",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "status",
    ]


def created_columns(tmp_path) -> dict[str, list[tuple]]:
    """PRAGMA table_info of the tables as SqlStore really creates them in SQLite."""
    db = tmp_path / "schema.db"
    SqlStore(SqlStoreParams(url=f"sqlite:///{db}"), OperatorContext(node_id="store")).close()
    with sqlite3.connect(db) as connection:
        return {
            name: connection.execute(f"PRAGMA table_info({name})").fetchall()
            for name in ("bars_ohlcv", "quarantine", "tick_data", "signals")
        }


@pytest.mark.parametrize(
    ("table", "schema", "dropped", "key"),
    [
        ("bars_ohlcv", BAR, {"status"}, ["symbol", "timeframe", "ts"]),
        ("quarantine", QUARANTINE, set(), ["run_id", "source", "position"]),
        ("tick_data", TICK, set(), ["symbol", "ts", "provider", "seq"]),  # key columns in schema order
        ("signals", SIGNAL, set(), ["provider", "symbol", "ts", "name"]),
    ],
)
def test_sql_tables_derive_from_the_arrow_schemas(tmp_path, table, schema, dropped, key):
    columns = created_columns(tmp_path)[table]  # (cid, name, type, notnull, default, pk)
    # the one column not from a schema: signals.created_at, bookkeeping set on insert only
    extra = {"signals": [(len(schema), "created_at", "BIGINT", 1, None, 0)]}.get(table, [])
    assert columns[len(columns) - len(extra):] == extra
    columns = columns[: len(columns) - len(extra)]
    fields = [f for f in schema if f.name not in dropped]
    assert [c[1] for c in columns] == [f.name for f in fields]
    assert [c[2] for c in columns] == [SQLITE_TYPE[f.type] for f in fields]
    assert [name for _, name, _, _, _, pk in sorted(columns, key=lambda c: c[5]) if pk] == key
    for (_, name, _, notnull, _, pk), field in zip(columns, fields):
        if pk:
            assert notnull
        elif pa.types.is_floating(field.type):
            assert not notnull  # NaN is stored as NULL by SQLite (actors/store.py)
        else:
            assert bool(notnull) == (not field.nullable), name
    assert not {"created_at", "updated_at", "inserted_at"} & {c[1] for c in columns}  # no wall clock


def test_arrow_schema_of_each_table_round_trips():
    assert arrow_schema(bars_ohlcv).equals(pa.schema([f for f in BAR if f.name != "status"]))
    assert arrow_schema(quarantine).equals(QUARANTINE)
    assert arrow_schema(tick_data).equals(TICK)
    assert arrow_schema(signals).equals(SIGNAL.append(pa.field("created_at", pa.int64(), nullable=False)))
    assert INSERT_ONLY == {"signals": ("created_at",)}
    assert STREAM_TABLES == {"bars": bars_ohlcv, "quarantine": quarantine, "signals": signals, "ticks": tick_data}


def test_parquet_files_derive_from_the_arrow_schemas(tmp_path):
    bar = dict(symbol="AMZN", timeframe="1m", ts=1_340_285_400_000_000_000, open=223.82, high=224.0, low=223.5,
               close=223.9, volume=1200.0, vwap=223.77, trade_count=14, status="confirmed")  # fmt: skip
    row = dict(
        run_id="r1",
        source="normalize",
        position=0,
        row=3,
        symbol="AMZN",
        ts=1,
        reason="bad_size",
        detail="size -1.0 must be a finite number >= 0",
        raw="{}",
    )
    sink = ParquetSink(ParquetSinkParams(path=tmp_path), OperatorContext(node_id="parquet"))
    sink.on_batch("bars", pa.RecordBatch.from_pylist([bar], schema=BAR))
    sink.on_batch("quarantine", pa.RecordBatch.from_pylist([row], schema=QUARANTINE))
    sink.on_eof()

    def as_stored(schema, dropped=()):
        return pa.schema(
            [
                f.with_type(pa.timestamp("ns", tz="UTC")) if f.name == "ts" else f
                for f in schema
                if f.name not in dropped
            ]
        )

    (bar_file,) = tmp_path.glob("bars/**/*.parquet")
    expected = as_stored(BAR, ("symbol", "timeframe", "status")).append(pa.field("revision", pa.int64(), nullable=False))
    assert pq.read_schema(bar_file).remove_metadata().equals(expected)
    assert BAR_FILE_SCHEMA.equals(expected)
    (quarantine_file,) = tmp_path.glob("quarantine/*.parquet")
    assert pq.read_schema(quarantine_file).remove_metadata().equals(as_stored(QUARANTINE))
    assert QUARANTINE_FILE_SCHEMA.equals(as_stored(QUARANTINE))
    # read back as a dataset: the BAR columns minus status, partition columns recovered, revision
    dataset_schema = bars_dataset(tmp_path).schema
    assert dataset_schema.names == [f.name for f in BAR if f.name != "status"] + ["revision"]
    assert PARTITION_COLUMNS == ("symbol", "timeframe")
    for field in BAR:
        if field.name != "status":
            expected = pa.timestamp("ns", tz="UTC") if field.name == "ts" else field.type
            assert dataset_schema.field(field.name).type == expected


def test_registered_kinds_and_their_streams():
    assert load_kind("normalizer") is Normalizer
    assert load_kind("sql_store") is SqlStore
    assert load_kind("parquet_sink") is ParquetSink
    assert Normalizer.outputs == {"ticks": TICK, "quarantine": QUARANTINE}
    assert list(Normalizer.outputs) == ["ticks", "quarantine"]  # ticks is the default stream
    assert SqlStore.outputs == {} and ParquetSink.outputs == {}
    for kind in (Normalizer, SqlStore, ParquetSink):
        assert kind.Params.model_config["extra"] == "forbid"
        with pytest.raises(ValueError, match="Extra inputs are not permitted"):
            kind.Params(no_such_param=1)
