"""``python run.py query "SQL"``: a user's SQL over the tick catalog and the SQL store (DuckDB).

    python run.py query "SELECT symbol, avg(value) AS avg_spread_bps FROM signals
                         WHERE name = 'spread_bps' GROUP BY symbol ORDER BY 2 DESC LIMIT 10"
    python run.py query "SELECT * FROM ticks WHERE symbol = 'AMZN'" --output out/amzn.parquet

Views: ``ticks``, ``signals``, ``bars_ohlcv``, ``job_runs``, ``quarantine``, ``tick_data`` and
the macro ``replay_signals(run_id)`` (``catalog/query.py``); times are ``TIMESTAMPTZ`` with
nanoseconds (``epoch_ns(ts)`` is the stored int64). ``--catalog-dir`` defaults to
``$TICKGRAPH_CATALOG_DIR``, else ``out/catalog`` (the main job's); ``--database-url`` to
``$TICKGRAPH_DATABASE_URL``, else ``sqlite:///tickgraph.db``.

Output: a table of the first ``--max-rows`` rows on stdout, or every row to ``--output``
(Parquet, zstd, or CSV with a header; by ``--format`` or the file's suffix), streamed in
batches so a large result never has to fit in memory; written to a temporary name and
renamed. Exit codes: 0 done; 2 a query DuckDB cannot run or a bad argument (one ``error:``
line); 1 the store could not be read; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main", "parse_args"]

_DEFAULT_URL = "sqlite:///tickgraph.db"
_BATCH_ROWS = 262_144


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``query`` arguments (see the module docstring); argparse exits 2 on bad syntax."""
    parser = argparse.ArgumentParser(
        prog="python run.py query",
        description="Run SQL (DuckDB) over the tick catalog and the SQL store: views ticks, signals, "
        "bars_ohlcv, job_runs, quarantine, tick_data; macro replay_signals(run_id).",
    )
    parser.add_argument("sql", help="the query, e.g. \"SELECT count(*) FROM ticks\"")
    parser.add_argument("--catalog-dir", type=Path, default=None, help="tick catalog (default $TICKGRAPH_CATALOG_DIR or out/catalog)")
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default $TICKGRAPH_DATABASE_URL or sqlite:///tickgraph.db)")
    parser.add_argument("--output", type=Path, default=None, help="write every row to this file instead of printing")
    parser.add_argument("--format", dest="fmt", choices=("parquet", "csv"), default=None, help="output format (default: from the suffix, else parquet)")
    parser.add_argument("--max-rows", type=int, default=50, help="rows printed without --output (default 50)")
    return parser.parse_args(argv)


def _fail(message: str, code: int) -> int:
    from graph.secrets import redact

    print(f"error: {redact(message)}", file=sys.stderr)
    return code


def _write(reader, output: Path, fmt: str) -> int:
    """Stream a RecordBatchReader to ``output`` (temporary name, then rename); returns rows."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    rows = 0
    try:
        if fmt == "parquet":
            with pq.ParquetWriter(temporary, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        else:
            with pa_csv.CSVWriter(temporary, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows


def _show(relation, max_rows: int) -> str:
    """The first ``max_rows`` rows as a text table, and whether there were more."""
    import pandas as pd

    table = relation.limit(max_rows + 1).fetch_arrow_table()
    frame = table.slice(0, max_rows).to_pandas()
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        text = frame.to_string(index=False) if len(frame) else f"(no rows; columns: {', '.join(table.column_names)})"
    more = table.num_rows > max_rows
    return text + (f"\n... more rows than --max-rows {max_rows}; --output FILE writes all of them" if more else "")


def main(argv: list[str]) -> int:
    """Run the query command; returns the exit code."""
    args = parse_args(argv)
    import duckdb
    import sqlalchemy as sa

    from catalog.layout import default_catalog_dir
    from catalog.query import QueryError, run_query
    from catalog.reader import StoreReader
    from db.engine import StoreError

    if args.max_rows < 1:
        return _fail(f"--max-rows {args.max_rows}: must be at least 1", 2)
    url = args.database_url or os.environ.get("TICKGRAPH_DATABASE_URL") or _DEFAULT_URL
    catalog_dir = args.catalog_dir.expanduser().absolute() if args.catalog_dir is not None else default_catalog_dir()
    if catalog_dir.exists() and not catalog_dir.is_dir():
        return _fail(f"--catalog-dir: {catalog_dir} is not a directory", 2)
    try:
        reader = StoreReader(catalog_dir, url)
        connection, relation = run_query(reader, args.sql)
        if args.output is None:
            print(_show(relation, args.max_rows))
            return 0
        output = args.output.expanduser().absolute()
        fmt = args.fmt or ("csv" if output.suffix.lower() == ".csv" else "parquet")
        rows = _write(relation.to_arrow_reader(_BATCH_ROWS), output, fmt)
        print(f"wrote {rows:,} rows ({len(relation.columns)} columns) to {output} ({fmt})")
        return 0
    except QueryError as exc:
        return _fail(f"query: {exc}", 2)
    except duckdb.Error as exc:
        return _fail(f"query: {str(exc).strip().splitlines()[0]}", 2)
    except (StoreError, sa.exc.SQLAlchemyError, OSError) as exc:
        return _fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1)
    except ValueError as exc:  # a URL that is not one
        return _fail(f"--database-url: {exc}", 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
