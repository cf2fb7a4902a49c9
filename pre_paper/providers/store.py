"""Bars from tickgraph's own store, read-only: the ``bars_ohlcv`` table the bar graphs write.

A SQLite store is opened with SQLite's read-only mode (``file:...?mode=ro``; plus
``immutable=1`` when its directory is not writable, where no writer can exist): the
connection cannot write, whatever a bug would try. Any other SQLAlchemy URL
(PostgreSQL) is read with ``db.read.read_range_async``, which only runs SELECTs.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pre_paper.providers.base import OHLCV, ProviderError, bars_frame

__all__ = ["StoreProviderSpec", "StoreProvider"]


class StoreProviderSpec(BaseModel):
    """A ``store`` provider entry in the ``pre_paper`` node's ``providers``.

    Attributes:
        kind: ``store``.
        url: SQLAlchemy URL of the store (``sqlite:///tickgraph.db``, ``postgresql://...``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: Literal["store"]
    url: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        from db.engine import absolute_sqlite_url

        return absolute_sqlite_url(value)  # SQLAlchemy's meaning (the cwd), fixed where the graph is loaded


class StoreProvider:
    """Read-only ``bars_ohlcv`` reads (see the module docstring).

    Args:
        url: SQLAlchemy URL; a relative SQLite path resolves against the cwd (as SQLAlchemy does).
    """

    source = "historical"
    name = "store"

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        from db.engine import absolute_sqlite_url

        self.url = absolute_sqlite_url(url)
        parsed = make_url(self.url)
        self.sqlite_path: Path | None = Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None

    def fetch_bars(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> pd.DataFrame:
        """Confirmed bars of ``symbol``/``tf`` opening in ``[start_ts, end_ts)``.

        Raises:
            ProviderError: the store cannot be read (the message has no password).
        """
        start, end = int(start_ts.value), int(end_ts.value)
        if self.sqlite_path is not None:
            rows = self._sqlite(symbol, tf, start, end)
        else:
            rows = self._sqlalchemy(symbol, tf, start, end)
        if not rows:
            return bars_frame(np.empty(0, np.int64), {c: np.empty(0) for c in OHLCV})
        columns = list(zip(*rows))
        arrays = {name: np.asarray([np.nan if v is None else v for v in columns[i + 1]], dtype=np.float64) for i, name in enumerate((*OHLCV, "vwap"))}
        return bars_frame(np.asarray(columns[0], dtype=np.int64), arrays)

    def _sqlite(self, symbol: str, tf: str, start: int, end: int) -> list[tuple]:
        if not self.sqlite_path.is_file():
            raise ProviderError(f"store: the SQLite store {self.sqlite_path} does not exist")
        # mode=ro: this connection cannot write. A WAL database in a directory nobody may
        # write to cannot change either (a writer needs its -wal file), and SQLite opens it
        # only as immutable there.
        flags = "mode=ro" if os.access(self.sqlite_path.parent, os.W_OK) else "mode=ro&immutable=1"
        try:
            db = sqlite3.connect(f"file:{quote(str(self.sqlite_path))}?{flags}", uri=True, timeout=10)
            try:
                return db.execute(
                    "SELECT ts, open, high, low, close, volume, vwap FROM bars_ohlcv "
                    "WHERE symbol = ? AND timeframe = ? AND ts >= ? AND ts < ? ORDER BY ts",
                    (symbol, tf, start, end),
                ).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise ProviderError(f"store: cannot read bars_ohlcv from {self.sqlite_path}: {type(exc).__name__}: {exc}") from None

    def _sqlalchemy(self, symbol: str, tf: str, start: int, end: int) -> list[tuple]:
        from db.engine import describe_db_error
        from db.read import read_range_async

        try:
            table = asyncio.run(read_range_async(self.url, "bars_ohlcv", symbols=[symbol], start_ns=start, end_ns=end, where={"timeframe": tf}))
        except Exception as exc:  # any driver error: say which, never the URL's password
            raise ProviderError(f"store: cannot read bars_ohlcv: {describe_db_error(exc)}") from None
        columns = ["ts", *OHLCV, "vwap"]
        return list(zip(*(table.column(c).to_pylist() for c in columns)))
