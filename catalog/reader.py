"""One read path over the tick catalog and the SQL store: ticks, signals and bars.

    reader = StoreReader(catalog_dir="out/catalog", sql_url="sqlite:///tickgraph.db")
    ticks = reader.ticks(["AMZN"], start_ns, end_ns)            # TICK, from the catalog (and tick_data)
    signals = reader.signals(["AMZN"], start_ns, end_ns, names=["spread_bps", "rsi_14_1m"])
    bars = reader.bars(["AMZN"], start_ns, end_ns, timeframe="1m")

Where each dataset lives (``DESIGN.md``: storage by data rate):

=========== ====================================== =========================================
dataset     where                                  rows come back
=========== ====================================== =========================================
ticks       catalog ``ticks``; SQL ``tick_data``    TICK, by (symbol, ts, seq)
            (opt-in) for rows not in the catalog
signals     catalog ``signals`` (per-tick);         SIGNAL + ``created_at`` (int64 ns, the SQL
            SQL ``signals`` (bar-level, or opt-in   row's first insert; null for catalog rows),
            per-tick) for keys not in the catalog   by (symbol, ts, name, provider)
bars        SQL ``bars_ohlcv``                      its columns, by (symbol, timeframe, ts)
=========== ====================================== =========================================

A row stored in both places (a per-tick stream sent to the catalog and, opt-in, to SQL)
is returned once, from the catalog. Every reader here is synchronous (the SQL parts run
their own event loop): call it from a worker thread in async code (``asyncio.to_thread``).
``run.py export``, the ``replay`` kind's ``catalog`` input (:meth:`StoreReader.tick_inputs`)
and the service's tick and signal routes all read through this class; ``catalog/query.py``
gives the same datasets to DuckDB SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from catalog.dataset import catalog_symbols, file_chains, iter_rows, list_files, read_rows
from catalog.layout import IDENTITY_KEYS
from db.engine import absolute_sqlite_url, create_engine
from db.read import distinct_values_async, read_range_async
from db.tables import arrow_schema, bars_ohlcv, signals, tick_data

__all__ = ["DATASETS", "SIGNAL_ROWS", "StoreReader", "sql_database_exists"]

#: The datasets a reader serves.
DATASETS = ("ticks", "signals", "bars")
#: The schema of signal rows read back: SIGNAL plus ``created_at`` (nullable: catalog rows have none).
SIGNAL_ROWS = pa.schema([*(f for f in arrow_schema(signals) if f.name != "created_at"),
                         pa.field("created_at", pa.int64())])  # fmt: skip
_SIGNAL_ORDER = [("symbol", "ascending"), ("ts", "ascending"), ("name", "ascending"), ("provider", "ascending")]
_TICK_ORDER = [("symbol", "ascending"), ("ts", "ascending"), ("seq", "ascending")]


def sql_database_exists(url: str | None) -> bool:
    """False for no URL or a SQLite URL whose file does not exist; True otherwise (a server
    database is assumed to exist: reading it reports what is wrong)."""
    if not url:
        return False
    parsed = make_url(absolute_sqlite_url(url))
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        return Path(database).is_file()
    return True


class StoreReader:
    """Reads ticks, signals and bars from the catalog and the SQL store (module docstring).

    Args:
        catalog_dir: the tick catalog (None or missing: no catalog rows).
        sql_url: SQLAlchemy URL of the store (None or a missing SQLite file: no SQL rows).

    Every method takes ``symbols`` (None: all) and a half-open event-time range
    ``[start_ns, end_ns)`` in int64 ns UTC (None: unbounded).
    """

    def __init__(self, catalog_dir: str | Path | None = None, sql_url: str | None = None) -> None:
        self.catalog_dir = Path(catalog_dir) if catalog_dir is not None else None
        self.sql_url = sql_url if sql_database_exists(sql_url) else None
        self._tables: set[str] | None = None

    def __repr__(self) -> str:
        from db.engine import mask_url

        url = mask_url(self.sql_url) if self.sql_url else None
        return f"StoreReader(catalog_dir={str(self.catalog_dir) if self.catalog_dir else None!r}, sql_url={url!r})"

    # -- what is stored ------------------------------------------------------------------
    def sql_tables(self) -> set[str]:
        """The names of the tables the SQL store has (empty without one)."""
        if self.sql_url is None:
            return set()
        if self._tables is None:

            async def names() -> set[str]:
                engine = create_engine(self.sql_url)
                try:
                    async with engine.connect() as connection:
                        return set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
                finally:
                    await engine.dispose()

            self._tables = asyncio.run(names())
        return self._tables

    def symbols(self, dataset: str) -> list[str]:
        """The symbols with rows of ``dataset`` (``ticks``, ``signals`` or ``bars``), sorted.

        Raises:
            ValueError: an unknown dataset.
        """
        if dataset not in DATASETS:
            raise ValueError(f"{dataset!r} is not a dataset ({', '.join(DATASETS)})")
        found: set[str] = set()
        if dataset != "bars" and self.catalog_dir is not None:
            found.update(catalog_symbols(self.catalog_dir, dataset))
        table = {"ticks": tick_data, "signals": signals, "bars": bars_ohlcv}[dataset]
        if table.name in self.sql_tables():
            found.update(asyncio.run(distinct_values_async(self.sql_url, table, "symbol")))
        return sorted(found)

    # -- rows ----------------------------------------------------------------------------
    def ticks(
        self,
        symbols: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        provider: str | None = None,
    ) -> pa.Table:
        """Stored ticks as a TICK table ordered by (symbol, ts, seq) (see the module docstring)."""
        stored = self._catalog("ticks", symbols, start_ns, end_ns)
        extra = self._sql(tick_data, symbols, start_ns, end_ns)
        table = _union(stored, extra, "ticks", _TICK_ORDER)
        return _only(table, "provider", [provider] if provider is not None else None)

    def signals(
        self,
        symbols: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        names: Sequence[str] | None = None,
        provider: str | None = None,
    ) -> pa.Table:
        """Stored signal rows (:data:`SIGNAL_ROWS`) ordered by (symbol, ts, name, provider)."""
        stored = _only(self._catalog("signals", symbols, start_ns, end_ns), "name", names)
        stored = stored.append_column(SIGNAL_ROWS.field("created_at"), pa.nulls(stored.num_rows, pa.int64()))
        extra = _only(self._sql(signals, symbols, start_ns, end_ns), "name", names)
        extra = pa.Table.from_arrays([extra.column(f.name).cast(f.type) for f in SIGNAL_ROWS], schema=SIGNAL_ROWS)
        table = _union(stored, extra, "signals", _SIGNAL_ORDER)
        return _only(table, "provider", [provider] if provider is not None else None)

    def bars(
        self,
        symbols: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        timeframe: str | None = None,
    ) -> pa.Table:
        """Stored confirmed bars (``bars_ohlcv`` columns, ``ts`` the bar open time) ordered by
        (symbol, timeframe, ts)."""
        where = {"timeframe": timeframe} if timeframe is not None else None
        return self._sql(bars_ohlcv, symbols, start_ns, end_ns, where)

    def tick_inputs(
        self,
        symbols: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        max_rows: int = 65_536,
        budget_rows: int = 2_000_000,
    ) -> list[tuple[str, str, Iterator[pa.RecordBatch]]]:
        """The catalog's ticks as streamed inputs of an event-time merge (the ``replay`` kind).

        Args:
            symbols, start_ns, end_ns: what to read (module docstring).
            max_rows: most rows per batch.
            budget_rows: batches are at most ``budget_rows / inputs`` rows (at least 1,024),
                so a merge holding one batch per input holds about this many ticks
                whatever the number of symbols.

        Returns:
            ``(name, symbol, batches)`` per symbol (sorted; a symbol whose files of
            different jobs overlap gives one input per chain of disjoint files): TICK
            batches in (ts, seq) order, one file open at a time. ``name`` is
            ``catalog:<dir>/ticks/symbol=<S>`` (``#<chain>`` for further chains).
        """
        if self.catalog_dir is None:
            return []
        by_symbol: dict[str, list] = {}
        for entry in list_files(self.catalog_dir, "ticks", symbols, start_ns, end_ns):
            by_symbol.setdefault(entry.symbol, []).append(entry)
        chains = [(symbol, i, chain) for symbol in sorted(by_symbol) for i, chain in enumerate(file_chains(by_symbol[symbol]))]
        rows = max(1_024, min(max_rows, budget_rows // max(1, len(chains))))
        return [
            (f"catalog:{self.catalog_dir}/ticks/symbol={symbol}" + (f"#{i}" if i else ""), symbol,
             iter_rows("ticks", chain, start_ns, end_ns, rows))
            for symbol, i, chain in chains
        ]  # fmt: skip

    # -- internals -----------------------------------------------------------------------
    def _catalog(self, stream: str, symbols, start_ns, end_ns) -> pa.Table:
        if self.catalog_dir is None:
            from catalog.layout import stream_schema

            return stream_schema(stream).empty_table()
        return read_rows(self.catalog_dir, stream, symbols, start_ns, end_ns)

    def _sql(self, table: sa.Table, symbols, start_ns, end_ns, where=None) -> pa.Table:
        if table.name not in self.sql_tables():
            return arrow_schema(table).empty_table()
        return asyncio.run(
            read_range_async(self.sql_url, table, symbols=symbols, start_ns=start_ns, end_ns=end_ns, where=where)
        )


def _only(table: pa.Table, column: str, values: Sequence[str] | None) -> pa.Table:
    """Rows whose ``column`` is in ``values`` (None: all)."""
    if values is None or table.num_rows == 0:
        return table
    return table.filter(pc.is_in(table.column(column), pa.array(list(values), pa.string())))


def _identity(stream: str, table: pa.Table) -> pa.Table:
    columns = {"symbol": table.column("symbol")}
    for name in IDENTITY_KEYS[stream]:
        columns[name] = pc.is_valid(table.column("price")) if name == "is_trade" else table.column(name)
    return pa.table(columns)


def _union(stored: pa.Table, extra: pa.Table, stream: str, order: list[tuple[str, str]]) -> pa.Table:
    """Catalog rows plus the SQL rows whose identity the catalog does not hold, in ``order``."""
    if extra.num_rows == 0:
        return stored
    if stored.num_rows:
        keys = ["symbol", *IDENTITY_KEYS[stream]]
        mine = _identity(stream, extra).append_column("__row", pa.array(np.arange(extra.num_rows)))
        fresh = mine.join(_identity(stream, stored), keys=keys, join_type="left anti")
        extra = extra.take(pa.array(np.sort(fresh.column("__row").to_numpy())))
        if extra.num_rows == 0:
            return stored
    table = pa.concat_tables([stored, extra.select(stored.column_names).cast(stored.schema)])
    return table.take(pc.sort_indices(table, sort_keys=order))
