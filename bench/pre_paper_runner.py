"""What the history gate costs: the pre_paper operator against the backtest's strategy node alone.

    python bench/pre_paper_runner.py [--symbols 50] [--days 1]

Input: SYNTHETIC 1m bars (a seeded random walk) on every NYSE regular-session minute of
``--days`` trading days (390 bars a day) for ``--symbols`` symbols, dual_sma 10/30 from a
real backtest manifest (the fixtures' AMZN day, computed first, not timed). Measured in
one run, in-process, one core:

  strategy     the ``strategy`` node (actors/strategy.py) fed every bar, one batch per
               minute (all symbols): the backtest's decision path.
  pre_paper    the ``pre_paper`` node on the same batches, cold cache (a NO-SIGNALS
               warm-up of 40 bars per symbol): per bar the cache write, the history check
               against the calendar, the strategy node; per watermark the staleness
               check of every symbol.
  ... live     a watermark after every minute (one bar per symbol per call, as live);
  ... burst    no watermark until end-of-stream (a replay at speed 0: each symbol's bars
               reach the strategy node in runs).
  check        ``pre_paper.history.assess`` alone on a 41-bar window: the per-bar check.
  warm start   ``ensure_history`` for every symbol from an empty cache, the bars fetched
               from a backtest Parquet provider (one file of every symbol's bars).

Ratios: pre_paper time / strategy time (the gate's overhead), bars/s of each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pre_paper import PrePaper, PrePaperParams  # noqa: E402
from actors.strategy import StrategyNode, StrategyNodeParams  # noqa: E402
from backtest.config import parse_run_config  # noqa: E402
from backtest.runner import run_backtest  # noqa: E402
from graph.operator import OperatorContext  # noqa: E402
from graph.schemas import BAR, TICK  # noqa: E402
from pre_paper.calendars import trading_calendar  # noqa: E402
from pre_paper.history import assess  # noqa: E402
from pre_paper.loader import ensure_history  # noqa: E402
from pre_paper.manifest import load_promoted  # noqa: E402
from pre_paper.providers.parquet import ParquetProvider  # noqa: E402

MINUTE = 60 * 10**9


def manifest(root: Path, symbols: list[str], start: int) -> Path:
    """A real backtest manifest for ``symbols`` (dual_sma 10/30) over a tiny SYNTHETIC tick file."""
    n = len(symbols)
    ticks = root / "ticks.parquet"
    root.mkdir(parents=True, exist_ok=True)
    none = [None] * n
    pq.write_table(pa.table({"symbol": symbols, "ts": [start + i for i in range(n)], "price": [100.0] * n, "size": [1.0] * n,
                             "side": none, "bid": none, "ask": none, "bid_size": none, "ask_size": none, "provider": ["bench"] * n,
                             "seq": list(range(n)), "origin": ["replay"] * n, "advances_watermark": none}, schema=TICK), ticks)  # fmt: skip
    config = parse_run_config({
        "symbols": symbols, "timeframe": "1m", "start": start, "end": start + 86_400 * 10**9,
        "data": {"source": "ticks", "files": [{"format": "canonical", "path": str(ticks)}]},
        "strategy": {"name": "dual_sma", "params": {"fast": 10, "slow": 30}},
    })  # fmt: skip
    return run_backtest(config, root=root / "backtests").run_dir / "run_manifest.json"


def minute_batches(symbols: list[str], days: int) -> tuple[np.ndarray, list[pa.RecordBatch]]:
    """One BAR batch per NYSE minute holding every symbol's bar (SYNTHETIC random walks)."""
    calendar = trading_calendar("XNYS")
    start = int(pd.Timestamp("2024-03-04T00:00:00-05:00").value)
    slots = calendar.slots_between("1m", start, start + 7 * 86_400 * 10**9)[: 390 * days]
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, (len(symbols), len(slots))), axis=1))
    batches = []
    for j, ts in enumerate(slots.tolist()):
        c = close[:, j]
        o = close[:, j - 1] if j else c
        n = len(symbols)
        columns = {"symbol": pa.array(symbols), "timeframe": pa.array(["1m"] * n), "ts": pa.array([ts] * n, pa.int64()),
                   "open": pa.array(o), "high": pa.array(np.maximum(o, c)), "low": pa.array(np.minimum(o, c)), "close": pa.array(c),
                   "volume": pa.array(np.full(n, 100.0)), "vwap": pa.array((o + c) / 2), "trade_count": pa.array(np.ones(n, np.int64)),
                   "status": pa.array(["confirmed"] * n)}  # fmt: skip
        batches.append(pa.RecordBatch.from_arrays([columns[f.name] for f in BAR], schema=BAR))
    return slots, batches


def run(op, slots: np.ndarray, batches: list[pa.RecordBatch], burst: bool = False) -> float:
    """Live pace: a watermark after every minute's batch. Burst: every batch, then end-of-stream."""
    started = time.perf_counter()
    for ts, batch in zip(slots.tolist(), batches):
        op.on_batch("bars", batch)
        if not burst:
            op.on_watermark(ts + MINUTE)
    op.on_eof()
    return time.perf_counter() - started


def main() -> None:
    """Run the measurements of the module docstring and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=1)
    args = parser.parse_args()
    symbols = [f"S{i:02d}" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slots, batches = minute_batches(symbols, args.days)
        path = manifest(tmp, symbols, int(slots[0]))
        promoted = load_promoted(path)
        bars = len(slots) * len(symbols)
        print(f"{args.symbols} symbols x {len(slots)} 1m bars = {bars:,} bars; dual_sma 10/30 (manifest {promoted.run_hash[:12]})")

        times = {}
        for mode in ("live", "burst"):
            node = StrategyNode(StrategyNodeParams.model_validate(promoted.strategy_params), OperatorContext("strategy"))
            times["strategy", mode] = run(node, slots, batches, burst=mode == "burst")
            params = PrePaperParams.model_validate({"manifest": str(path), "cache": str(tmp / f"cache-{mode}.db"),
                                                    "calendars": {"default": "XNYS"}, "clock": "event"}, context={"base_dir": tmp})  # fmt: skip
            op = PrePaper(params, OperatorContext("pre_paper", base_dir=tmp, run_id="bench"))
            times["pre_paper", mode] = run(op, slots, batches, burst=mode == "burst")
            decided = sum(r.counts["decisions"] for r in op.runners.values())
            op.close()

        calendar = trading_calendar("XNYS")
        window = slots[100:141]
        now = int(window[-1]) + MINUTE
        reps = 2000
        started = time.perf_counter()
        for _ in range(reps):
            assess(window, calendar, "1m", now, required=41)
        t_check = (time.perf_counter() - started) / reps

        table = pa.Table.from_batches(batches).select(["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap"])
        pq.write_table(table, tmp / "history.parquet")
        provider = ParquetProvider(tmp / "history.parquet")
        started = time.perf_counter()
        for symbol in symbols:
            ensure_history(symbol, "1m", "1m", None, pd.Timestamp(now, tz="UTC"), tmp / "warm.db", provider, True, calendar="XNYS", required_bars=41)
        t_warm = time.perf_counter() - started

    print(f"{'run':<22}{'seconds':>10}{'bars/s':>12}")
    for (name, mode), seconds in times.items():
        print(f"{name + ', ' + mode:<22}{seconds:>10.3f}{bars / seconds:>12,.0f}")
    for mode in ("live", "burst"):
        print(f"pre_paper / strategy time, {mode}: {times['pre_paper', mode] / times['strategy', mode]:.2f}x")
    print(f"({decided:,} bars decided, {bars - decided:,} NO-SIGNALS warm-up bars)")
    print(f"history check (assess, 41-bar window): {t_check * 1e6:.1f} us")
    print(f"warm start (ensure_history + Parquet backfill of 41 bars), {len(symbols)} symbols: {t_warm:.3f} s ({t_warm / len(symbols) * 1e3:.1f} ms per symbol)")


if __name__ == "__main__":
    main()
