"""Reading tickgraph tables back (tests, exports, replays from the store).

Every reader returns typed columns: ``ts`` int64 ns UTC, prices float64, NULL floats
in fields the Arrow schema marks non-null as NaN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import URL

from db.engine import create_engine, gc_paused
from db.tables import arrow_schema, bars_ohlcv, bars_partial, metadata, quarantine

__all__ = [
    "read_table",
    "read_table_async",
    "read_range_async",
    "in_range",
    "read_bars",
    "read_bars_async",
    "read_quarantine",
    "distinct_values_async",
    "ts_range_async",
]


async def read_table_async(
    url: str | URL,
    table: str | sa.Table,
    *,
    where: Mapping[str, Any] | None = None,
) -> pa.Table:
    """All rows of a tickgraph table, ordered by primary key.

    Args:
        url: SQLAlchemy URL (mapped by :func:`async_url`).
        table: the table or its name.
        where: ``{column: value}`` equality filters, ANDed.

    Returns:
        An Arrow table of :func:`arrow_schema` (``ts`` int64 ns UTC); NULL floats in
        fields the Arrow schema marks non-null come back as NaN.
    """
    table = table if isinstance(table, sa.Table) else metadata.tables[table]
    statement = sa.select(table).order_by(*table.primary_key.columns)
    for name, value in (where or {}).items():
        statement = statement.where(table.c[name] == value)
    return await _fetch(url, table, statement)


def in_range(
    statement: sa.Select,
    table: sa.Table,
    symbols: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> sa.Select:
    """``statement`` restricted to ``symbols`` and ``start_ns <= ts < end_ns`` of ``table``.

    Args:
        statement: a SELECT on ``table`` (it must have ``symbol`` and ``ts`` columns).
        symbols: keep only these symbols (SQL ``IN``; None: all).
        start_ns, end_ns: half-open event-time range, int64 ns UTC (None: unbounded).
    """
    if symbols is not None:
        statement = statement.where(table.c.symbol.in_(list(symbols)))
    if start_ns is not None:
        statement = statement.where(table.c.ts >= int(start_ns))
    if end_ns is not None:
        statement = statement.where(table.c.ts < int(end_ns))
    return statement


async def read_range_async(
    url: str | URL,
    table: str | sa.Table,
    *,
    symbols: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    where: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Rows of a tickgraph table with ``start_ns <= ts < end_ns``, ordered by primary key.

    Args:
        url: SQLAlchemy URL.
        table: the table or its name (it must have ``symbol`` and ``ts`` columns).
        symbols: keep only these symbols (None: all).
        start_ns, end_ns: half-open event-time range, int64 ns UTC (None: unbounded).
        where: further ``{column: value}`` equality filters (e.g. ``timeframe``).

    Returns:
        An Arrow table of :func:`arrow_schema` (see :func:`read_table_async`).
    """
    table = table if isinstance(table, sa.Table) else metadata.tables[table]
    statement = sa.select(table).order_by(*table.primary_key.columns)
    statement = in_range(statement, table, symbols, start_ns, end_ns)
    for name, value in (where or {}).items():
        statement = statement.where(table.c[name] == value)
    return await _fetch(url, table, statement)


async def distinct_values_async(url: str | URL, table: str | sa.Table, column: str) -> list[Any]:
    """The distinct non-null values of ``table.column``, sorted (e.g. the symbols stored)."""
    table = table if isinstance(table, sa.Table) else metadata.tables[table]
    statement = sa.select(table.c[column]).where(table.c[column].is_not(None)).distinct()
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            values = (await connection.execute(statement)).scalars().all()
    finally:
        await engine.dispose()
    return sorted(values)


async def ts_range_async(url: str | URL, table: str | sa.Table, where: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(min ts, max ts)`` of the rows matching ``where`` (equality filters), or None if none match."""
    table = table if isinstance(table, sa.Table) else metadata.tables[table]
    statement = sa.select(sa.func.min(table.c.ts), sa.func.max(table.c.ts))
    for name, value in where.items():
        statement = statement.where(table.c[name] == value)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            low, high = (await connection.execute(statement)).one()
    finally:
        await engine.dispose()
    return None if low is None else (int(low), int(high))


async def _fetch(url: str | URL, table: sa.Table, statement: sa.Select) -> pa.Table:
    """Run ``statement`` (selecting every column of ``table``) into a typed Arrow table."""
    engine = create_engine(url)
    schema = arrow_schema(table)
    try:
        with gc_paused():
            async with engine.connect() as connection:
                rows = (await connection.execute(statement)).all()
            columns = list(zip(*rows)) if rows else [[] for _ in schema]
            del rows
            arrays = []
            for field, values in zip(schema, columns):
                array = pa.array(values, type=field.type)
                if pa.types.is_floating(field.type) and not field.nullable:
                    array = pc.fill_null(array, np.nan)
                arrays.append(array)
    finally:
        await engine.dispose()
    return pa.Table.from_arrays(arrays, schema=schema)


def read_table(
    url: str | URL,
    table: str | sa.Table,
    *,
    where: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Synchronous :func:`read_table_async` (runs its own event loop; not from async code)."""
    return asyncio.run(read_table_async(url, table, where=where))


def _where(**filters: Any) -> dict[str, Any]:
    return {name: value for name, value in filters.items() if value is not None}


async def read_bars_async(
    url: str | URL, *, symbol: str | None = None, timeframe: str | None = None, partial: bool = False
) -> pd.DataFrame:
    """Stored bars as a DataFrame ordered by (symbol, timeframe, ts).

    Args:
        partial: read ``bars_partial`` (bars not seen whole: open at a stop, or opened
            before a live session's first tick) instead of the final ``bars_ohlcv``.

    Returns:
        Columns of BAR minus ``status``; ``ts`` int64 ns UTC (bar open time), prices
        float64, ``trade_count`` int64, ``symbol``/``timeframe`` strings.
    """
    table = await read_table_async(
        url, bars_partial if partial else bars_ohlcv, where=_where(symbol=symbol, timeframe=timeframe)
    )
    return table.to_pandas()


def read_bars(
    url: str | URL, *, symbol: str | None = None, timeframe: str | None = None, partial: bool = False
) -> pd.DataFrame:
    """Synchronous :func:`read_bars_async` (runs its own event loop; not from async code)."""
    return asyncio.run(read_bars_async(url, symbol=symbol, timeframe=timeframe, partial=partial))


def read_quarantine(
    url: str | URL, *, source: str | None = None
) -> pd.DataFrame:
    """Stored quarantine rows as a DataFrame ordered by (run_id, source, position); QUARANTINE columns."""
    return read_table(url, quarantine, where=_where(source=source)).to_pandas()
