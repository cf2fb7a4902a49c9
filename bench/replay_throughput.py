"""Replay throughput: the Ray graph vs the same operators in-process vs a pandas groupby.

    python bench/replay_throughput.py [--symbols 50] [--target-ticks 5000000] [--parallelism 2]

Input: the real fixtures (LOBSTER AMZN trades+quotes; Tardis BTCUSDT trades+quotes)
repeated with shifted times across many synthetic symbols: even symbols replay the
LOBSTER day, odd symbols the Tardis window moved onto the same date, each repeated
on consecutive days until the target size; one canonical Parquet file sorted by
event time (cached under bench/data/).

Measured in one run, same input, all six timeframes:
  1. ray      : the full graph on Ray (source -> normalizer -> bars x N shards ->
                SQLite store + Parquet sink), burst mode, end to end (drained).
  2. local    : the same graph, same operator code, chained in this process.
  3. local-ops: in-process source -> normalizer -> bars only (no sinks).
  4. pandas   : read the Parquet file, groupby (symbol, floored ts) per timeframe.
Prints ticks/s for each and the ratios; checks that 1m bar counts agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.file_replay import FileReplay  # noqa: E402
from graph.build import build_graph  # noqa: E402
from graph.operator import OperatorContext, Watermark  # noqa: E402
from graph.schemas import TICK  # noqa: E402
from graph.spec import load_graph  # noqa: E402
from graph.summary import build_summary  # noqa: E402

FIX = ROOT / "fixtures"
DAY_NS = 86_400 * 1_000_000_000
TIMEFRAMES = ["1s", "1m", "5m", "15m", "1h", "1d"]


#: The LOBSTER AMZN day (trades and quotes) as a file_replay input.
LOBSTER_AMZN = {
    "format": "lobster",
    "message_file": str(FIX / "lobster_amzn_l1/AMZN_2012-06-21_34200000_57600000_message_1.csv"),
    "orderbook_file": str(FIX / "lobster_amzn_l1/AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"),
    "symbol": "AMZN", "date": "2012-06-21",
}  # fmt: skip


def _read(files: list[dict]) -> pa.Table:
    source = FileReplay(FileReplay.Params.model_validate({"files": files}), OperatorContext(node_id="bench"))
    return pa.Table.from_batches([b for e in source.events() if not isinstance(e, Watermark) for s, b in [e] if s == "ticks"], schema=TICK)


def build_input(path: Path, symbols: int, target_ticks: int) -> int:
    """Write the synthetic multi-symbol canonical Parquet file; returns its row count."""
    lobster = _read([LOBSTER_AMZN]).to_pandas()
    tardis = _read([
        {"format": "tardis_trades", "path": str(FIX / "tardis_binance_futures_btcusdt/trades.csv")},
        {"format": "tardis_quotes", "path": str(FIX / "tardis_binance_futures_btcusdt/quotes.csv")},
    ]).to_pandas()  # fmt: skip
    # Move the Tardis window onto the LOBSTER session start (2012-06-21 13:30 UTC).
    tardis["ts"] += lobster["ts"].iloc[0] - tardis["ts"].iloc[0]
    tardis["seq"] = np.arange(len(tardis))  # trade ids and quote rows share one sequence here
    per_symbol = target_ticks // symbols
    frames = []
    for k in range(symbols):
        base = lobster if k % 2 == 0 else tardis
        copies = max(1, round(per_symbol / len(base)))
        for day in range(copies):
            part = base.copy()
            part["symbol"] = f"S{k:03d}"
            part["ts"] = part["ts"] + day * DAY_NS + k * 1_000  # 1 µs per symbol: interleaved, not tied
            part["seq"] = part["seq"] + day * 10_000_000
            part["provider"] = "bench"
            frames.append(part)
    table = pd.concat(frames, ignore_index=True)
    table = table.sort_values("ts", kind="stable").reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(table, schema=TICK, preserve_index=False), path, row_group_size=65_536)
    return len(table)


def ensure_input(symbols: int, target_ticks: int) -> Path:
    """The bench input's path under bench/data/, built by :func:`build_input` if missing."""
    data = ROOT / "bench" / "data" / f"ticks_{symbols}x{target_ticks}.parquet"
    if not data.exists():
        started = time.perf_counter()
        rows = build_input(data, symbols, target_ticks)
        print(f"built {data.relative_to(ROOT)}: {rows:,} ticks in {time.perf_counter() - started:.1f} s")
    return data


def graph_file(tmp: Path, data: Path, parallelism: int, sinks: bool) -> Path:
    """Write the bench graph (file_replay -> normalizer -> bars x ``parallelism`` [-> SQLite, Parquet]) under ``tmp``."""
    sink_nodes = f"""
  - id: store
    kind: sql_store
    inputs: [bars, source.quarantine, normalizer.quarantine, bars.quarantine]
    params: {{url: "sqlite:///{tmp / 'bench.db'}"}}
  - id: parquet
    kind: parquet_sink
    inputs: [bars]
    params: {{path: "{tmp / 'parquet'}"}}
""" if sinks else ""
    text = textwrap.dedent(f"""
name: bench
runtime: {{max_in_flight: 8, pump_events: 8}}
nodes:
  - id: source
    kind: file_replay
    params:
      batch_rows: 65536
      files: [{{format: canonical, path: "{data}"}}]
  - id: normalizer
    kind: normalizer
    inputs: [source]
  - id: bars
    kind: bars
    inputs: [normalizer]
    parallelism: {parallelism}
    key: symbol
    params: {{timeframes: {TIMEFRAMES}}}
""") + sink_nodes
    path = tmp / f"bench_{'sinks' if sinks else 'ops'}_{parallelism}.yaml"
    path.write_text(text)
    return path


def run_graph(path: Path, backend: str) -> tuple[float, dict]:
    """Run a graph file on ``backend`` (``local`` or ``ray``); returns (elapsed s, run summary dict)."""
    loaded = load_graph(path, env={})
    result = build_graph(loaded, backend=backend).run()
    return result.elapsed_s, build_summary(loaded, result)


def pandas_baseline(data: Path) -> tuple[float, dict[str, int]]:
    """Read the file and compute OHLCV+VWAP+count per (symbol, bar) for every timeframe."""
    started = time.perf_counter()
    df = pd.read_parquet(data, columns=["symbol", "ts", "price", "size", "seq"])
    trades = df[df["price"].notna()].copy()
    trades["pv"] = trades["price"] * trades["size"]
    counts = {}
    for tf, ns in {"1s": 1, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}.items():
        bar = trades["ts"] // (ns * 1_000_000_000)
        g = trades.groupby([trades["symbol"], bar], sort=True)
        out = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                    volume=("size", "sum"), pv=("pv", "sum"), trade_count=("price", "size"))  # fmt: skip
        out["vwap"] = out["pv"] / out["volume"]
        counts[tf] = len(out)
    return time.perf_counter() - started, counts


def main() -> None:
    """Parse the command line, run every configuration once, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--target-ticks", type=int, default=5_000_000)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2], help="bar shards for the Ray runs")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    data = ensure_input(args.symbols, args.target_ticks)
    ticks = pq.ParquetFile(data).metadata.num_rows
    print(f"input: {ticks:,} ticks, {args.symbols} symbols, timeframes {' '.join(TIMEFRAMES)}")

    import ray

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results: dict[str, float] = {}
        summaries = {}
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
        try:
            for parallelism in args.parallelism:
                (tmp / f"r{parallelism}").mkdir()
                elapsed, summaries[f"ray{parallelism}"] = run_graph(graph_file(tmp / f"r{parallelism}", data, parallelism, True), "ray")
                results[f"ray, bars x{parallelism} (end to end)"] = elapsed
        finally:
            ray.shutdown()
        (tmp / "l").mkdir()
        elapsed, summaries["local"] = run_graph(graph_file(tmp / "l", data, 1, True), "local")
        results["local (same graph in-process)"] = elapsed
        (tmp / "o").mkdir()
        elapsed, summaries["ops"] = run_graph(graph_file(tmp / "o", data, 1, False), "local")
        results["local-ops (no sinks)"] = elapsed
        elapsed, pandas_counts = pandas_baseline(data)
        results["pandas groupby (no sinks)"] = elapsed

    print()
    print(f"{'run':<34}{'seconds':>10}{'ticks/s':>14}")
    for name, seconds in results.items():
        print(f"{name:<34}{seconds:>10.2f}{ticks / seconds:>14,.0f}")
    local_s = results["local (same graph in-process)"]
    print()
    for parallelism in args.parallelism:
        ray_s = results[f"ray, bars x{parallelism} (end to end)"]
        print(f"ray x{parallelism}: {ticks / ray_s / 1e6:.2f} M ticks/s (target >= 1.0); "
              f"time vs in-process {ray_s / local_s:.2f}x (target <= 3x)")  # fmt: skip
    print(f"local-ops vs pandas groupby: {results['pandas groupby (no sinks)'] / results['local-ops (no sinks)']:.2f}x "
          "(>1: tickgraph's operators faster)")  # fmt: skip
    first = summaries[f"ray{args.parallelism[0]}"]["bars_confirmed"]
    ours = sum(v.get("1m", 0) for v in first.values())
    print(f"1m bars: tickgraph {ours:,}, pandas {pandas_counts['1m']:,} -> {'agree' if ours == pandas_counts['1m'] else 'DIFFER'}")
    for name, summary in summaries.items():
        assert summary["bars_confirmed"] == first, f"{name} produced different bars"


if __name__ == "__main__":
    main()
