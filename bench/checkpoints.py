"""Checkpoint cost and recovery time: the bench graph on Ray with checkpoints off, every
10 s and every 1 s, and one run whose bars#1 actor is killed mid-replay.

    python bench/checkpoints.py [--symbols 50] [--target-ticks 20000000] [--num-cpus 2]

Input: the bench input of ``bench/replay_throughput.py`` (real fixtures repeated across
synthetic symbols; cached under bench/data/), 20M ticks by default so that a run lasts
several 10 s intervals; a discarded warm-up run goes first. Graph: file_replay -> normalizer -> bars x2
-> SQLite store + Parquet, burst mode, end to end (drained).

Prints, from one run each: seconds, ticks/s, checkpoints completed, the cost of
checkpointing relative to the run without (target: at most 10% at 10 s), and for the
killed run the time from the kill being detected to the graph making progress again
(``RunResult.recoveries``: ``resumed_s - detected_s``) and its whole cost. Every run must
store the same bars (a hash of the sorted ``bars_ohlcv`` rows), else the bench fails.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay_throughput import ensure_input, graph_file  # noqa: E402

from graph.build import build_graph  # noqa: E402
from graph.spec import load_graph  # noqa: E402


def bars_digest(db: Path) -> str:
    """SHA-256 over every stored bar, sorted by primary key (repr of each row)."""
    h = hashlib.sha256()
    rows = sqlite3.connect(db).execute(
        "select symbol, timeframe, ts, open, high, low, close, volume, vwap, trade_count from bars_ohlcv "
        "order by symbol, timeframe, ts"
    )
    for row in rows:
        h.update(repr(row).encode())
    return h.hexdigest()


def run(tmp: Path, data: Path, interval_ms: int, kill_at: float | None = None, ticks: int = 0) -> dict:
    """One Ray run of the bench graph with checkpoints every ``interval_ms`` (0: off);
    ``kill_at``: kill bars#1 once this fraction of the ticks was read and a checkpoint is complete."""
    import ray

    tmp.mkdir()
    overrides = [f"runtime.checkpoint_interval_ms={interval_ms}", f"runtime.checkpoint_dir={tmp / 'ckpt'}"]
    loaded = load_graph(graph_file(tmp, data, 2, True), overrides, env={})
    graph = build_graph(loaded, backend="ray")
    killed: list[int] = []

    def progress(rows: int, watermark) -> None:
        if kill_at is not None and not killed and rows >= kill_at * ticks and graph.last_complete is not None:
            killed.append(rows)
            ray.kill(graph.hosts[("bars", 1)], no_restart=True)

    result = graph.run(on_progress=progress)
    # ids count up from 1, so the last complete id is the number of checkpoints taken
    return {"elapsed": result.elapsed_s, "restarts": result.restarts, "recoveries": result.recoveries,
            "checkpoints": result.checkpoint or 0, "bars": bars_digest(tmp / "bench.db")}  # fmt: skip


def main() -> None:
    """Parse the command line, run each configuration once, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--target-ticks", type=int, default=20_000_000, help="long enough for checkpoints at 10 s")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    data = ensure_input(args.symbols, args.target_ticks)
    ticks = pq.ParquetFile(data).metadata.num_rows
    print(f"input: {ticks:,} ticks, {args.symbols} symbols; graph: file_replay -> normalizer -> bars x2 -> SQLite + Parquet")

    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            run(tmp / "warm-up", data, 0)  # the first Ray run pays worker start-up and page cache
            runs = {
                "checkpoints off": run(tmp / "off", data, 0),
                "every 10 s": run(tmp / "10s", data, 10_000),
                "every 1 s": run(tmp / "1s", data, 1_000),
                "every 1 s, bars#1 killed at 40%": run(tmp / "kill", data, 1_000, kill_at=0.4, ticks=ticks),
            }
    finally:
        ray.shutdown()
    base = runs["checkpoints off"]["elapsed"]
    print(f"\n{'run':<34}{'seconds':>9}{'ticks/s':>13}{'checkpoints':>13}{'cost':>9}")
    for label, r in runs.items():
        print(f"{label:<34}{r['elapsed']:>9.2f}{ticks / r['elapsed']:>13,.0f}{r['checkpoints']:>13}"
              f"{(r['elapsed'] / base - 1) * 100:>8.1f}%")  # fmt: skip
    killed = runs["every 1 s, bars#1 killed at 40%"]
    print(f"\ncheckpoint cost at 10 s: {(runs['every 10 s']['elapsed'] / base - 1) * 100:.1f}% (target <= 10%); "
          f"at 1 s: {(runs['every 1 s']['elapsed'] / base - 1) * 100:.1f}%")
    for recovery in killed["recoveries"]:
        print(f"kill detected at {recovery['detected_s']:.2f} s, progress again at {recovery['resumed_s']:.2f} s: "
              f"{recovery['resumed_s'] - recovery['detected_s']:.2f} s to recover (restored checkpoint {recovery['checkpoint']})")
    assert killed["restarts"] >= 1, "the kill did not happen"
    digests = {r["bars"] for r in runs.values()}
    print(f"bars identical across all runs: {len(digests) == 1}")
    assert len(digests) == 1, "a run stored different bars"


if __name__ == "__main__":
    main()
