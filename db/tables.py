"""The SQL tables, derived from the Arrow schemas in ``graph/schemas.py`` (written once).

:func:`table_from_schema` turns an Arrow schema into a SQLAlchemy Core table through
:data:`SQL_TYPES`, the only place column types are chosen. Float columns are nullable
in SQL even where the Arrow field is not: SQLite cannot store NaN and silently turns it
into NULL, so a NOT NULL float column would make a legitimate row (e.g. the VWAP of a
bar whose trades all have size 0) fail a whole flush; readers turn NULL back into NaN.

Tables: ``tick_data`` (TICK), ``bars_ohlcv`` (BAR minus status), ``signals`` (SIGNAL
plus ``created_at``), ``job_runs`` (JOB_RUN), ``quarantine`` (QUARANTINE); each has a
primary key that makes writes idempotent upserts.

``signals.created_at`` is the one column not in an Arrow schema: bookkeeping, not market
data (int64 ns UTC wall clock of the flush that first inserted the row). Upserts never
touch it (:data:`INSERT_ONLY`), so re-running a job leaves every signal row identical,
``created_at`` included, and a corrected value keeps the time the row first appeared.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from graph.schemas import BAR, JOB_RUN, QUARANTINE, SIGNAL, TICK

__all__ = [
    "SQL_TYPES",
    "metadata",
    "table_from_schema",
    "arrow_schema",
    "tick_data",
    "bars_ohlcv",
    "bars_partial",
    "signals",
    "job_runs",
    "quarantine",
    "create_tables",
    "ORIGINS",
    "INSERT_ONLY",
]

#: Arrow type -> SQLAlchemy type, the only place column types are chosen.
SQL_TYPES: dict[pa.DataType, type[sa.types.TypeEngine]] = {
    pa.string(): sa.String,
    pa.int64(): sa.BigInteger,
    pa.float64(): sa.Double,
    pa.bool_(): sa.Boolean,
}
_ARROW_TYPES = {sql_type: arrow_type for arrow_type, sql_type in SQL_TYPES.items()}

#: The tables tickgraph writes; ``metadata.create_all`` creates them.
metadata = sa.MetaData()


def table_from_schema(
    name: str,
    schema: pa.Schema,
    primary_key: Iterable[str],
    *,
    exclude: Iterable[str] = (),
    meta: sa.MetaData = metadata,
    **kwargs: Any,
) -> sa.Table:
    """A SQLAlchemy table with one column per field of an Arrow schema, in schema order.

    Args:
        name: table name.
        schema: the Arrow schema; every field type must be in :data:`SQL_TYPES`.
        primary_key: names of the primary-key columns (NOT NULL).
        exclude: fields to leave out.
        meta: the ``MetaData`` to attach the table to.
        **kwargs: passed to ``sa.Table`` (dialect options such as ``sqlite_with_rowid``).

    Returns:
        The table. Nullability follows the Arrow field, except float columns, which
        are always nullable (SQLite stores NaN as NULL; see the module docstring).

    Raises:
        KeyError: a field type has no SQL type, or a primary-key name is not a field.
    """
    primary_key = tuple(primary_key)
    skip = set(exclude)
    missing = [key for key in primary_key if key not in schema.names or key in skip]
    if missing:
        raise KeyError(f"table {name!r}: primary-key columns {missing} are not in the schema")
    columns = []
    for field in schema:
        if field.name in skip:
            continue
        try:
            sql_type = SQL_TYPES[field.type]
        except KeyError:
            raise KeyError(
                f"table {name!r}: field {field.name!r} has Arrow type {field.type}, "
                f"which has no SQL type (known: {', '.join(map(str, SQL_TYPES))})"
            ) from None
        is_key = field.name in primary_key
        nullable = not is_key and (field.nullable or pa.types.is_floating(field.type))
        columns.append(sa.Column(field.name, sql_type(), primary_key=is_key, nullable=nullable))
    return sa.Table(name, meta, *columns, **kwargs)


#: Confirmed OHLCV bars. ``WITHOUT ROWID`` on SQLite: the composite key is the row's storage order.
bars_ohlcv = table_from_schema(
    "bars_ohlcv", BAR, ("symbol", "timeframe", "ts"), exclude=("status",), sqlite_with_rowid=False
)
#: Bars the engine could not see whole (status ``partial``: open at a stop, or opened before
#: a live session's first tick), apart from the final ones so they never replace them.
bars_partial = table_from_schema(
    "bars_partial", BAR, ("symbol", "timeframe", "ts"), exclude=("status",), sqlite_with_rowid=False
)
#: Rejected input rows, with their reason: one row per rejection, keyed by the run, the
#: source and the rejection's ordinal at its node (see ``graph.schemas.QUARANTINE``).
quarantine = table_from_schema("quarantine", QUARANTINE, ("run_id", "source", "position"))
#: Canonical ticks (live recordings, imports); replayable with the same graph.
tick_data = table_from_schema("tick_data", TICK, ("provider", "symbol", "ts", "seq"), sqlite_with_rowid=False)
#: Signal values, one per (provider, symbol, ts, name); ``created_at`` (int64 ns UTC wall
#: clock) is set when the row is first inserted and never updated (see the module docstring).
signals = table_from_schema("signals", SIGNAL, ("provider", "symbol", "ts", "name"), sqlite_with_rowid=False)
signals.append_column(sa.Column("created_at", sa.BigInteger(), nullable=False))
#: One row per job (replay, export, ...), see ``db/jobs.py``.
job_runs = table_from_schema("job_runs", JOB_RUN, ("id",))

def create_tables(connection: sa.Connection, tables: list[sa.Table] | None = None) -> None:
    """Create ``tables`` (default: all of tickgraph's) where missing, and check the existing ones.

    Run with ``AsyncConnection.run_sync``. ``CREATE TABLE IF NOT EXISTS`` leaves a table made
    by an older tickgraph as it is (e.g. ``quarantine`` before it was keyed by run and
    position), and every later write would fail with a driver error; this names the table
    and its missing columns instead.

    Raises:
        ValueError: an existing table lacks columns this version writes.
    """
    tables = list(metadata.sorted_tables) if tables is None else tables
    metadata.create_all(connection, tables=tables)
    inspector = sa.inspect(connection)
    for table in tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column.name for column in table.columns if column.name not in present]
        if missing:
            raise ValueError(
                f"table {table.name} was made by an older tickgraph: it lacks column(s) {', '.join(missing)}; "
                "move the database aside (or drop that table) and run again"
            )


#: Table name -> columns written on insert and never changed by an upsert.
INSERT_ONLY: dict[str, tuple[str, ...]] = {"signals": ("created_at",)}

#: Table name -> the Arrow schema it was derived from.
ORIGINS: dict[str, pa.Schema] = {
    "tick_data": TICK,
    "bars_ohlcv": BAR,
    "bars_partial": BAR,
    "signals": SIGNAL,
    "job_runs": JOB_RUN,
    "quarantine": QUARANTINE,
}


def arrow_schema(table: sa.Table) -> pa.Schema:
    """The Arrow schema of a table built by :func:`table_from_schema`.

    Nullability is taken from the originating Arrow schema (BAR / QUARANTINE / ...) where
    the table is one of tickgraph's and the column one of its fields, else from the SQL
    column (``signals.created_at``: int64, not null).
    """
    origin = ORIGINS.get(table.name)
    fields = []
    for column in table.columns:
        in_origin = origin is not None and column.name in origin.names
        nullable = origin.field(column.name).nullable if in_origin else column.nullable
        fields.append(pa.field(column.name, _ARROW_TYPES[type(column.type)], nullable=nullable))
    return pa.schema(fields)


