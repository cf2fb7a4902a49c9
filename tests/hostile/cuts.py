"""Small files cut from the real fixtures, with hostile edits, and a graph that reads them.

Every hostile-input test starts from real rows (fixtures/README.md) and changes, inserts
or corrupts a few, so the expected outcome is known row by row: the untouched rows must
come through exactly, each bad row must be one quarantine row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tests.conftest import LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, TARDIS_TRADES

TARDIS_HEADER = b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount"


def fixture_lines(path: Path, count: int, skip_header: bool) -> list[bytes]:
    """The first ``count`` data lines of a fixture, as bytes without terminators."""
    lines = path.read_bytes().splitlines()
    return lines[1 : count + 1] if skip_header else lines[:count]


def write_lines(path: Path, lines: Sequence[bytes], header: bytes | None = None) -> Path:
    """Write ``lines`` (bytes, one row each) after an optional header, ``\\n``-terminated."""
    body = ([header] if header is not None else []) + list(lines)
    path.write_bytes(b"\n".join(body) + b"\n")
    return path


def tardis_cut(
    path: Path,
    rows: int = 500,
    replace: Mapping[int, bytes] | None = None,
    insert: Mapping[int, Sequence[bytes]] | None = None,
) -> Path:
    """The first ``rows`` Tardis BTCUSDT trades, with rows replaced and lines inserted.

    Args:
        replace: data row -> its new line (0-based row of the cut).
        insert: data row -> lines inserted before that row (raw bytes, may be binary).
    """
    lines = fixture_lines(TARDIS_TRADES, rows, skip_header=True)
    for row, line in (replace or {}).items():
        lines[row] = line
    for row in sorted(insert or {}, reverse=True):
        lines[row:row] = list(insert[row])
    return write_lines(path, lines, TARDIS_HEADER)


def tardis_field(line: bytes, name: str, value: bytes) -> bytes:
    """``line`` with the Tardis trades field ``name`` set to ``value``."""
    fields = line.split(b",")
    fields[TARDIS_HEADER.split(b",").index(name.encode())] = value
    return b",".join(fields)


def tardis_frame(path: Path = TARDIS_TRADES, rows: int | None = None) -> pd.DataFrame:
    """The cut's rows as pandas reads them (independent of tickgraph): ts in ns, price, size, id."""
    frame = pd.read_csv(path, nrows=rows)
    return pd.DataFrame(
        {"ts": frame["timestamp"] * 1000, "price": frame["price"], "size": frame["amount"], "seq": frame["id"]}
    )


def lobster_cut(directory: Path, rows: int = 500, book: Mapping[int, bytes] | None = None) -> dict[str, Any]:
    """The first ``rows`` LOBSTER AMZN messages and orderbook rows; ``book`` replaces orderbook rows.

    Returns:
        The replay ``files`` entry for the pair.
    """
    directory.mkdir(parents=True, exist_ok=True)
    messages = write_lines(directory / "message.csv", fixture_lines(LOBSTER_MESSAGES, rows, skip_header=False))
    books = fixture_lines(LOBSTER_ORDERBOOK, rows, skip_header=False)
    for row, line in (book or {}).items():
        books[row] = line
    orderbook = write_lines(directory / "orderbook.csv", books)
    return {
        "format": "lobster", "message_file": str(messages), "orderbook_file": str(orderbook),
        "symbol": "AMZN", "date": "2012-06-21",
    }  # fmt: skip


def tardis_spec(path: Path) -> dict[str, Any]:
    """The replay ``files`` entry for a Tardis trades file."""
    return {"format": "tardis_trades", "path": str(path)}


def write_graph(
    tmp_path: Path,
    files: list[dict[str, Any]],
    *,
    symbols: list[str] | None = None,
    event_time: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    parquet: bool = False,
    name: str = "hostile",
) -> Path:
    """A graph file: replay(files) -> normalizer -> bars -> sql_store (+ parquet_sink).

    The store (``<tmp_path>/store.db``) takes ticks, confirmed bars, every quarantine
    stream and the replay's job row.
    """
    url = f"sqlite:///{tmp_path / 'store.db'}"
    nodes = [
        {"id": "source", "kind": "replay", "params": {"files": files, "job_database_url": url, **(source or {})}},
        {"id": "normalizer", "kind": "normalizer", "inputs": ["source"], "params": {"symbols": symbols}},
        {"id": "bars", "kind": "bars", "inputs": ["normalizer"],
         "params": {"sessions": {"AMZN": {"tz": "America/New_York", "open": "09:30", "close": "16:00"}}}},
        {"id": "store", "kind": "sql_store", "params": {"url": url},
         "inputs": ["bars", "normalizer", "source.quarantine", "normalizer.quarantine", "bars.quarantine"]},
    ]  # fmt: skip
    if parquet:
        nodes.append({"id": "parquet", "kind": "parquet_sink", "inputs": ["bars"], "params": {"path": str(tmp_path / "parquet")}})
    doc: dict[str, Any] = {"name": name, "nodes": nodes}
    if event_time:
        doc["event_time"] = event_time
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run_graph(graph: Path, backend: str = "local", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run a graph file (in-process by default); returns the run summary."""
    from graph.build import build_graph
    from graph.spec import load_graph
    from graph.summary import build_summary

    loaded = load_graph(str(graph), list(overrides), env={})
    return build_summary(loaded, build_graph(loaded, backend=backend).run())


def store_url(tmp_path: Path) -> str:
    """The SQLite URL :func:`write_graph` stores into."""
    return f"sqlite:///{tmp_path / 'store.db'}"


def table(tmp_path: Path, name: str) -> pd.DataFrame:
    """A table of the test's store, ordered by its primary key."""
    from db.read import read_table
    from db.tables import metadata

    return read_table(store_url(tmp_path), metadata.tables[name]).to_pandas()
