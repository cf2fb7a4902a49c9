"""The replay graph a service job runs: the configured graph, its source set from the request,
plus an ``api`` node that publishes the graph's bars back into the service.

``POST /v1/replay/ticks`` runs the service's replay graph (``config/replay.yaml`` by
default) -- the same downstream graph as ``run.py --graph replay.yaml`` -- with:

* its one ``replay`` node's ``symbols``, ``start``, ``end``, ``speed`` and ``job_id``
  set from the request (``provider: tick_data`` replays the store's ``tick_data``
  instead of the files); a paced request (``speed > 0``) also gets
  ``batch_interval_ms: 100``, since a burst graph (``replay.yaml``) cuts batches by size
  only and its first 65,536-tick batch would be due hours of event time later;
* every ``sql_store`` node writing to the service's store;
* the service's ``replay_overrides`` (``run.py serve --set``);
* one more sink, ``api_publish`` (kind ``api`` with ``publish_url``), fed by every
  node's ``bars`` and ``signals`` streams, which sends them to the service
  (``service/wire.py``) for its WebSocket clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from graph.spec import GraphError, LoadedGraph, NodeSpec, load_graph

__all__ = ["PUBLISHER_ID", "graph_symbols", "replay_node", "replay_overrides", "with_publisher"]

#: Node id of the publisher added to a service job's graph.
PUBLISHER_ID = "api_publish"
#: ``batch_interval_ms`` of a paced service replay (the replayer's own paced default).
PACED_INTERVAL_MS = 100


def _kind_class(kind: str) -> type:
    from graph.registry import load_kind

    return load_kind(kind)


def graph_symbols(graph: str | Path) -> list[str]:
    """The symbols a graph's normalizer nodes accept (their ``symbols`` params; [] if none).

    Raises:
        GraphError: the graph does not load.
    """
    loaded = load_graph(graph)
    found: list[str] = []
    for node in loaded.spec.nodes:
        if node.kind == "normalizer":
            found += [s for s in node.params.get("symbols") or [] if s not in found]
    return found


def replay_node(loaded: LoadedGraph) -> str:
    """The id of the graph's one ``replay`` node.

    Raises:
        GraphError: none or several.
    """
    ids = [node.id for node in loaded.spec.nodes if node.kind == "replay"]
    if len(ids) != 1:
        raise GraphError(str(loaded.path), [f"a service replay graph needs exactly one 'replay' node, found {len(ids)}"])
    return ids[0]


def replay_overrides(
    loaded: LoadedGraph,
    *,
    job_id: str,
    store_url: str,
    provider: str,
    symbols: list[str],
    start_ns: int,
    end_ns: int,
    speed: float,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """``--set`` strings that turn the graph into one service replay job (see the module docstring)."""
    source = replay_node(loaded)

    def value(v: Any) -> str:
        return orjson.dumps(v).decode()  # JSON is YAML flow syntax

    out = [
        f"{source}.job_id={job_id}",
        f"{source}.symbols={value(symbols)}",
        f"{source}.start={start_ns}",
        f"{source}.end={end_ns}",
        f"{source}.speed={value(speed)}",
    ]
    if speed > 0:  # paced: batches of 100 ms of event time (a burst graph cuts by size only)
        out.append(f"{source}.batch_interval_ms={PACED_INTERVAL_MS}")
    if provider == "tick_data":
        out += [f"{source}.files=[]", f"{source}.database_url={value(store_url)}"]
    out += [f"{node.id}.url={value(store_url)}" for node in loaded.spec.nodes if node.kind == "sql_store"]
    return out + list(extra)


def with_publisher(loaded: LoadedGraph, url: str, key: str, run: str) -> LoadedGraph:
    """``loaded`` plus a :data:`PUBLISHER_ID` node (kind ``api``) publishing to ``url`` as run ``run``.

    Its inputs are every node's ``bars`` and ``signals`` output streams.

    Raises:
        GraphError: the graph has no ``bars`` stream, or already has a node of that id.
    """
    from actors.api import ApiParams

    if any(node.id == PUBLISHER_ID for node in loaded.spec.nodes):
        raise GraphError(str(loaded.path), [f"node id {PUBLISHER_ID!r} is reserved for the service's publisher"])
    edges = [
        (node.id, stream)
        for node in loaded.spec.nodes
        for stream in ("bars", "signals")
        if stream in _kind_class(node.kind).outputs
    ]
    if not any(stream == "bars" for _, stream in edges):
        raise GraphError(str(loaded.path), ["a service replay graph needs a node with a 'bars' output"])
    params = ApiParams.model_validate({"publish_url": url, "publish_key": key, "publish_run": run}).model_dump(mode="json")
    node = NodeSpec(id=PUBLISHER_ID, kind="api", params=params, inputs=[f"{n}.{s}" for n, s in edges])
    spec = loaded.spec.model_copy(update={"nodes": [*loaded.spec.nodes, node]})
    return LoadedGraph(
        path=loaded.path, spec=spec, order=(*loaded.order, PUBLISHER_ID), edges={**loaded.edges, PUBLISHER_ID: edges}
    )
