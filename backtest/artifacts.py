"""The files of one run (the hashed artifacts listed in ``backtest/manifest.py``).

JSON artifacts: ``config.json`` is the canonical JSON the run hash is computed from
(``backtest/hashing.py``); ``metrics.json`` and ``validation.json`` are sorted-key JSON
with two-space indents (readable, and one spelling per value: floats in shortest
round-trip form, undefined values null). Parquet artifacts are the ``portfolio`` node's
tables, written by :func:`actors.portfolio.write_parquet` (fixed options, no pandas
metadata). No artifact holds a wall-clock time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from actors.portfolio import write_parquet
from backtest.hashing import canonical_json
from backtest.report import render_report

__all__ = ["json_text", "write_run_files", "identity"]

_TABLES = ("trades", "fills", "equity", "decisions")


def json_text(value: Any) -> str:
    """Sorted-key, indented JSON with a trailing newline (NaN refused)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_run_files(
    run_dir: Path, run_hash: str, config_doc: dict[str, Any], tables: dict[str, pa.Table],
    metrics: dict[str, Any], validation: dict[str, Any],
) -> None:  # fmt: skip
    """Write every hashed artifact of a run into ``run_dir`` (created).

    Args:
        run_dir: the (staging) directory of the run.
        run_hash: its hash (for the report's title).
        config_doc: the canonical config as a JSON object.
        tables: ``equity``, ``fills``, ``trades``, ``decisions`` (canonical row order).
        metrics: ``metrics.json`` content.
        validation: ``validation.json`` content (``{}`` when no suite ran).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(canonical_json(config_doc), encoding="utf-8")
    (run_dir / "metrics.json").write_text(json_text(metrics), encoding="utf-8")
    (run_dir / "validation.json").write_text(json_text(validation), encoding="utf-8")
    for name in _TABLES:
        write_parquet(tables[name], run_dir / f"{name}.parquet")
    report = render_report(run_hash, config_doc, metrics, tables["equity"], tables["fills"], tables["trades"])
    (run_dir / "report.html").write_text(report, encoding="utf-8")


def identity(run_hash: str, config_doc: dict[str, Any], data: dict[str, Any], warmup_bars: int, version: str) -> dict[str, Any]:
    """The manifest's identity sections: what the run was, and what a pre-paper run needs.

    ``data``: symbols, timeframe, range, annualisation, content hash and inputs;
    ``strategy``: name, params, timeframe, ``warmup_bars`` (the history a live run needs
    before its first decision); ``execution`` and ``risk``: the fill and sizing settings.
    """
    return {
        "run_hash": run_hash,
        "tickgraph_version": version,
        "data": {
            "source": config_doc["data"]["source"], "symbols": config_doc["symbols"], "timeframe": config_doc["timeframe"],
            "start": config_doc["start"], "end": config_doc["end"], "bars_per_year": config_doc["bars_per_year"], **data,
        },
        "strategy": {**config_doc["strategy"], "timeframe": config_doc["timeframe"], "warmup_bars": warmup_bars},
        "indicators": config_doc["indicators"],
        "execution": config_doc["execution"],
        "risk": config_doc["risk"],
        "initial_cash": config_doc["initial_cash"],
    }  # fmt: skip


def copy_tree(source: Path, target: Path) -> None:
    """Copy a run directory (used to keep a mismatching ``--force`` rerun for inspection)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
