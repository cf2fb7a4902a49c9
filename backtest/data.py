"""A run's input data: which symbols it has, and its content hash (checked before any work).

* Tick files (``data.source: ticks``): the symbols each file declares (a LOBSTER
  entry's ``symbol``; the ``symbol`` column of a Tardis file's first row; the distinct
  ``symbol`` values of a canonical file) and each file's SHA-256.
* The store (``data.source: store``): the symbols of its ``bars_ohlcv`` table, and
  the content hash of exactly the rows the run reads (bars of the symbols, timeframe
  and range, plus the named signals; :func:`backtest.hashing.table_sha256`), so
  unrelated writes to the store do not change the run hash.
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import pyarrow as pa

from backtest.config import ConfigError, RunConfig, StoreData
from backtest.hashing import canonical_json, file_sha256, sha256_hex, table_sha256

__all__ = ["available_symbols", "check_symbols", "data_identity"]


def _file_symbols(spec: dict[str, Any], base_dir: Path) -> set[str]:
    fmt = spec.get("format")
    if fmt == "lobster":
        return {spec["symbol"]}
    path = Path(spec.get("path", ""))
    path = path if path.is_absolute() else base_dir / path
    if fmt in ("tardis_trades", "tardis_quotes"):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            row = next(reader, None)
        return {row["symbol"]} if row and row.get("symbol") else set()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return set(pq.read_table(path, columns=["symbol"]).column("symbol").unique().to_pylist())
    from pyarrow import csv as pacsv

    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=["symbol"]))
    return set(table.column("symbol").unique().to_pylist())


def _store_path_problem(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        if not Path(parsed.database).is_file():
            return f"data.url: the SQLite store {parsed.database} does not exist (run the main job first: python run.py --graph replay.yaml)"
    return None


def available_symbols(config: RunConfig, base_dir: Path) -> set[str]:
    """The symbols the run's data holds (see the module docstring).

    Raises:
        ConfigError: a store that does not exist or cannot be read; a tick file that
            cannot be read (naming ``data.files[i]``).
    """
    if isinstance(config.data, StoreData):
        from db.engine import absolute_sqlite_url
        from db.read import distinct_values_async

        url = absolute_sqlite_url(config.data.url)
        problem = _store_path_problem(url)
        if problem:
            raise ConfigError("run config", [problem])
        try:
            return set(asyncio.run(distinct_values_async(url, "bars_ohlcv", "symbol")))
        except Exception as exc:  # any driver error: name the field, never the URL
            raise ConfigError("run config", [f"data.url: cannot read bars_ohlcv from the store: {type(exc).__name__}"]) from None
    found: set[str] = set()
    for i, spec in enumerate(config.data.files):
        try:
            found |= _file_symbols(spec, base_dir)
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise ConfigError("run config", [f"data.files[{i}]: cannot read its symbols: {type(exc).__name__}: {exc}"]) from None
    return found


def check_symbols(config: RunConfig, base_dir: Path) -> None:
    """Every configured symbol must be in the data.

    Raises:
        ConfigError: ``symbols[1]: unknown symbol 'XYZ' (the data has: AMZN, BTCUSDT)``.
    """
    have = available_symbols(config, base_dir)
    problems = [
        f"symbols[{i}]: unknown symbol {s!r} (the data has: {', '.join(sorted(have)) or 'none'})"
        for i, s in enumerate(config.symbols)
        if s not in have
    ]
    if problems:
        raise ConfigError("run config", problems)


def data_identity(config: RunConfig, base_dir: Path) -> dict[str, Any]:
    """``{"content_sha256": ..., "inputs": [...]}``: the hash of everything the run reads.

    Tick files: ``inputs`` = ``[{"file": name, "sha256": ...}]`` (file names only, so the
    hash does not depend on where the checkout lives); store: ``[{"table": "bars_ohlcv",
    "rows": n, "sha256": ...}, {"table": "signals", ...}]``.
    """
    if isinstance(config.data, StoreData):
        from actors.bar_replay import BarReplayParams, read_stored_bars
        from backtest.graphs import signal_name

        params = BarReplayParams(
            url=config.data.url, symbols=list(config.symbols), timeframe=config.timeframe, start=config.start,
            end=config.end, signals=sorted(signal_name(i.kind, i.params) for i in config.indicators),
        )  # fmt: skip
        bars, signals = read_stored_bars(params)
        inputs = [
            {"table": "bars_ohlcv", "rows": bars.num_rows, "sha256": table_sha256(bars)},
            {"table": "signals", "rows": signals.num_rows, "sha256": table_sha256(signals)},
        ]
    else:
        inputs = []
        for spec in config.data.files:
            for key in ("path", "message_file", "orderbook_file"):
                if key in spec:
                    path = Path(spec[key]) if Path(spec[key]).is_absolute() else base_dir / spec[key]
                    inputs.append({"file": path.name, "sha256": file_sha256(path)})
    return {"content_sha256": sha256_hex(canonical_json(inputs)), "inputs": inputs}
