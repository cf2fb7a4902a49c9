"""What signals add to the main graph's burst-mode time, on the input of bench/replay_throughput.py.

    python bench/signals_overhead.py [--symbols 50] [--target-ticks 5000000]
                                     [--backends local ray] [--graphs bars replay]
                                     [--repeat 1]

Input: the synthetic multi-symbol Parquet file of ``bench/replay_throughput.py`` (built
by its ``build_input``, cached under bench/data/). Two graph families, same input, burst
mode (no pacing), run end to end (drained), three variants each:

  bars      replay_throughput's graph: source -> normalizer -> bars (6 timeframes) ->
            SQLite store (bars, quarantine) + Parquet sink
  replay    config/replay.yaml itself, only its source swapped for the bench file: the
            main job's graph, every tick and per-tick signal in the tick catalog, bars
            and bar-level signals in SQLite, plus the parity tracker

  main      the graph without the five signal nodes
  +signals  with the five signal nodes of config/replay.yaml (vwap deviation and spread
            on every trade/quote, tick-rate z-score, RSI and Bollinger %b on 1m bars),
            their rows not stored: the computation's cost
  +stored   with the signal nodes, every signal row upserted into the same SQLite store
            (for ``replay``: config/replay.yaml exactly as shipped)
  +confl.   as +stored, with ``conflate_ms`` (default 1000) on vwap_deviation_bps and
            spread_bps: their last row per symbol per interval is stored

Prints seconds, the overhead of each over ``main`` (issue 4's target: signals add at most
50%), signal rows produced, and checks that the bars are identical in all runs of a
graph family.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay_throughput import ensure_input, graph_file, run_graph  # noqa: E402

SIGNAL_NODES = """
  - id: signals_vwap_deviation_bps
    kind: vwap_deviation_bps
    inputs: [normalizer]
    parallelism: {parallelism}
    key: symbol
  - id: signals_spread_bps
    kind: spread_bps
    inputs: [normalizer]
    parallelism: {parallelism}
    key: symbol
  - id: signals_tick_rate_zscore
    kind: tick_rate_zscore
    inputs: [normalizer]
    params: {{interval: 1s, window: 60}}
  - id: signals_rsi
    kind: rsi
    inputs: [bars]
    params: {{timeframe: 1m, period: 14}}
  - id: signals_bollinger_pctb
    kind: bollinger_pctb
    inputs: [bars]
    params: {{timeframe: 1m, period: 20, num_std: 2}}
"""
SIGNAL_IDS = ["signals_vwap_deviation_bps", "signals_spread_bps", "signals_tick_rate_zscore", "signals_rsi", "signals_bollinger_pctb"]
STORE_INPUTS = "inputs: [bars, source.quarantine, normalizer.quarantine, bars.quarantine]"
KINDS = ("main", "signals", "stored", "conflated")
TICK_SIGNALS = ("vwap_deviation_bps", "spread_bps")  # the kinds that take conflate_ms


def bars_variant(
    tmp: Path, data: Path, parallelism: int, kind: str, signal_parallelism: int = 1, conflate_ms: int = 0
) -> Path:
    """The ``bars`` family's graph file of one variant (``main``, ``signals``, ``stored``, ``conflated``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    text = graph_file(tmp, data, parallelism, True).read_text()
    assert STORE_INPUTS in text, "bench/replay_throughput.py changed its store node"
    if kind != "main":
        nodes = SIGNAL_NODES.format(parallelism=signal_parallelism)
        if kind == "conflated":
            for name in TICK_SIGNALS:
                nodes = nodes.replace(f"kind: {name}\n", f"kind: {name}\n    params: {{conflate_ms: {conflate_ms}}}\n")
        text += nodes
    if kind in ("stored", "conflated"):
        inputs = ", ".join(["bars", *SIGNAL_IDS, "source.quarantine", "normalizer.quarantine", "bars.quarantine"])
        text = text.replace(STORE_INPUTS, f"inputs: [{inputs}]")
    path = tmp / f"{kind}.yaml"
    path.write_text(text)
    return path


def replay_variant(tmp: Path, data: Path, kind: str, conflate_ms: int = 0) -> Path:
    """The ``replay`` family: config/replay.yaml with its source reading ``data``.

    Everything else is the shipped graph (bars parallelism, signal params, store and
    catalog inputs, Parquet sink, parity tracker), with outputs under ``tmp`` (a fresh
    catalog per run) and no parity proof. ``main`` drops the signal nodes (and the store
    and catalog inputs that name them), ``signals`` keeps the nodes but not their
    ``signals`` rows in the store or the catalog (their quarantine still goes to the
    store), ``stored`` is the shipped graph, ``conflated``
    the shipped graph with ``conflate_ms`` on the per-tick signals.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    spec = copy.deepcopy(yaml.safe_load((ROOT / "config" / "replay.yaml").read_text()))
    ids = {node["id"] for node in spec["nodes"] if node["id"].startswith("signals")}
    assert ids, "config/replay.yaml has no signal nodes"
    nodes = []
    for node in spec["nodes"]:
        if node["id"] in ids and kind == "main":
            continue
        params = node.get("params", {})
        if node["kind"] == "replay":
            params.update(files=[{"format": "canonical", "path": str(data)}], job_database_url=f"sqlite:///{tmp / 'jobs.db'}")
        elif node["kind"] == "normalizer":
            params.pop("symbols", None)  # the bench's 50 synthetic symbols
        elif node["kind"] in TICK_SIGNALS and kind == "conflated":
            params["conflate_ms"] = conflate_ms
        elif node["kind"] == "sql_store":
            params["url"] = f"sqlite:///{tmp / 'store.db'}"
            node["inputs"] = [
                name for name in node["inputs"]
                if name.split(".")[0] not in ids or kind in ("stored", "conflated") or (kind == "signals" and "." in name)
            ]  # fmt: skip
        elif node["kind"] == "catalog":  # ticks and the per-tick signals (a fresh catalog per run)
            params["path"] = str(tmp / "catalog")
            node["inputs"] = [name for name in node["inputs"] if name.split(".")[0] not in ids or kind in ("stored", "conflated")]
        elif node["kind"] == "parquet_sink":
            params["path"] = str(tmp / "parquet")
        elif node["kind"] == "parity":
            params["proof_path"] = ""
        node["params"] = params
        nodes.append(node)
    spec["nodes"] = nodes
    path = tmp / f"replay_{kind}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def schedule(graphs: list[str], repeat: int) -> list[tuple[str, int, str]]:
    """(graph, round, variant) in run order: per graph, ``repeat`` rounds of every variant.

    Round r starts at variant ``r mod 4``, so no variant always runs first or last
    (slow drift of this shared machine's load then spreads over all of them), and each
    round's variants run minutes apart at most, which is what the paired ratios need.
    """
    return [
        (graph, r, KINDS[(r + i) % len(KINDS)]) for graph in graphs for r in range(repeat) for i in range(len(KINDS))
    ]


def main() -> None:
    """Run every variant per graph family and backend (``--repeat`` rounds); print the times and overheads."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--target-ticks", type=int, default=5_000_000)
    parser.add_argument("--parallelism", type=int, default=2, help="bar shards (bars family, Ray runs)")
    parser.add_argument(
        "--signal-parallelism", type=int, default=1,
        help="tick-signal shards (bars family, Ray runs); 1 chains them into the normalizer's actor, as in config/replay.yaml",
    )  # fmt: skip
    parser.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--graphs", nargs="+", default=["bars", "replay"], choices=["bars", "replay"])
    parser.add_argument("--conflate-ms", type=int, default=1000, help="conflation of the +confl. variant")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="rounds per graph and backend, each running every variant (order rotated per round); the "
             "table then gives the median time and the median and range of the per-round overheads",
    )  # fmt: skip
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")

    data = ensure_input(args.symbols, args.target_ticks)
    ticks = pq.ParquetFile(data).metadata.num_rows
    print(f"input: {ticks:,} ticks, {args.symbols} symbols (bench/replay_throughput.py's input)")

    results: dict[tuple[str, str, str], list[float]] = {}  # one time per round
    stored: dict[tuple[str, str, str], dict[str, int]] = {}
    bars: dict[str, dict[tuple[str, str], dict]] = {graph: {} for graph in args.graphs}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends:
            if backend == "ray":
                import ray

                ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
            try:
                for graph, round_, kind in schedule(args.graphs, args.repeat):
                    where = tmp / f"{backend}_{graph}_{kind}_{round_}"
                    if graph == "bars":
                        parallelism = args.parallelism if backend == "ray" else 1
                        signal_parallelism = args.signal_parallelism if backend == "ray" else 1
                        path = bars_variant(where, data, parallelism, kind, signal_parallelism, args.conflate_ms)
                    else:
                        path = replay_variant(where, data, kind, args.conflate_ms)
                    elapsed, summary = run_graph(path, backend)
                    results.setdefault((backend, graph, kind), []).append(elapsed)
                    bars[graph][(backend, kind, round_)] = summary["bars_confirmed"]
                    written: dict[str, int] = {}
                    for shard in summary["nodes"]["store"]["shards"]:
                        for table, n in shard["operator"].get("rows_written", {}).items():
                            written[table] = written.get(table, 0) + n
                    stored[(backend, graph, kind)] = written
                    produced = sum(summary["nodes"][n]["rows_out"].get("signals", 0) for n in summary["nodes"] if n.startswith("signals"))
                    print(f"  {backend:<6}{graph:<7}{kind:<10}r{round_ + 1:<3}{elapsed:8.2f} s  {ticks / elapsed:>11,.0f} ticks/s  "
                          f"signal rows {produced:>10,}  stored rows {written}", flush=True)  # fmt: skip
            finally:
                if backend == "ray":
                    ray.shutdown()

    print()
    spread = args.repeat > 1
    print(
        f"{'graph':<8}{'backend':<9}{'main s':>9}"
        + "".join(f"{'+' + k + ' s':>14}{'overhead':>10}" + (f"{'range':>14}" if spread else "") for k in KINDS[1:])
    )
    for graph in args.graphs:
        for backend in args.backends:
            main_s = results[(backend, graph, "main")]
            line = f"{graph:<8}{backend:<9}{statistics.median(main_s):>9.2f}"
            for k in KINDS[1:]:
                seconds = results[(backend, graph, k)]
                ratios = [v / m - 1 for v, m in zip(seconds, main_s)]  # paired: same round
                line += f"{statistics.median(seconds):>14.2f}{statistics.median(ratios):>10.0%}"
                if spread:
                    line += f"{f'{min(ratios):.0%}..{max(ratios):.0%}':>14}"
            print(line)
    if spread:
        print(f"({args.repeat} rounds: median times; overhead = median of the per-round ratios to that round's main)")
    print(f"(+conflated: conflate_ms {args.conflate_ms} on {', '.join(TICK_SIGNALS)})")
    print("target (issue 4): signals add at most 50% to the main graph's burst-mode time")
    for graph in args.graphs:
        first = next(iter(bars[graph].values()))
        assert all(b == first for b in bars[graph].values()), f"the signal nodes changed the bars ({graph})"


if __name__ == "__main__":
    main()
