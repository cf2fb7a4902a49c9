"""A pre-paper graph filled in from its manifest: the ``--set`` overrides ``python run.py pre-paper`` applies.

``config/pre_paper.yaml`` (or any graph with a ``pre_paper`` node) is the template. The
manifest decides what the upstream nodes must produce, so they are set from it, never
written twice by hand:

* the ``pre_paper`` node's ``manifest``;
* the bars node feeding it: its ``timeframes`` include the manifest's base timeframe;
* the normalizer feeding that bars node: its ``symbols`` are the manifest's;
* the source(s) feeding the normalizer: their ``symbols`` are the manifest's.

A *replayed session* (``replay``) swaps the source for a ``replay`` node of tick files
(the live graph otherwise unchanged) and runs the ``pre_paper`` node on event time, so a
replay at any speed gates and decides on the same bars as the live session would.

The overrides are ordinary ``NODE.KEY=VALUE`` strings (``graph/spec.py``), so the graph
file keeps its own directory for relative paths and is validated as written plus them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pre_paper.manifest import load_promoted

__all__ = ["GraphShapeError", "pre_paper_nodes", "manifest_overrides", "default_run_id"]


class GraphShapeError(ValueError):
    """The template has no ``pre_paper`` node, or not the source -> normalizer -> bars chain in front of it."""


def _nodes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["id"]: node for node in doc.get("nodes") or [] if isinstance(node, dict) and "id" in node}


def _upstream(node: dict[str, Any]) -> list[str]:
    return [ref.partition(".")[0] for ref in node.get("inputs") or []]


def pre_paper_nodes(doc: dict[str, Any]) -> dict[str, Any]:
    """The node ids of the template's chain: ``{"pre_paper", "bars", "normalizer", "sources"}``.

    Raises:
        GraphShapeError: no ``pre_paper`` node, or its bars/normalizer/sources are missing.
    """
    nodes = _nodes(doc)
    found = [i for i, n in nodes.items() if n.get("kind") == "pre_paper"]
    if len(found) != 1:
        raise GraphShapeError(f"a pre-paper graph has exactly one pre_paper node (found {len(found)})")
    bars = [u for u in _upstream(nodes[found[0]]) if nodes.get(u, {}).get("kind") == "bars"]
    if len(bars) != 1:
        raise GraphShapeError(f"the pre_paper node {found[0]!r} must read one bars node (inputs: {nodes[found[0]].get('inputs')})")
    normalizers = [u for u in _upstream(nodes[bars[0]]) if nodes.get(u, {}).get("kind") == "normalizer"]
    if len(normalizers) != 1:
        raise GraphShapeError(f"the bars node {bars[0]!r} must read one normalizer")
    sources = [u for u in _upstream(nodes[normalizers[0]]) if u in nodes]
    return {"pre_paper": found[0], "bars": bars[0], "normalizer": normalizers[0], "sources": sources}


def _flow(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # JSON is YAML flow syntax


def manifest_overrides(
    graph_path: str | Path, manifest: str | Path, replay: dict[str, Any] | None = None, run_id: str | None = None
) -> list[str]:
    """The ``--set`` strings that fill the template ``graph_path`` from ``manifest``.

    Args:
        graph_path: the template graph file.
        manifest: the backtest's ``run_manifest.json`` (verified here, before anything runs).
        replay: replace the source by a ``replay`` node with these params (``files``,
            ``speed``, ``start``, ``end``, ...), symbols set from the manifest; the
            ``pre_paper`` node then runs on event time.
        run_id: the audit directory's name (every ``pre_paper_audit`` node's ``run_id``).

    Raises:
        GraphShapeError: see :func:`pre_paper_nodes`.
        pre_paper.manifest.ManifestError: the manifest does not verify.
    """
    doc = yaml.safe_load(Path(graph_path).read_text(encoding="utf-8"))
    ids = pre_paper_nodes(doc)
    nodes = _nodes(doc)
    run = load_promoted(manifest)
    symbols = list(run.symbols)
    bars = nodes[ids["bars"]].get("params") or {}
    timeframes = list(bars.get("timeframes") or [])
    if run.timeframe not in timeframes:
        timeframes.append(run.timeframe)
    out = [
        f"{ids['pre_paper']}.manifest={run.path}",
        f"{ids['bars']}.timeframes={_flow(timeframes)}",
        f"{ids['normalizer']}.symbols={_flow(symbols)}",
    ]
    for source in ids["sources"]:
        if replay is not None:
            out += [f"{source}.kind=replay", f"{source}.params={_flow({**replay, 'symbols': symbols})}"]
        elif "symbols" in (nodes[source].get("params") or {}) or nodes[source].get("kind") in ("alpaca", "binance", "coinbase", "finnhub"):
            out.append(f"{source}.symbols={_flow(symbols)}")
    if replay is not None:
        out.append(f"{ids['pre_paper']}.clock=event")
    if run_id is not None:
        out += [f"{node_id}.run_id={run_id}" for node_id, node in nodes.items() if node.get("kind") == "pre_paper_audit"]
    return out


def default_run_id(manifest: str | Path, now_ns: int) -> str:
    """``pre_paper_<YYMMDD_HHMMSS>_<first symbol>_<timeframe>`` (the seed's run id form), UTC."""
    import datetime as dt

    run = load_promoted(manifest)
    stamp = dt.datetime.fromtimestamp(now_ns / 1e9, tz=dt.timezone.utc).strftime("%y%m%d_%H%M%S")
    symbol = "".join(c for c in run.symbols[0] if c.isalnum())
    return f"pre_paper_{stamp}_{symbol}_{run.timeframe}"
