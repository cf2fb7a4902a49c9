"""A run config as a graph: ``config/backtest.yaml`` (tick files) or ``config/backtest_store.yaml``
(stored bars) with the run's data, symbols, strategy, execution and parallelism filled in.

The template's own settings (runtime knobs, normalizer checks, ...) are kept; the
generated graph is written next to the run's staged outputs (``graph.yaml``, absolute
paths) and loaded through ``graph/spec.py`` like any graph file, then run on Ray or
in-process. The ``portfolio`` node writes the run's tables into the staging directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from graph.registry import load_kind
from backtest.config import SIGNAL_KINDS, RunConfig, StoreData
from backtest.engine import execution_params
from graph.spec import CONFIG_DIR, LoadedGraph, load_graph
from strategies.base import strategy_class

__all__ = ["TEMPLATES", "signal_name", "graph_document", "load_run_graph", "run_graph", "read_outputs"]

#: Template graph per data source.
TEMPLATES = {"ticks": CONFIG_DIR / "backtest.yaml", "store": CONFIG_DIR / "backtest_store.yaml"}
_FILE_KEYS = ("path", "message_file", "orderbook_file")
OUTPUTS = ("equity", "fills", "trades", "decisions")


def signal_name(kind: str, params: dict[str, Any]) -> str:
    """The ``signals.name`` that a signal node of ``kind`` with ``params`` writes."""
    cls = load_kind(kind)
    model = cls.Params.model_validate(params)
    return model.name or cls.default_name(model)


def _absolute(files: list[dict[str, Any]], base_dir: Path) -> list[dict[str, Any]]:
    out = []
    for spec in files:
        spec = dict(spec)
        for key in _FILE_KEYS:
            if key in spec and not Path(spec[key]).expanduser().is_absolute():
                spec[key] = str((base_dir / spec[key]).resolve())
        out.append(spec)
    return out


def _node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    for node in doc["nodes"]:
        if node["id"] == node_id:
            return node
    raise KeyError(f"template graph has no node {node_id!r}")


def graph_document(config: RunConfig, staging: Path, parallelism: int = 2, base_dir: Path | None = None) -> dict[str, Any]:
    """The graph (as a YAML document) that runs ``config``, writing its tables to ``staging``.

    Args:
        config: the run.
        staging: directory the ``portfolio`` node writes into.
        parallelism: shards of the keyed nodes (bars, signals, strategy, execution).
        base_dir: where relative file paths in ``config.data`` resolve (default cwd).
    """
    base_dir = Path(base_dir or Path.cwd())
    store = isinstance(config.data, StoreData)
    doc = yaml.safe_load(TEMPLATES["store" if store else "ticks"].read_text(encoding="utf-8"))
    symbols, tf = list(config.symbols), config.timeframe
    names = {ind.kind: signal_name(ind.kind, ind.params) for ind in config.indicators}
    source = _node(doc, "source")
    if store:
        source["params"].update(url=config.data.url, symbols=symbols, timeframe=tf, start=config.start, end=config.end,
                                signals=sorted(names.values()))  # fmt: skip
        upstream = ["source"]
    else:
        source["params"].update(files=_absolute(config.data.files, base_dir), symbols=symbols, start=config.start, end=config.end)
        _node(doc, "normalizer")["params"]["symbols"] = symbols
        bars = _node(doc, "bars")
        bars.update(parallelism=parallelism)
        bars["params"].update(timeframes=[tf], sessions=dict(config.data.sessions) or bars["params"].get("sessions", {}))
        upstream = ["bars"]
        for ind in config.indicators:
            params = dict(ind.params)
            if ind.kind == "vwap_deviation_bps" and "sessions" not in params:
                params["sessions"] = bars["params"]["sessions"]
            if SIGNAL_KINDS[ind.kind] == "bars":
                params.setdefault("timeframe", tf)
            node_id = f"signal_{ind.kind}"
            inputs = ["normalizer"] if SIGNAL_KINDS[ind.kind] == "ticks" else ["bars"]
            doc["nodes"].insert(len(doc["nodes"]) - 3, {"id": node_id, "kind": ind.kind, "inputs": inputs,
                                                         "parallelism": parallelism, "key": "symbol", "params": params})  # fmt: skip
            upstream.append(node_id)
    declared = getattr(strategy_class(config.strategy.name), "signal", None)
    strategy = _node(doc, "strategy")
    strategy.update(inputs=upstream, parallelism=parallelism)
    strategy["params"] = {
        "strategy": config.strategy.name, "params": dict(config.strategy.params), "timeframe": tf,
        "signal": names.get(declared) if declared else None, "spread": names.get("spread_bps", "spread_bps"),
    }  # fmt: skip
    execution = _node(doc, "execution")
    execution.update(parallelism=parallelism)
    execution["params"] = execution_params(config).model_dump(mode="json")
    _node(doc, "portfolio")["params"] = {"symbols": symbols, "initial_cash": config.initial_cash, "timeframe": tf, "path": str(staging)}
    return doc


def load_run_graph(config: RunConfig, staging: Path, parallelism: int = 2, base_dir: Path | None = None) -> LoadedGraph:
    """Write :func:`graph_document` to ``staging/graph.yaml`` and validate it (``graph/spec.py``).

    Raises:
        graph.spec.GraphError: the generated graph is invalid (a missing tick file, ...).
    """
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / "graph.yaml"
    path.write_text(yaml.safe_dump(graph_document(config, staging, parallelism, base_dir), sort_keys=False), encoding="utf-8")
    return load_graph(path, env={})


def run_graph(loaded: LoadedGraph, backend: str = "ray", on_progress: Callable[[int, int | None], None] | None = None) -> Any:
    """Build and run the backtest graph (``ray`` needs ``ray.init`` first); returns its RunResult.

    Raises:
        graph.runtime.NodeFailure: a node failed (names the node and shard).
    """
    from graph.build import build_graph

    return build_graph(loaded, backend=backend).run(on_progress=on_progress)


def read_outputs(staging: Path) -> dict[str, Any]:
    """The tables the ``portfolio`` node wrote: ``equity``, ``fills``, ``trades``, ``decisions`` (Arrow)."""
    return {name: pq.read_table(staging / f"{name}.parquet") for name in OUTPUTS}
