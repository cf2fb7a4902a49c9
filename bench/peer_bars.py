"""Peer bench: tickgraph's bar operators in-process vs polars, same ticks, same bars.

    python bench/peer_bars.py [--one-symbol-ticks 5000000] [--symbols 50] [--target-ticks 5000000]

Two cases, both from ticks already in memory (Arrow), to bars out:

  1 symbol, 1m       one symbol's ticks (the LOBSTER AMZN day, trades and quotes,
                     repeated on consecutive days to --one-symbol-ticks), 1m bars only
  50 symbols x 5 tf  bench/replay_throughput.py's input (50 symbols, ~5.4M ticks),
                     bars of 1s 1m 5m 15m 1h

tickgraph: the ``bars`` operator (``actors/bars.py``) fed the TICK batches of 65,536 rows
with a watermark after each (as the graph does: forming rows emitted, bars confirmed as
the watermark passes, the rest at end of stream); and the same with the ``normalizer``
in front (``normalizer + bars``: what the graph runs per tick). polars: ``group_by`` on
(symbol, floor(ts / timeframe)) of the trades, open/close as first/last by (ts, seq),
high/low, volume, VWAP as sum(price x size) / sum(size), trade count; sorted. polars runs
on every core it sees (2 here) and, in a subprocess, on one (``POLARS_MAX_THREADS=1``);
tickgraph's operators run on one.

Every run's confirmed bars are checked against polars: same bars, OHLC and counts exact,
volume and VWAP within 1e-9 relative (tickgraph sums exactly in fixed point, polars in
float). Each configuration runs ``--rounds`` times (default 3) and the fastest is
reported (the first call of either library also pays its warm-up; this machine is shared).
Prints seconds, ticks/s and the ratio tickgraph / polars time (< 1: tickgraph faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from actors.bars import BarEngine  # noqa: E402
from actors.normalizer import Normalizer  # noqa: E402
from graph.operator import OperatorContext  # noqa: E402
from graph.schemas import TICK  # noqa: E402
from graph.timeframes import INTRADAY_NS  # noqa: E402
from replay_throughput import DAY_NS, LOBSTER_AMZN, _read, ensure_input  # noqa: E402

FIX = ROOT / "fixtures"
BATCH_ROWS = 65_536


def one_symbol_input(target_ticks: int) -> Path:
    """The LOBSTER day repeated on consecutive days to ``target_ticks`` ticks of one symbol (cached)."""
    path = ROOT / "bench" / "data" / f"ticks_1x{target_ticks}.parquet"
    if path.exists():
        return path
    day = _read([LOBSTER_AMZN]).to_pandas()
    copies = max(1, round(target_ticks / len(day)))
    frames = []
    for k in range(copies):
        part = day.copy()
        part["ts"] += k * DAY_NS
        part["seq"] += k * 10_000_000
        frames.append(part)
    table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), schema=TICK, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=BATCH_ROWS)
    return path


def tickgraph_bars(ticks: pa.Table, timeframes: list[str], normalize: bool) -> tuple[float, pa.Table]:
    """Feed the operators 65,536-tick batches, a watermark after each; (seconds, confirmed bars)."""
    batches = ticks.to_batches(max_chunksize=BATCH_ROWS)
    engine = BarEngine(BarEngine.Params(timeframes=timeframes), OperatorContext(node_id="bars"))
    normalizer = Normalizer(Normalizer.Params(), OperatorContext(node_id="normalizer")) if normalize else None
    confirmed: list[pa.RecordBatch] = []

    def keep(emits) -> None:
        confirmed.extend(b for stream, b in emits if stream == "bars")

    started = time.perf_counter()
    for batch in batches:
        watermark = int(batch.column("ts")[-1].as_py())
        if normalizer is not None:
            for stream, accepted in normalizer.on_batch("ticks", batch):
                if stream == "ticks":
                    keep(engine.on_batch("ticks", accepted))
            normalizer.on_watermark(watermark)
        else:
            keep(engine.on_batch("ticks", batch))
        keep(engine.on_watermark(watermark))
    keep(engine.on_eof())
    elapsed = time.perf_counter() - started
    table = pa.Table.from_batches(confirmed)
    return elapsed, table.filter(pc.equal(table.column("status"), "confirmed"))


def polars_bars(path: Path, timeframes: list[str]) -> tuple[float, pa.Table]:
    """polars from the ticks in memory: (seconds, bars sorted by symbol, timeframe, ts)."""
    import polars as pl

    frame = pl.from_arrow(pq.read_table(path, columns=["symbol", "ts", "price", "size", "seq"]))
    started = time.perf_counter()
    trades = frame.filter(pl.col("price").is_not_null()).sort(["ts", "seq"])  # within a group, rows keep this order
    parts = []
    for timeframe in timeframes:
        width = INTRADAY_NS[timeframe]
        parts.append(
            trades.group_by(["symbol", (pl.col("ts") // width * width).alias("bar")])
            .agg(
                pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
                pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
                pl.col("size").sum().alias("volume"), (pl.col("price") * pl.col("size")).sum().alias("pv"),
                pl.len().alias("trade_count"),
            )
            .with_columns((pl.col("pv") / pl.col("volume")).alias("vwap"), pl.lit(timeframe).alias("timeframe"))
        )  # fmt: skip
    bars = pl.concat(parts).sort(["symbol", "timeframe", "bar"])
    elapsed = time.perf_counter() - started
    return elapsed, bars.rename({"bar": "ts"}).to_arrow()


def check(ours: pa.Table, theirs: pa.Table, label: str) -> None:
    """Same bars; OHLC and counts exact, volume and VWAP to 1e-9 relative."""
    key = [("symbol", "ascending"), ("timeframe", "ascending"), ("ts", "ascending")]
    a = ours.take(pc.sort_indices(ours, sort_keys=key)).to_pandas()
    b = theirs.take(pc.sort_indices(theirs, sort_keys=key)).to_pandas()
    assert len(a) == len(b), f"{label}: {len(a)} bars vs polars {len(b)}"
    for column in ("symbol", "timeframe", "ts", "open", "high", "low", "close", "trade_count"):
        assert (a[column].to_numpy() == b[column].to_numpy()).all(), f"{label}: {column} differs"
    for column in ("volume", "vwap"):
        np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-9, err_msg=f"{label}: {column}")


def fastest(rounds: int, run) -> tuple[float, object]:
    """The fastest of ``rounds`` calls of ``run() -> (seconds, result)``, with its result."""
    best = None
    for _ in range(rounds):
        seconds, result = run()
        if best is None or seconds < best[0]:
            best = (seconds, result)
    return best


def polars_one_thread(path: Path, timeframes: list[str], rounds: int) -> float:
    """:func:`polars_bars` in a subprocess with ``POLARS_MAX_THREADS=1``; its fastest seconds."""
    code = (
        "import sys, json; from pathlib import Path; sys.path.insert(0, 'bench');"
        f"from peer_bars import polars_bars; print(json.dumps(min(polars_bars(Path({str(path)!r}), {timeframes!r})[0] "
        f"for _ in range({rounds}))))"
    )
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run both cases once and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one-symbol-ticks", type=int, default=5_000_000)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--target-ticks", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration; the fastest is reported")
    args = parser.parse_args()
    cases = [
        ("1 symbol, 1m", one_symbol_input(args.one_symbol_ticks), ["1m"]),
        (f"{args.symbols} symbols x 5 tf", ensure_input(args.symbols, args.target_ticks), ["1s", "1m", "5m", "15m", "1h"]),
    ]
    print(f"{'case':<20}{'run':<28}{'seconds':>9}{'ticks/s':>14}{'vs polars':>11}")
    for label, path, timeframes in cases:
        ticks = pq.read_table(path)
        n = ticks.num_rows
        polars_s, reference = fastest(args.rounds, lambda: polars_bars(path, timeframes))
        polars_1_s = polars_one_thread(path, timeframes, args.rounds)
        bars_s, bars = fastest(args.rounds, lambda: tickgraph_bars(ticks, timeframes, normalize=False))
        check(bars, reference, f"{label} bars")
        ops_s, ops = fastest(args.rounds, lambda: tickgraph_bars(ticks, timeframes, normalize=True))
        check(ops, reference, f"{label} normalizer + bars")
        rows = [
            (f"polars ({os.cpu_count()} threads)", polars_s),
            ("polars (1 thread)", polars_1_s),
            ("tickgraph bars", bars_s),
            ("tickgraph normalizer + bars", ops_s),
        ]
        for name, seconds in rows:
            print(f"{label:<20}{name:<28}{seconds:>9.3f}{n / seconds:>14,.0f}{seconds / polars_s:>10.2f}x")
        print(f"{'':<20}{len(reference):,} bars; {n:,} ticks ({int(pc.sum(pc.is_valid(ticks.column('price'))).as_py()):,} trades); "
              f"bars / polars 1 thread {bars_s / polars_1_s:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
