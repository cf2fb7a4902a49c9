"""``python run.py export``: stored ticks, bars or signals to Parquet or CSV.

    python run.py export bars --symbols AMZN,BTCUSDT --start 2012-06-21 --end 2012-06-22 \\
        --timeframe 1m --output out/bars_1m.parquet
    python run.py export signals --symbols AMZN --start 2012-06-21T13:30:00Z \\
        --end 2012-06-21T20:00:00Z --names spread_bps --format csv --output out/spread.csv

Times are ISO 8601; a time without a zone is UTC and a bare date is its UTC midnight.
The range is half open, ``[start, end)``, on event time (bars: the bar open time).
``--database-url`` defaults to ``$TICKGRAPH_DATABASE_URL``, else ``sqlite:///tickgraph.db``
(the main job's default); ``--catalog-dir`` (ticks and per-tick signals) to
``$TICKGRAPH_CATALOG_DIR``, else ``out/catalog``. ``--format`` defaults to ``csv`` for a ``.csv`` output, else
``parquet``. The logic is ``db/export.py``; each export is a ``job_runs`` row.

Exit codes: 0 written (also when no rows matched: the file then has the schema and no
rows, and the message says so); 2 bad arguments (one ``error:`` line naming the
argument, no traceback, nothing written); 1 the database or the file system failed
during the export (the job row is marked failed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from graph.times import iso_ns

__all__ = ["main", "parse_args", "parse_time"]

_DEFAULT_URL = "sqlite:///tickgraph.db"


def parse_time(text: str, argument: str) -> int:
    """ISO 8601 date or date-time -> int64 ns UTC (no zone: UTC; bare date: UTC midnight).

    Nanosecond fractions are kept (``2012-06-21T13:30:00.017459617Z``).

    Raises:
        ValueError: ``--start '2012-13-01': not an ISO 8601 date/time ...``.
    """
    value = text.strip()
    fraction_ns = 0
    try:
        if "T" not in value and " " not in value:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        else:
            head, dot, rest = value.partition(".")
            if dot:  # keep up to 9 fraction digits (datetime keeps 6)
                digits = len(rest) - len(rest.lstrip("0123456789"))
                fraction, zone = rest[:digits], rest[digits:]
                if not 1 <= len(fraction) <= 9:
                    raise ValueError("1 to 9 fraction digits")
                fraction_ns = int(fraction.ljust(9, "0"))
                value = head + zone
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(
            f"{argument} {text!r}: not an ISO 8601 date/time (e.g. 2012-06-21, 2012-06-21T13:30:00Z, "
            "2012-06-21T09:30:00-04:00)"
        ) from None
    seconds = int(moment.timestamp())
    return seconds * 1_000_000_000 + fraction_ns


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``export`` arguments (see module docstring); argparse exits 2 on bad syntax."""
    parser = argparse.ArgumentParser(
        prog="python run.py export",
        description="Export stored ticks, bars or signals to a Parquet or CSV file (one job_runs row per export).",
    )
    parser.add_argument("dataset", choices=("ticks", "bars", "signals"), help="what to export")
    parser.add_argument("--symbols", required=True, help="comma-separated symbols, e.g. AMZN,BTCUSDT")
    parser.add_argument("--start", required=True, help="ISO 8601 start (inclusive); no zone = UTC")
    parser.add_argument("--end", required=True, help="ISO 8601 end (exclusive); no zone = UTC")
    parser.add_argument("--timeframe", default=None, help="bars only: 1s 1m 5m 15m 1h 1d (default 1m)")
    parser.add_argument("--format", dest="fmt", default=None, help="parquet or csv (default: from the output suffix, else parquet)")
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default $TICKGRAPH_DATABASE_URL or sqlite:///tickgraph.db)")
    parser.add_argument("--catalog-dir", type=Path, default=None, help="tick catalog (default $TICKGRAPH_CATALOG_DIR or out/catalog)")
    parser.add_argument("--provider", default=None, help="ticks/signals only: keep one provider")
    parser.add_argument("--names", default=None, help="signals only: comma-separated signal names")
    parser.add_argument("--output", required=True, type=Path, help="file to write (replaced if it exists)")
    return parser.parse_args(argv)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    """Run the export command; returns the exit code."""
    args = parse_args(argv)
    from catalog.layout import default_catalog_dir
    from db.engine import StoreError
    from db.export import ExportError, ExportRequest, run_export

    try:
        start_ns = parse_time(args.start, "--start")
        end_ns = parse_time(args.end, "--end")
    except ValueError as e:
        return _fail(str(e), 2)
    fmt = args.fmt or ("csv" if args.output.suffix.lower() == ".csv" else "parquet")
    timeframe = args.timeframe if args.timeframe is not None or args.dataset != "bars" else "1m"
    request = ExportRequest(
        dataset=args.dataset,
        url=args.database_url or os.environ.get("TICKGRAPH_DATABASE_URL") or _DEFAULT_URL,
        symbols=[s.strip() for s in args.symbols.split(",")],
        start_ns=start_ns,
        end_ns=end_ns,
        output=args.output,
        fmt=fmt.lower(),
        timeframe=timeframe,
        provider=args.provider,
        names=None if args.names is None else [n.strip() for n in args.names.split(",") if n.strip()],
        catalog_dir=args.catalog_dir.expanduser().absolute() if args.catalog_dir is not None else default_catalog_dir(),
    )
    try:
        result = run_export(request)
    except ExportError as e:
        return _fail(str(e), 2)
    except StoreError as e:
        return _fail(str(e), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    what = f"{request.dataset}" + (f" {request.timeframe}" if request.dataset == "bars" else "")
    scope = f"{', '.join(request.symbols)}; {iso_ns(start_ns)} to {iso_ns(end_ns)}"
    if result.rows == 0:
        print(
            f"no {what} rows matched ({scope}): wrote an empty {request.fmt} file with the schema "
            f"({len(result.schema)} columns) to {result.output}; job_runs id {result.job_id}"
        )
    else:
        print(f"exported {result.rows:,} {what} rows ({scope}) to {result.output} ({request.fmt}); job_runs id {result.job_id}")
    return 0


