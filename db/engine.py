"""Database connections: async URLs, engines, upsert statements, masked errors.

SQLAlchemy 2 with an async engine: SQLite through aiosqlite is the embedded default,
PostgreSQL through asyncpg by URL. A URL's password never appears in a ``repr``, a
log line or an error raised here; it is rendered as ``***`` (:func:`mask_url`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # needs greenlet

__all__ = [
    "async_url",
    "absolute_sqlite_url",
    "mask_url",
    "secret_forms",
    "StoreError",
    "create_engine",
    "sqlite_pragmas",
    "upsert_sql",
    "gc_paused",
]

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str | URL) -> URL:
    """The async-driver form of a SQLAlchemy URL.

    ``sqlite://`` -> ``sqlite+aiosqlite://``, ``postgresql://`` (and ``postgres://``)
    -> ``postgresql+asyncpg://``; a URL naming a driver is kept. A relative SQLite
    path keeps SQLAlchemy's meaning (relative to the working directory); see
    :func:`absolute_sqlite_url` to pin it where a graph is loaded.

    Raises:
        ValueError: not a SQLAlchemy URL (the message never contains the URL).
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            "not a SQLAlchemy URL; expected dialect[+driver]://user:password@host/database "
            "or sqlite:///path/to/file.db"
        ) from None
    drivername = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    parsed = parsed.set(drivername=drivername)
    return parsed


def mask_url(url: str | URL) -> str:
    """``url`` as text with its password replaced by ``***`` (unparseable: ``<invalid URL>``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


class StoreError(RuntimeError):
    """A database operation failed; the message names the masked URL, never the password."""


def absolute_sqlite_url(url: str) -> str:
    """``url`` with a relative SQLite database path made absolute against the cwd.

    SQLAlchemy resolves ``sqlite:///tickgraph.db`` against the working directory;
    resolving it where a graph is loaded (the driver) keeps that meaning on every Ray
    worker whatever its own cwd. Other URLs are returned unchanged.

    Raises:
        ValueError: not a SQLAlchemy URL (the message never contains the URL).
    """
    async_url(url)  # validates without echoing the URL
    parsed = make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).is_absolute()
    ):
        return parsed.set(database=str(Path.cwd() / database)).render_as_string(hide_password=False)
    return url


def create_engine(url: str | URL) -> AsyncEngine:
    """An async engine for ``url`` (:func:`async_url`); SQLite connections get WAL and synchronous=NORMAL."""
    engine = create_async_engine(async_url(url))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def secret_forms(password: str | None) -> list[str]:
    """The password as it may appear in text: raw and URL-quoted."""
    if not password:
        return []
    return sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True)


def sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite connect hook: WAL journal and synchronous=NORMAL (fast, crash-safe with WAL)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def upsert_sql(table: sa.Table, dialect: sa.engine.Dialect) -> str:
    """``INSERT ... ON CONFLICT (pk) DO UPDATE`` for ``table``, compiled for ``dialect``.

    The statement takes positional parameters in table column order (checked).
    """
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect.name)
    if insert is None:
        raise ValueError(f"sql_store supports sqlite and postgresql upserts, not {dialect.name!r}")
    statement = insert(table)
    key = [column.name for column in table.primary_key.columns]
    values = [column for column in table.columns if not column.primary_key]
    statement = statement.on_conflict_do_update(
        index_elements=key,
        set_={column.name: statement.excluded[column.name] for column in values},
        # skip rewriting rows that would not change (a re-run): same content, less I/O
        where=sa.or_(*(column.is_distinct_from(statement.excluded[column.name]) for column in values)),
    )
    compiled = statement.compile(dialect=dialect)
    order = [column.name for column in table.columns]
    if not compiled.positional or list(compiled.positiontup) != order:
        raise ValueError(
            f"sql_store: driver {dialect.driver!r} does not take positional parameters in column "
            f"order (paramstyle {dialect.paramstyle!r})"
        )
    return str(compiled)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building and sending millions of tuples (they hold no
    cycles; collections triggered by their allocation cost more than the conversion)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
