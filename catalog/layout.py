"""The tick catalog's layout: where each stream's rows live, and how files are named and typed.

::

    <catalog>/<stream>/symbol=<S>/date=<YYYY-MM-DD>/part-<first ts>-<last ts>.parquet

* ``stream`` is ``ticks`` (TICK rows) or ``signals`` (per-tick SIGNAL rows such as
  ``vwap_deviation_bps`` and ``spread_bps``): the tick-rate data. Bar-rate and relational
  data stay in SQL (``db/tables.py``).
* ``symbol`` is URI-encoded as pyarrow's hive partitioning does (``EUR/USD`` ->
  ``EUR%2FUSD``); ``date`` is the UTC date of the rows' event time.
* A file holds the stream schema's columns minus the partition column ``symbol``, with
  ``ts`` as ``timestamp[ns, UTC]`` (:func:`file_schema`), zstd-compressed, rows sorted by
  :data:`SORT_KEYS` (ticks: ``ts, seq``; signals: ``ts, name``). ``first ts`` and
  ``last ts`` are the int64 ns of its first and last row, so a reader prunes files by
  name before opening them, and two jobs over different ranges never write the same name.
* A file never spans two UTC dates nor two spans of ``file_span_s`` seconds of event
  time (epoch-aligned; ``catalog/writer.py``).

One definition of each rule, shared by the writer (``catalog/writer.py``), the readers
(``catalog/dataset.py``) and the SQL views (``catalog/query.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow as pa

from graph.schemas import SIGNAL, TICK

__all__ = [
    "CATALOG_ENV",
    "STREAMS",
    "SORT_KEYS",
    "IDENTITY_KEYS",
    "TS_TYPE",
    "NS_PER_DAY",
    "CatalogFile",
    "default_catalog_dir",
    "file_schema",
    "stream_schema",
    "partition_dir",
    "file_name",
    "parse_file_name",
    "utc_date",
    "date_start_ns",
]

#: Environment variable naming the catalog directory.
CATALOG_ENV = "TICKGRAPH_CATALOG_DIR"
#: The catalog's streams and the stream schema of each (``graph/schemas.py``).
STREAMS: dict[str, pa.Schema] = {"ticks": TICK, "signals": SIGNAL}
#: Row order inside a file (after the partition), per stream; ties keep arrival order.
SORT_KEYS: dict[str, tuple[str, ...]] = {"ticks": ("ts", "seq"), "signals": ("ts", "name")}
#: What identifies a row within its partition (symbol, date), per stream: a row whose
#: identity is already stored in another file of the partition is not written again.
#: A tick is (provider, ts, seq, trade or quote): a trade and a quote may share a seq.
IDENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "ticks": ("provider", "ts", "seq", "is_trade"),
    "signals": ("provider", "ts", "name"),
}
#: How ``ts`` is stored in the files.
TS_TYPE = pa.timestamp("ns", tz="UTC")
NS_PER_DAY = 86_400 * 1_000_000_000
_PARTITION = "symbol"
_FILE = re.compile(r"^part-(-?\d+)-(-?\d+)(?:-(\d+))?\.parquet$")
_ROOT = Path(__file__).resolve().parent.parent
_EPOCH = dt.date(1970, 1, 1)


def default_catalog_dir() -> Path:
    """``$TICKGRAPH_CATALOG_DIR``, else ``out/catalog`` in the repository (where
    ``config/replay.yaml``'s ``../out/catalog`` points)."""
    value = os.environ.get(CATALOG_ENV)
    return Path(value).expanduser().absolute() if value else _ROOT / "out" / "catalog"


def _check(stream: str) -> pa.Schema:
    try:
        return STREAMS[stream]
    except KeyError:
        raise ValueError(f"{stream!r} is not a catalog stream ({', '.join(STREAMS)})") from None


def file_schema(stream: str) -> pa.Schema:
    """The columns inside a file of ``stream``: its schema minus ``symbol``, ``ts`` as :data:`TS_TYPE`.

    Raises:
        ValueError: an unknown stream.
    """
    return pa.schema(
        [f.with_type(TS_TYPE) if f.name == "ts" else f for f in _check(stream) if f.name != _PARTITION]
    )


def stream_schema(stream: str) -> pa.Schema:
    """The stream schema (``TICK`` or ``SIGNAL``, ``ts`` int64 ns) rows are read back as."""
    return _check(stream)


def partition_dir(root: Path, stream: str, symbol: str, date: str) -> Path:
    """``<root>/<stream>/symbol=<URI-encoded symbol>/date=<date>``."""
    _check(stream)
    return Path(root) / stream / f"symbol={quote(symbol, safe='')}" / f"date={date}"


def file_name(first_ts: int, last_ts: int, suffix: int = 0) -> str:
    """``part-<first ts>-<last ts>.parquet`` (``-<suffix>`` before ``.parquet`` when > 0)."""
    return f"part-{first_ts}-{last_ts}" + (f"-{suffix}" if suffix else "") + ".parquet"


@dataclass(frozen=True, order=True)
class CatalogFile:
    """One file of the catalog, as its path names it.

    Attributes:
        symbol: the decoded partition value.
        first_ts, last_ts: int64 ns UTC of its first and last row (from the name).
        suffix: the name's collision suffix (0: none).
        path: the file.
    """

    symbol: str
    first_ts: int
    last_ts: int
    suffix: int
    path: Path

    def overlaps(self, start_ns: int | None, end_ns: int | None) -> bool:
        """Whether rows of ``[start_ns, end_ns)`` (None: unbounded) can be in this file."""
        return (start_ns is None or self.last_ts >= start_ns) and (end_ns is None or self.first_ts < end_ns)


def parse_file_name(path: Path) -> CatalogFile | None:
    """The :class:`CatalogFile` of a data file's path, or None for anything else (a hidden
    temporary file, a stray file): readers skip what this does not recognise."""
    match = _FILE.match(path.name)
    partition = path.parent.parent.name
    if match is None or not partition.startswith(f"{_PARTITION}="):
        return None
    symbol = unquote(partition.split("=", 1)[1])
    return CatalogFile(symbol, int(match.group(1)), int(match.group(2)), int(match.group(3) or 0), path)


def utc_date(ts: int) -> str:
    """The UTC date of ``ts`` (int ns) as ``YYYY-MM-DD``."""
    return (_EPOCH + dt.timedelta(days=int(ts) // NS_PER_DAY)).isoformat()


def date_start_ns(date: str) -> int:
    """UTC midnight (int ns) of ``YYYY-MM-DD``."""
    return (dt.date.fromisoformat(date) - _EPOCH).days * NS_PER_DAY
