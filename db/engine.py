"""Database connections: async URLs, engines, upsert statements, masked errors.

SQLAlchemy 2 with an async engine: SQLite through aiosqlite is the embedded default,
PostgreSQL through asyncpg by URL. A URL's password never appears in a ``repr``, a
log line or an error raised here; it is rendered as ``***`` (:func:`mask_url`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # needs greenlet

from graph.secrets import register_secret

__all__ = [
    "async_url",
    "absolute_sqlite_url",
    "writable_store_url",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "connect_timeout_s",
    "describe_db_error",
    "server_address",
    "statement_table",
    "mask_url",
    "secret_forms",
    "StoreError",
    "create_engine",
    "drop_tables",
    "sqlite_pragmas",
    "upsert_sql",
    "pg_copy_upsert_sql",
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


def writable_store_url(url: str) -> str:
    """:func:`absolute_sqlite_url`, and for a SQLite file, a check that it can be written.

    Used by the params of every node that writes a store, so a database path that is a
    directory or lies in a read-only place fails when the graph is validated.

    Raises:
        ValueError: not a SQLAlchemy URL, or a SQLite path that cannot be written (the
            message names the path, never a password).
    """
    from graph.params import output_file_problem

    url = absolute_sqlite_url(url)
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        problem = output_file_problem(Path(database))
        if problem is not None:
            raise ValueError(f"SQLite database {problem}")
    return url


#: Seconds to wait for a database server to complete a connection, unless the URL sets
#: ``connect_timeout`` (libpq's name) or the caller passes one.
DEFAULT_CONNECT_TIMEOUT_S = 10.0


def connect_timeout_s(url: str | URL, default: float = DEFAULT_CONNECT_TIMEOUT_S) -> float:
    """The connect timeout for ``url``: its ``?connect_timeout=`` query value, else ``default``.

    Raises:
        ValueError: ``connect_timeout`` is not a positive number.
    """
    value = make_url(url).query.get("connect_timeout")
    if value is None:
        return default
    try:
        seconds = float(value if isinstance(value, str) else value[0])
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"connect_timeout={value!r} in the database URL must be a positive number of seconds")
    return seconds


def create_engine(url: str | URL, connect_timeout: float | None = None) -> AsyncEngine:
    """An async engine for ``url`` (:func:`async_url`).

    SQLite connections get WAL and synchronous=NORMAL. PostgreSQL connections give up
    after ``connect_timeout`` seconds (default :func:`connect_timeout_s` of the URL), so a
    server that accepts TCP and never answers fails fast instead of after asyncpg's 60 s.
    Statement parameters are never put into error messages (``hide_parameters``): a
    failed flush must not print thousands of tick values.
    """
    target = async_url(url)
    register_secret(target.password)  # never in this process's log lines or errors
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if target.get_backend_name() == "postgresql":
        timeout = connect_timeout if connect_timeout is not None else connect_timeout_s(target)
        target = target.difference_update_query(["connect_timeout"])
        kwargs["connect_args"] = {"timeout": timeout}
    engine = create_async_engine(target, **kwargs)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def server_address(url: str | URL) -> str:
    """``host:port`` of a server URL (``local file`` for SQLite), for messages."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"file {parsed.database or ':memory:'}"
    port = parsed.port or {"postgresql": 5432, "mysql": 3306}.get(parsed.get_backend_name())
    return f"{parsed.host or 'localhost'}:{port}" if port else str(parsed.host or "localhost")


def describe_db_error(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line for a failed database call: the driver's own message, never the statement.

    SQLAlchemy's ``str()`` of an error appends the whole SQL statement (and, unless hidden,
    its parameters: 12.8 KB of tick values for one failed flush). This keeps the
    exception type and the driver's message (``DBAPIError.orig``), first line only, with
    every form of ``secrets`` replaced by ``***``.
    """
    original = getattr(error, "orig", None) or error
    text = str(original).splitlines()[0] if str(original) else ""
    if isinstance(original, TimeoutError) or isinstance(error, TimeoutError):
        text = text or "no answer in time"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return f"{type(original).__name__}: {text}" if text else type(original).__name__


def statement_table(error: BaseException) -> str | None:
    """The table an ``INSERT``/``UPDATE``/``DELETE`` in a failed statement names, if any."""
    import re

    statement = getattr(error, "statement", None) or ""
    match = re.search(r'(?:INSERT INTO|UPDATE|DELETE FROM)\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', statement)
    return match.group(1) if match else None


def drop_tables(url: str | URL) -> None:
    """Drop tickgraph's tables (``db.tables.metadata``) at ``url``, if present; blocks.

    For tests and benchmarks that reuse one database (a PostgreSQL test server). Must
    not be called from a running event loop (it runs its own).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database refused (message has no password).
    """
    import asyncio

    from db.tables import metadata

    async def drop() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(metadata.drop_all)
        finally:
            await engine.dispose()

    asyncio.run(drop())


def secret_forms(password: str | None) -> list[str]:
    """The password as it may appear in text: raw and URL-quoted."""
    if not password:
        return []
    return sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True)


#: SQLite page cache per connection, KiB (negative PRAGMA value): 64 MiB keeps the
#: B-tree pages of several hundred (symbol, timeframe) insertion points resident.
SQLITE_CACHE_KIB = 65_536
#: How long a SQLite writer waits for another's write lock before "database is locked",
#: ms. The store, the recorder and the job records share one file; a long flush of a
#: large batch on a slow disk can hold the lock for seconds (the sqlite3 default is 5 s).
SQLITE_BUSY_TIMEOUT_MS = 60_000


def sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite connect hook: WAL journal (readers never block the writer) and
    synchronous=NORMAL (fast, crash-safe with WAL), a busy timeout so that writers sharing
    the file wait for each other (:data:`SQLITE_BUSY_TIMEOUT_MS`), and a 64 MiB page cache
    (:data:`SQLITE_CACHE_KIB`)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def upsert_sql(
    table: sa.Table, dialect: sa.engine.Dialect, insert_only: Iterable[str] | None = None, rows: int = 1
) -> str:
    """``INSERT ... ON CONFLICT (pk) DO UPDATE`` for ``table``, compiled for ``dialect``.

    Args:
        table: the target table.
        dialect: the engine's dialect (sqlite or postgresql).
        insert_only: columns written when a row is inserted and never updated (e.g.
            ``signals.created_at``); default :data:`db.tables.INSERT_ONLY` for the table.
        rows: rows per statement (SQLite only): ``VALUES (...), (...), ...`` with
            ``rows`` groups of placeholders, parameters flattened row after row. One
            statement per 64 rows instead of one per row makes SQLite bulk upserts
            about 1.5x faster (fewer statement resets); rows sharing a key are applied
            in order, the later winning, as with one row per statement.

    The statement takes positional parameters in table column order (checked). An
    existing row is updated only if some updatable value differs (``IS DISTINCT
    FROM``), so re-sending identical rows writes nothing.
    """
    if rows > 1 and dialect.name != "sqlite":
        raise ValueError(f"multi-row upserts are for sqlite; {dialect.name} takes one row per statement")
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect.name)
    if insert is None:
        raise ValueError(f"sql_store supports sqlite and postgresql upserts, not {dialect.name!r}")
    if insert_only is None:
        from db.tables import INSERT_ONLY

        insert_only = INSERT_ONLY.get(table.name, ())
    keep = set(insert_only)
    statement = insert(table)
    key = [column.name for column in table.primary_key.columns]
    values = [column for column in table.columns if not column.primary_key and column.name not in keep]
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
    sql = str(compiled)
    if rows > 1:
        group = "(" + ", ".join(["?"] * len(order)) + ")"
        if sql.count(f"VALUES {group}") != 1:
            raise ValueError(f"unexpected upsert statement for {table.name}: {sql[:120]}")
        sql = sql.replace(f"VALUES {group}", "VALUES " + ", ".join([group] * rows))
    return sql


def pg_copy_upsert_sql(table: sa.Table, insert_only: Iterable[str] | None = None) -> tuple[str, str, str]:
    """PostgreSQL bulk upsert through ``COPY``: statements for a staging table and the merge.

    Rows are ``COPY``-ed into a session-local temporary table (``_seq`` numbers them
    in arrival order) and merged with one ``INSERT ... SELECT DISTINCT ON (key) ...
    ORDER BY key, _seq DESC ON CONFLICT (key) DO UPDATE ... WHERE ... IS DISTINCT FROM``:
    the same semantics as :func:`upsert_sql` (of two rows with one key the later wins;
    identical rows write nothing; ``insert_only`` columns are never updated), with one
    statement per flush instead of one per row (``bench/store_write.py`` on the CI
    machine: about 70k rows/s against 50k; the server's index maintenance dominates).

    Returns:
        ``(stage_name, create_stage_sql, merge_sql)``; the stage empties at each commit
        (``ON COMMIT DELETE ROWS``).
    """
    if insert_only is None:
        from db.tables import INSERT_ONLY

        insert_only = INSERT_ONLY.get(table.name, ())
    quote = postgresql.dialect().identifier_preparer.quote
    keep = set(insert_only)
    stage = f"tickgraph_stage_{table.name}"
    columns = [quote(c.name) for c in table.columns]
    key = [quote(c.name) for c in table.primary_key.columns]
    values = [quote(c.name) for c in table.columns if not c.primary_key and c.name not in keep]
    target = quote(table.name)
    create = (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target}) ON COMMIT DELETE ROWS; "
        f"ALTER TABLE {stage} ADD COLUMN IF NOT EXISTS _seq bigserial"
    )
    changed = " OR ".join(f"{target}.{v} IS DISTINCT FROM excluded.{v}" for v in values)
    merge = (
        f"INSERT INTO {target} ({', '.join(columns)}) "
        f"SELECT DISTINCT ON ({', '.join(key)}) {', '.join(columns)} FROM {stage} "
        f"ORDER BY {', '.join(key)}, _seq DESC "
        f"ON CONFLICT ({', '.join(key)}) DO "
        + (f"UPDATE SET {', '.join(f'{v} = excluded.{v}' for v in values)} WHERE {changed}" if values else "NOTHING")
    )
    return stage, create, merge


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
