"""The store's ``tick_data`` table as a tick input (the ``replay`` kind's ``database_url``)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from actors.tick_formats.chunks import PARQUET_ROWS, TickChunk
from graph.schemas import TICK

__all__ = ["read_tick_table"]


def read_tick_table(
    url: str,
    *,
    symbols: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    chunk_rows: int = PARQUET_ROWS,
) -> Iterator[TickChunk]:
    """Read the store's ``tick_data`` table (``db/tables.py``) in event-time order, in chunks.

    One query, streamed with a server-side cursor on a private event loop, so memory
    holds one chunk whatever the table size; closing the generator closes the cursor.

    Args:
        url: SQLAlchemy URL of the store (``sqlite:///tickgraph.db``, ``postgresql://...``).
        symbols: only these symbols (SQL ``IN``); None reads every symbol.
        start_ns: only ticks with ``ts >= start_ns`` (int64 ns UTC); None: no lower bound.
        end_ns: only ticks with ``ts < end_ns`` (int64 ns UTC); None: no upper bound.
        chunk_rows: rows per chunk, > 0.

    Yields:
        TickChunk: TICK rows ordered by (ts, provider, symbol, seq); ``origin`` as stored;
        no quarantine (rows were validated when they were written); ``rows_read`` = rows.

    Raises:
        db.engine.StoreError: the database cannot be read (no ``tick_data`` table, bad
            credentials, ...); the message names the masked URL, never the password.
    """
    import asyncio

    import sqlalchemy as sa

    from db.engine import StoreError, create_engine, describe_db_error, mask_url
    from db.read import in_range
    from db.tables import tick_data

    table = tick_data
    statement = sa.select(*(table.c[name] for name in TICK.names)).order_by(
        table.c.ts, table.c.provider, table.c.symbol, table.c.seq
    )
    statement = in_range(statement, table, symbols, start_ns, end_ns)
    where = f"tick_data on {mask_url(url)}"

    loop = asyncio.new_event_loop()
    engine = connection = partitions = None
    try:
        try:
            engine = create_engine(url)
            connection = loop.run_until_complete(engine.connect())
            result = loop.run_until_complete(connection.stream(statement))
            partitions = result.partitions(chunk_rows)
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
            raise StoreError(f"{where}: {describe_db_error(exc)}") from None
        while True:
            try:
                rows = loop.run_until_complete(anext(partitions, None))  # noqa: F821 (builtin since 3.10)
            except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
                raise StoreError(f"{where}: {describe_db_error(exc)}") from None
            if rows is None:
                return
            columns = list(zip(*rows))
            arrays = [pa.array(values, type=field.type) for field, values in zip(TICK, columns)]
            yield TickChunk(pa.RecordBatch.from_arrays(arrays, schema=TICK), None, len(rows))
    finally:
        if partitions is not None:
            loop.run_until_complete(partitions.aclose())
        if connection is not None:
            loop.run_until_complete(connection.close())
        if engine is not None:
            loop.run_until_complete(engine.dispose())
        loop.close()
