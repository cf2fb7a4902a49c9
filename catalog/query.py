"""SQL over the tick catalog and the SQL store, in DuckDB (``python run.py query "SQL"``).

Views (every ``ts``-like column a ``TIMESTAMP WITH TIME ZONE`` with nanoseconds, so
``ts > now() - INTERVAL 1 HOUR`` works and ``epoch_ns(ts)`` gives the stored int64):

=============== ==========================================================================
view            rows
=============== ==========================================================================
``ticks``       catalog ticks (``symbol``, ``date`` from the partitions) plus SQL
                ``tick_data`` rows the catalog does not hold
``signals``     catalog signals (per-tick) plus SQL ``signals`` rows (bar-level) whose key
                (provider, symbol, ts, name) the catalog does not hold; ``created_at`` is
                null for catalog rows; ``metadata`` is JSON text (``metadata->>'session'``)
``bars_ohlcv``  SQL: confirmed bars
``job_runs``    SQL: replays and exports (``symbols``, ``metadata`` JSON text)
``quarantine``  SQL: rejected input rows
``tick_data``   SQL: ticks stored in SQL (opt-in), as stored
=============== ==========================================================================

plus the table macro ``replay_signals(run_id)``: the signals of one replay job, i.e. of
its symbols within its event-time range ``[min_ts, max_ts]`` from ``job_runs`` (signal rows
are keyed by what they are, not by the run that wrote them, so that reruns are
byte-identical; a replay is identified by its extent, as ``GET /v1/signals?run_id=`` does).

The catalog is scanned by DuckDB's Parquet reader with hive partitioning (``symbol``,
``date`` pruned from the directory names, row groups by their ``ts`` statistics). SQL
tables are read through SQLAlchemy (any backend: SQLite, PostgreSQL) into Arrow and
registered only when the query names them: DuckDB's own SQLite and PostgreSQL scanners
are extensions downloaded at first use, which an offline machine cannot do.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from catalog.layout import TS_TYPE, file_schema
from catalog.reader import StoreReader

__all__ = ["VIEWS", "QueryError", "connect", "run_query"]

#: View name -> what it holds (see the module docstring).
VIEWS = ("ticks", "signals", "bars_ohlcv", "job_runs", "quarantine", "tick_data")
_TIME_COLUMNS = ("ts", "created_at", "min_ts", "max_ts", "started_at", "completed_at")
_SQL_TABLES = ("bars_ohlcv", "job_runs", "quarantine", "tick_data", "signals")


class QueryError(ValueError):
    """The query could not run (syntax, unknown column, ...): DuckDB's message, one line."""


def _names(sql: str) -> set[str]:
    """The view names a query mentions (a word match: enough to choose what to load)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql.lower()))
    if "replay_signals" in words:
        words |= {"signals", "job_runs"}
    if "ticks" in words:
        words.add("tick_data")
    return words


def _timestamps(table: pa.Table) -> pa.Table:
    """SQL rows with their int64 ns time columns as ``timestamp[ns, UTC]``."""
    for name in _TIME_COLUMNS:
        if name in table.column_names:
            index = table.schema.get_field_index(name)
            field = table.schema.field(name)
            table = table.set_column(index, field.with_type(TS_TYPE), table.column(name).cast(TS_TYPE))
    return table


def _catalog_scan(connection: duckdb.DuckDBPyConnection, root: Path | None, stream: str, name: str) -> None:
    """Register view ``name`` over the catalog's ``stream`` (an empty typed relation if it has no files)."""
    pattern = None if root is None else root / stream / "*" / "*" / "*.parquet"
    columns = ", ".join(f'"{f.name}"' for f in file_schema(stream))
    if pattern is not None and any((root / stream).glob("*/*/*.parquet")):
        source = (
            f"read_parquet('{_quote(str(pattern))}', hive_partitioning = true, "
            "hive_types = {'symbol': VARCHAR, 'date': DATE})"
        )
        connection.execute(f"CREATE VIEW {name} AS SELECT url_decode(symbol) AS symbol, {columns}, date FROM {source}")
        return
    empty = file_schema(stream).empty_table()
    connection.register(f"{name}_empty", empty)
    connection.execute(
        f"CREATE VIEW {name} AS SELECT CAST(NULL AS VARCHAR) AS symbol, {columns}, CAST(NULL AS DATE) AS date "
        f"FROM {name}_empty WHERE false"
    )


def _quote(text: str) -> str:
    return text.replace("'", "''")


def connect(reader: StoreReader, sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of the module docstring.

    Args:
        reader: where the catalog and the SQL store are.
        sql: the query to be run: only the SQL tables it names are loaded (None: all).

    Returns:
        The connection; run queries with ``connection.sql(...)`` or ``execute``.
    """
    connection = duckdb.connect()
    wanted = _names(sql) if sql is not None else set(VIEWS) | {"replay_signals"}
    present = reader.sql_tables()
    for name in _SQL_TABLES:
        from db.read import read_table
        from db.tables import arrow_schema, metadata

        table = metadata.tables[name]
        if name in wanted and name in present:
            rows = read_table(reader.sql_url, table)
        else:
            rows = arrow_schema(table).empty_table()
        connection.register(f"sql_{name}", _timestamps(rows))
    for name in ("bars_ohlcv", "job_runs", "quarantine", "tick_data"):
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM sql_{name}")
    root = reader.catalog_dir
    _catalog_scan(connection, root, "ticks", "catalog_ticks")
    _catalog_scan(connection, root, "signals", "catalog_signals")
    tick_columns = ", ".join(f'"{f.name}"' for f in file_schema("ticks"))
    connection.execute(
        f"""CREATE VIEW ticks AS
        SELECT symbol, {tick_columns}, date FROM catalog_ticks
        UNION ALL
        SELECT t.symbol, {", ".join(f't."{f.name}"' for f in file_schema("ticks"))}, CAST(t.ts AS DATE) AS date
        FROM sql_tick_data t
        WHERE NOT EXISTS (SELECT 1 FROM catalog_ticks c WHERE c.symbol = t.symbol AND c.ts = t.ts
                          AND c.provider = t.provider AND c.seq = t.seq
                          AND (c.price IS NULL) = (t.price IS NULL))"""
    )
    connection.execute(
        """CREATE VIEW signals AS
        SELECT provider, symbol, ts, name, value, score, metadata, CAST(NULL AS TIMESTAMPTZ) AS created_at
        FROM catalog_signals
        UNION ALL
        SELECT s.provider, s.symbol, s.ts, s.name, s.value, s.score, s.metadata, s.created_at FROM sql_signals s
        WHERE NOT EXISTS (SELECT 1 FROM catalog_signals c WHERE c.symbol = s.symbol AND c.ts = s.ts
                          AND c.name = s.name AND c.provider = s.provider)"""
    )
    connection.execute(
        """CREATE MACRO replay_signals(run) AS TABLE
        SELECT s.* FROM signals s, job_runs j
        WHERE j.id = run AND j.min_ts IS NOT NULL
          AND list_contains(CAST(json(j.symbols) AS VARCHAR[]), s.symbol)
          AND s.ts BETWEEN j.min_ts AND j.max_ts"""
    )
    return connection


def run_query(reader: StoreReader, sql: str) -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyRelation]:
    """The relation of ``sql`` over the views (lazy: nothing is computed until it is fetched).

    Returns:
        ``(connection, relation)``; keep the connection until the relation is consumed.

    Raises:
        QueryError: DuckDB's message (first line) for a query it cannot parse or bind.
    """
    connection = connect(reader, sql)
    try:
        return connection, connection.sql(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0]) from None
