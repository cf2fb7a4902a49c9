"""What signals add to the main graph's burst-mode time, on the input of bench/replay_throughput.py.

    python bench/signals_overhead.py [--symbols 50] [--target-ticks 5000000] [--backends local ray]

Input: the synthetic multi-symbol Parquet file of ``bench/replay_throughput.py`` (built
by its ``build_input``, cached under bench/data/). Three graphs, same input, burst mode
(no pacing), run end to end (drained):

  main        replay_throughput's graph: source -> normalizer -> bars (6 timeframes) ->
              SQLite store + Parquet sink (the main job's shape)
  +signals    main + the five signal nodes of config/replay.yaml (vwap
              deviation and spread on every trade/quote, tick-rate z-score, RSI and
              Bollinger %b on 1m bars), their rows not stored: the computation's cost
  +stored     main + the five signal nodes, every signal row upserted into the same
              SQLite store: the whole feature end to end

Prints seconds, the overhead of each over ``main`` (target: signals add at most 50%),
signal rows produced, and checks that the bars are identical in the three runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay_throughput import build_input, graph_file, run_graph  # noqa: E402

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


def variant(tmp: Path, data: Path, parallelism: int, kind: str, signal_parallelism: int = 1) -> Path:
    """The graph file of one variant (``main``, ``signals`` or ``stored``) in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    text = graph_file(tmp, data, parallelism, True).read_text()
    assert STORE_INPUTS in text, "bench/replay_throughput.py changed its store node"
    if kind != "main":
        text += SIGNAL_NODES.format(parallelism=signal_parallelism)
    if kind == "stored":
        inputs = ", ".join(["bars", *SIGNAL_IDS, "source.quarantine", "normalizer.quarantine", "bars.quarantine"])
        text = text.replace(STORE_INPUTS, f"inputs: [{inputs}]")
    path = tmp / f"{kind}.yaml"
    path.write_text(text)
    return path


def main() -> None:
    """Run the three graph variants per backend and print the times and overheads."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--target-ticks", type=int, default=5_000_000)
    parser.add_argument("--parallelism", type=int, default=2, help="bar shards (Ray runs)")
    parser.add_argument(
        "--signal-parallelism", type=int, default=1,
        help="tick-signal shards (Ray runs); 1 chains them into the normalizer's actor, as in config/replay.yaml",
    )
    parser.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    data = ROOT / "bench" / "data" / f"ticks_{args.symbols}x{args.target_ticks}.parquet"
    if not data.exists():
        started = time.perf_counter()
        rows = build_input(data, args.symbols, args.target_ticks)
        print(f"built {data.relative_to(ROOT)}: {rows:,} ticks in {time.perf_counter() - started:.1f} s")
    ticks = pq.ParquetFile(data).metadata.num_rows
    print(f"input: {ticks:,} ticks, {args.symbols} symbols (bench/replay_throughput.py's input)")

    results: dict[tuple[str, str], float] = {}
    signal_rows: dict[str, int] = {}
    bars: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends:
            parallelism = args.parallelism if backend == "ray" else 1
            signal_parallelism = args.signal_parallelism if backend == "ray" else 1
            if backend == "ray":
                import ray

                ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
            try:
                for kind in ("main", "signals", "stored"):
                    path = variant(tmp / f"{backend}_{kind}", data, parallelism, kind, signal_parallelism)
                    elapsed, summary = run_graph(path, backend)
                    results[(backend, kind)] = elapsed
                    bars[(backend, kind)] = summary["bars_confirmed"]
                    produced = sum(summary["nodes"][n]["rows_out"].get("signals", 0) for n in SIGNAL_IDS if n in summary["nodes"])
                    if produced:
                        signal_rows[kind] = produced
                    print(f"  {backend:<6}{kind:<9}{elapsed:8.2f} s  {ticks / elapsed:>12,.0f} ticks/s"
                          + (f"  {produced:,} signal rows" if produced else ""), flush=True)  # fmt: skip
            finally:
                if backend == "ray":
                    ray.shutdown()

    print()
    print(f"{'backend':<9}{'main s':>9}{'+signals s':>12}{'overhead':>10}{'+stored s':>11}{'overhead':>10}")
    for backend in args.backends:
        main_s, sig_s, stored_s = (results[(backend, k)] for k in ("main", "signals", "stored"))
        print(f"{backend:<9}{main_s:>9.2f}{sig_s:>12.2f}{sig_s / main_s - 1:>10.0%}{stored_s:>11.2f}{stored_s / main_s - 1:>10.0%}")
    print(f"signal rows per run: {max(signal_rows.values(), default=0):,} (target: signals add at most 50%)")
    first = next(iter(bars.values()))
    assert all(b == first for b in bars.values()), "the signal nodes changed the bars"


if __name__ == "__main__":
    main()
