"""The run summary: what a graph run read, accepted, quarantined and produced.

Built from the hosts' metrics (``NodeHost.metrics``), so it is the same for Ray and
in-process runs. Counts add up by construction: every row a source reads leaves it
either as a tick or as a quarantine row, and every tick a normalizer receives leaves
it either accepted or quarantined.
"""

from __future__ import annotations

from typing import Any

from graph.driver import RunResult
from graph.spec import LoadedGraph

__all__ = ["build_summary", "format_summary"]


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value


def build_summary(loaded: LoadedGraph, result: RunResult) -> dict[str, Any]:
    """Aggregate per-shard metrics into the run summary (JSON-serialisable).

    Returns:
        ``{"graph", "graph_file", "ticks_read", "ticks_accepted", "quarantined"
        {reason: n}, "quarantined_total", "bars_confirmed" {symbol: {timeframe: n}},
        "elapsed_s", "ticks_per_s", "stopped_early", "parity" {stream: {"messages",
        "hash"}}, "nodes" {id: {...}}}``.
        ``ticks_read`` = rows out of source nodes (ticks + quarantined by the source);
        ``ticks_accepted`` = ticks out of ``normalizer`` nodes (or of the sources if
        the graph has no normalizer); ``ticks_per_s`` = ticks_read / elapsed_s.
    """
    kinds = {node.id: node.kind for node in loaded.spec.nodes}
    source_ids = {node.id for node in loaded.spec.nodes if _is_source(loaded, node.id)}
    ticks_read = 0
    accepted_by_normalizer = 0
    accepted_by_source = 0
    has_normalizer = False
    quarantined: dict[str, int] = {}
    bars_confirmed: dict[str, dict[str, int]] = {}
    bars_partial: dict[str, dict[str, int]] = {}
    parity: dict[str, dict[str, dict[str, Any]]] = {}  # parity: node id -> stream -> {messages, hash}
    nodes: dict[str, dict[str, Any]] = {}
    for host in result.hosts:
        node_id = host["node_id"]
        out = host["rows_out"]
        if node_id in source_ids:
            ticks_read += out.get("ticks", 0) + out.get("quarantine", 0)
            accepted_by_source += out.get("ticks", 0)
        if kinds[node_id] == "normalizer":
            has_normalizer = True
            accepted_by_normalizer += out.get("ticks", 0)
        _add(quarantined, host["quarantined"])
        for symbol, per_tf in host["operator"].get("bars_confirmed", {}).items():
            _add(bars_confirmed.setdefault(symbol, {}), per_tf)
        for symbol, per_tf in host["operator"].get("bars_partial", {}).items():
            _add(bars_partial.setdefault(symbol, {}), per_tf)
        if "parity" in host["operator"]:  # parity: final stream hashes of parity nodes
            parity[node_id] = host["operator"]["parity"]
        node = nodes.setdefault(node_id, {"kind": kinds[node_id], "rows_in": 0, "rows_out": {}, "shards": []})
        node["rows_in"] += host["rows_in"]
        _add(node["rows_out"], out)
        node["shards"].append({"shard": host["shard"], "rows_in": host["rows_in"], "operator": host["operator"]})
    elapsed = result.elapsed_s
    return {
        "graph": loaded.spec.name,
        "graph_file": str(loaded.path),
        "ticks_read": ticks_read,
        "ticks_accepted": accepted_by_normalizer if has_normalizer else accepted_by_source,
        "quarantined": dict(sorted(quarantined.items())),
        "quarantined_total": sum(quarantined.values()),
        "bars_confirmed": {s: dict(v) for s, v in sorted(bars_confirmed.items())},
        "elapsed_s": round(elapsed, 3),
        "ticks_per_s": round(ticks_read / elapsed, 1) if elapsed > 0 else None,
        "stopped_early": result.stopped_early,
        "run_id": result.run_id,
        "restarts": result.restarts,
        "checkpoint": result.checkpoint,
        "bars_partial": {s: dict(v) for s, v in sorted(bars_partial.items())},
        "parity": _parity_summary(parity),
        "nodes": nodes,
    }


def _parity_summary(per_node: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """parity: ``{stream: {"messages", "hash"}}`` of the graph's parity node.

    With several parity nodes, keys are ``"node_id.stream"``; no parity node gives ``{}``.
    """
    if len(per_node) == 1:
        return dict(sorted(next(iter(per_node.values())).items()))
    return {f"{node}.{stream}": value for node, streams in sorted(per_node.items()) for stream, value in sorted(streams.items())}


def _is_source(loaded: LoadedGraph, node_id: str) -> bool:
    from graph.registry import load_kind
    from graph.operator import Source

    return issubclass(load_kind(loaded.spec.node(node_id).kind), Source)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary for the terminal (plain text, fixed-width table of bars)."""
    lines = [
        f"graph {summary['graph']} ({summary['graph_file']})",
        f"  ticks read       {summary['ticks_read']:>12,}",
        f"  ticks accepted   {summary['ticks_accepted']:>12,}",
        f"  quarantined      {summary['quarantined_total']:>12,}"
        + (
            "  (" + ", ".join(f"{reason}: {n:,}" for reason, n in summary["quarantined"].items()) + ")"
            if summary["quarantined"]
            else ""
        ),
        f"  elapsed          {summary['elapsed_s']:>12.3f} s",
        f"  throughput       {summary['ticks_per_s'] or 0:>12,.0f} ticks/s",
    ]
    if summary["stopped_early"]:
        resume = f"; python run.py --resume {summary['run_id']} continues it" if summary.get("checkpoint") else ""
        lines.append(f"  stopped early (duration or interrupt): open bars stored as partial{resume}")
    for stream, tracked in summary.get("parity", {}).items():
        lines.append(f"  parity {stream:<10}{tracked['messages']:>12,} messages  sha256 {tracked['hash']}")
    bars = summary["bars_confirmed"]
    if bars:
        timeframes = sorted({tf for per in bars.values() for tf in per}, key=_tf_order)
        lines.append("  bars confirmed:")
        lines.append("    " + f"{'symbol':<12}" + "".join(f"{tf:>9}" for tf in timeframes))
        for symbol, per in bars.items():
            lines.append("    " + f"{symbol:<12}" + "".join(f"{per.get(tf, 0):>9,}" for tf in timeframes))
    return "\n".join(lines)


def _tf_order(tf: str) -> int:
    from graph.timeframes import TIMEFRAMES

    return TIMEFRAMES.index(tf) if tf in TIMEFRAMES else len(TIMEFRAMES)
