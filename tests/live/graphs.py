"""Graph files derived from ``config/live.yaml`` for tests: same downstream, another source or settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import CONFIG, ROOT

LIVE_YAML = CONFIG / "live.yaml"


def derived_graph(
    path: Path,
    *,
    source: dict[str, Any] | None = None,
    symbols: list[str] | None = None,
    event_time: dict[str, Any] | None = None,
    outputs: Path | None = None,
) -> Path:
    """Write ``config/live.yaml`` with its ``source`` node replaced and outputs redirected.

    Args:
        path: the graph file to write.
        source: the new source node's ``kind`` and ``params`` (id stays ``source``).
        symbols: the normalizer's ``symbols``.
        event_time: replaces the ``event_time`` block.
        outputs: directory for the database (``db.sqlite``), bar Parquet (``pq``) and
            recordings (``rec``).
    """
    doc = yaml.safe_load(LIVE_YAML.read_text())
    nodes = {node["id"]: node for node in doc["nodes"]}
    if source is not None:
        nodes["source"].clear()
        nodes["source"].update({"id": "source", **source})
    if symbols is not None:
        nodes["normalizer"]["params"]["symbols"] = symbols
    if event_time is not None:
        doc["event_time"] = event_time
    if outputs is not None:
        url = f"sqlite:///{outputs / 'db.sqlite'}"
        nodes["store"]["params"]["url"] = url
        nodes["parquet"]["params"]["path"] = str(outputs / "pq")
        nodes["recorder"]["params"]["path"] = str(outputs / "rec")
        nodes["recorder"]["params"]["url"] = url
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` from the repository root (bounded in time)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env
    )
