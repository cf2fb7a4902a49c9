"""Sweep speed: a 10 x 10 dual_sma grid over 50 symbols x one day of 1m bars.

    python bench/backtest_sweep.py [--symbols 50] [--chunk 10] [--skip-peers]

Input: the fixtures' real 1m bars through the bar engine (the backtest graph run in
process), then 50 symbols derived from them as bench/replay_throughput.py derives
ticks: even symbols replay AMZN's day (387 bars), odd ones BTCUSDT's 126 bars tiled
to 387; each symbol's log returns are rotated by 7 x its index and its prices scaled,
so no two symbols are alike. Grid: fast 2, 4, .., 20 x slow 25, 30, .., 70 (100
combinations, all valid); long/short, 95 % sizing, 1 bp fees.

A *backtest* here is one (combination, symbol) sleeve: 100 x 50 = 5,000 backtests of
387 bars (1.94M bar evaluations). Measured in one run:

  engine      in-process, one core: targets + sleeves + book per combination
              (backtest/engine.book_curve), no tables: the kernel's pace.
  tasks       in-process, one core: evaluate_chunk in mode ``tasks`` (each combination's
              strategy pass, the sleeves, the result tables and metrics.json content).
  vectorised  the same in mode ``vectorised`` (one decide_grid pass per chunk and symbol).
  ray-*       the same chunks (``--chunk`` combinations each) as Ray tasks on this
              machine's cores.
  artifacts   in-process ``vectorised`` with every run's files written (Parquet,
              JSON, report.html), not committed.
  backtesting backtesting.py's Backtest.optimize on the same grid for ONE symbol (the
              AMZN day), with a one-process pool (per core) and with its default pool.
  vectorbt    vectorbt's Portfolio.from_signals on the same crossovers for all 5,000
              columns at once (if it is installed; second call, after numba compiled;
              fills at the close and 95,000 of value per entry: vectorbt cannot reverse
              with percent sizes, so its accounting differs: a speed comparison only).

Ratios are per core: backtests/s divided by the cores used (1 in-process, the Ray
cluster's CPUs for ray-*, 1 for backtesting.py's one-process pool).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backtest.config import parse_run_config  # noqa: E402
from backtest.engine import Series, book_curve, execution_params, series_from_decisions, strategy_targets  # noqa: E402
from backtest.graphs import load_run_graph, read_outputs, run_graph  # noqa: E402
from backtest.sweep import evaluate_chunk  # noqa: E402
from strategies.base import History  # noqa: E402

FIX = ROOT / "fixtures"
FASTS = list(range(2, 21, 2))
SLOWS = list(range(25, 71, 5))
BARS = 387


def fixture_series() -> dict[str, Series]:
    """The fixtures' AMZN and BTCUSDT 1m bars, through the backtest graph in process."""
    doc = {
        "symbols": ["AMZN", "BTCUSDT"], "start": "2012-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z",
        "data": {"source": "ticks", "sessions": {"AMZN": {"tz": "America/New_York", "open": "09:30", "close": "16:00"}}, "files": [
            {"format": "lobster", "symbol": "AMZN", "date": "2012-06-21",
             "message_file": str(FIX / "lobster_amzn_l1/AMZN_2012-06-21_34200000_57600000_message_1.csv"),
             "orderbook_file": str(FIX / "lobster_amzn_l1/AMZN_2012-06-21_34200000_57600000_orderbook_1.csv")},
            {"format": "tardis_trades", "path": str(FIX / "tardis_binance_futures_btcusdt/trades.csv")}]},
        "strategy": {"name": "dual_sma"},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_run_graph(parse_run_config(doc), Path(tmp), 1)
        run_graph(loaded, "local")
        return series_from_decisions(read_outputs(Path(tmp))["decisions"])


def derived(base: dict[str, Series], symbols: int) -> dict[str, Series]:
    """``symbols`` series of BARS bars from the two fixture series (see the module docstring)."""
    out = {}
    amzn, btc = base["AMZN"].history, base["BTCUSDT"].history
    ts = amzn.ts[:BARS]
    for k in range(symbols):
        h = amzn if k % 2 == 0 else btc
        idx = np.resize(np.arange(len(h)), BARS)
        rel = {name: np.log(getattr(h, name)[idx] / h.close[idx]) for name in ("open", "high", "low")}
        steps = np.diff(np.log(h.close[idx]), prepend=np.log(h.close[idx][0]))
        steps[0] = 0.0
        steps = np.roll(steps, 7 * k)
        close = (50 + 3 * k) * np.exp(np.cumsum(steps))
        columns = {"ts": ts, "close": close, "volume": h.volume[idx], **{n: close * np.exp(r) for n, r in rel.items()}}
        out[f"S{k:03d}"] = Series(f"S{k:03d}", History.from_columns(columns), np.full(BARS, np.nan))
    return out


def configs(symbols: list[str]):
    """The 100 run configs of the grid (store data: only used for hashing/sizing, never read)."""
    base = {
        "symbols": symbols, "start": 0, "end": 2**62, "data": {"source": "store"}, "timeframe": "1m",
        "risk": {"model": "fixed_fraction", "fraction": 0.95}, "execution": {"fee_bps": 1.0}, "bars_per_year": 98_280,
    }  # fmt: skip
    return [parse_run_config({**base, "strategy": {"name": "dual_sma", "params": {"fast": f, "slow": s}}}) for f in FASTS for s in SLOWS]


def timed(label: str, fn, backtests: int, cores: int, results: dict) -> float:
    """Run ``fn`` once, print its backtests/s and bar evaluations/s, keep (seconds, backtests, cores)."""
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    results[label] = (seconds, backtests, cores)
    print(f"  {label:<24}{seconds:>9.2f} s  {backtests / seconds:>10,.0f} backtests/s  {backtests * BARS / seconds:>12,.0f} bar-evaluations/s"
          f"  ({backtests / seconds / cores:,.0f} per core)", flush=True)  # fmt: skip
    return seconds


def engine_pass(series, grid) -> None:
    """Targets and sleeves + book (no tables) of every combination, in this process."""
    for config in grid:
        book_curve(series, strategy_targets("dual_sma", config.strategy.params, series), execution_params(config))


def chunks(grid, size):
    """``grid`` in consecutive chunks of ``size``."""
    return [grid[i : i + size] for i in range(0, len(grid), size)]


def ray_pass(series, grid, size, mode, staging=None) -> None:
    """evaluate_chunk on Ray tasks, one per chunk (metrics only unless ``staging``)."""
    import ray

    task = ray.remote(evaluate_chunk)
    ref = ray.put(series)
    ray.get([task.remote(ref, chunk, ["x"] * len(chunk), mode, staging) for chunk in chunks(grid, size)])


def _peer_strategy():
    """backtesting.py's SmaCross, defined at module level (its process pool pickles it)."""
    global SmaCross
    from backtesting import Strategy
    from backtesting.lib import crossover

    class SmaCross(Strategy):
        fast, slow = 10, 30

        def init(self):
            self.f = self.I(lambda c, n: pd.Series(c).rolling(n).mean(), self.data.Close, self.fast)
            self.s = self.I(lambda c, n: pd.Series(c).rolling(n).mean(), self.data.Close, self.slow)

        def next(self):
            if crossover(self.f, self.s):
                self.position.close()
                self.buy(size=0.95)
            elif crossover(self.s, self.f):
                self.position.close()
                self.sell(size=0.95)

    SmaCross.__qualname__ = "SmaCross"
    return SmaCross


def backtesting_optimize(series: Series, processes: int | None) -> float:
    """Seconds of backtesting.py's Backtest.optimize on the grid for one series (``processes``: pool size; None: its default)."""
    import backtesting
    from backtesting import Backtest

    h = series.history
    data = pd.DataFrame({"Open": h.open, "High": h.high, "Low": h.low, "Close": h.close, "Volume": h.volume},
                        index=pd.to_datetime(h.ts, utc=True).tz_localize(None))  # fmt: skip

    import multiprocessing

    original = backtesting.Pool
    if processes is not None:
        backtesting.Pool = lambda *a, **k: multiprocessing.get_context("fork").Pool(processes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            Backtest(data, _peer_strategy(), cash=100_000, commission=0.0001).optimize(fast=FASTS, slow=SLOWS, maximize="Sharpe Ratio")
            return time.perf_counter() - started
    finally:
        backtesting.Pool = original


def vectorbt_pass(series: dict[str, Series]) -> float | None:
    """Seconds of vectorbt's from_signals over every column (warm), None if vectorbt is missing."""
    try:
        import vectorbt as vbt
    except ImportError:
        return None
    close = pd.DataFrame({s: x.history.close for s, x in series.items()})

    def run() -> None:
        """One vectorbt pass over every (fast, slow, symbol) column."""
        fast = vbt.MA.run(close, window=FASTS, short_name="fast", param_product=True)
        slow = vbt.MA.run(close, window=SLOWS, short_name="slow", param_product=True)
        # columns (fast, symbol) repeated per slow, against (slow, symbol) tiled per fast: the same 5,000 pairs
        f = np.repeat(fast.ma.to_numpy().reshape(BARS, len(FASTS), -1), len(SLOWS), axis=1).reshape(BARS, -1)
        s = np.tile(slow.ma.to_numpy().reshape(BARS, 1, -1), (1, len(FASTS), 1)).reshape(BARS, -1)
        above = np.zeros_like(f, dtype=bool)
        above[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])
        below = np.zeros_like(f, dtype=bool)
        below[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
        prices = np.tile(close.to_numpy(), (1, len(FASTS) * len(SLOWS)))
        vbt.Portfolio.from_signals(prices, entries=above, exits=below, short_entries=below, short_exits=above,
                                   size=95_000.0, size_type="value", fees=0.0001, init_cash=100_000).total_return()  # fmt: skip

    run()  # numba compiles here
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=50, help="combinations per task (in-process and Ray)")
    parser.add_argument("--skip-peers", action="store_true", help="skip backtesting.py and vectorbt")
    args = parser.parse_args(argv)
    series = derived(fixture_series(), args.symbols)
    grid = configs(sorted(series))
    n = len(grid) * len(series)
    print(f"{len(grid)} combinations x {len(series)} symbols x {BARS} bars = {n:,} backtests, {n * BARS:,} bar evaluations")
    results: dict = {}
    timed("engine (in-process)", lambda: engine_pass(series, grid), n, 1, results)
    timed("tasks (in-process)", lambda: [evaluate_chunk(series, c, ["x"] * len(c), "tasks") for c in chunks(grid, args.chunk)], n, 1, results)
    timed("vectorised (in-process)", lambda: [evaluate_chunk(series, c, ["x"] * len(c), "vectorised") for c in chunks(grid, args.chunk)], n, 1, results)
    import logging

    import ray

    ray.init(logging_level=logging.WARNING, include_dashboard=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ray_pass(series, grid[:4], 2, "tasks")  # warm the workers (imports), not timed
    timed(f"ray-tasks ({cpus} CPUs)", lambda: ray_pass(series, grid, args.chunk, "tasks"), n, cpus, results)
    timed(f"ray-vectorised ({cpus} CPUs)", lambda: ray_pass(series, grid, args.chunk, "vectorised"), n, cpus, results)
    with tempfile.TemporaryDirectory() as tmp:
        hashes = [f"run{i:03d}" for i in range(len(grid))]
        timed("artifacts (in-process)", lambda: [evaluate_chunk(series, grid[i : i + args.chunk], hashes[i : i + args.chunk], "vectorised", tmp)
                                              for i in range(0, len(grid), args.chunk)], n, 1, results)  # fmt: skip
    ray.shutdown()
    print()
    faster = "vectorised" if results["vectorised (in-process)"][0] < results["tasks (in-process)"][0] else "tasks"
    print(f"vectorised / tasks time: in-process {results['vectorised (in-process)'][0] / results['tasks (in-process)'][0]:.2f}, "
          f"Ray {results[f'ray-vectorised ({cpus} CPUs)'][0] / results[f'ray-tasks ({cpus} CPUs)'][0]:.2f}: faster = {faster}")  # fmt: skip
    if args.skip_peers:
        return 0
    one = series["S000"]
    single = backtesting_optimize(one, 1)
    default = backtesting_optimize(one, None)
    peer_rate = len(grid) / single
    print(f"  backtesting.optimize 1 process: {single:.2f} s = {peer_rate:,.1f} backtests/s; default pool ({cpus} processes): "
          f"{default:.2f} s = {len(grid) / default:,.1f} backtests/s")  # fmt: skip
    for label, (seconds, count, cores) in results.items():
        print(f"  ratio per core vs backtesting.py, {label:<24} {count / seconds / cores / peer_rate:>8,.0f}x")
    vbt_seconds = vectorbt_pass(series)
    if vbt_seconds is None:
        print("  vectorbt: not installed (pip install vectorbt); no ratio")
    else:
        rate = n / vbt_seconds
        print(f"  vectorbt from_signals (all {n:,} columns, warm): {vbt_seconds:.2f} s = {rate:,.0f} backtests/s (1 core)")
        for label in ("engine (in-process)", "vectorised (in-process)"):
            seconds, count, cores = results[label]
            print(f"  ratio vs vectorbt, {label:<24} {count / seconds / rate:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
