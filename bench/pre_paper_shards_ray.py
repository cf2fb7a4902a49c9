"""Fifty symbols as pre-paper shards on Ray at once, from one multi-symbol manifest, each with its
own status -- the issue's "50 symbols" check, a bench (too heavy for the test suite's budget).

    python bench/pre_paper_shards_ray.py [--num-cpus 2]

The ticks are SYNTHETIC (a seeded random walk per symbol, one trade per 15 s for an hour);
the manifest is a real backtest of them. It asserts every symbol's outcome and prints the
wall times:

    S00..S24  cache warm (17 historical bars before the hour)  -> SUFFICIENT from the start
    S25..S44  cache empty                                       -> NO-SIGNALS for 16 bars, then
                                                                   the backtest's own decisions
    S45..S49  trades stop after 10 minutes                      -> DEGRADED, outdated history
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backtest.config import parse_run_config  # noqa: E402
from backtest.hashing import table_sha256  # noqa: E402
from backtest.runner import run_backtest  # noqa: E402
from graph.build import build_graph  # noqa: E402
from graph.schemas import TICK  # noqa: E402
from graph.spec import load_graph  # noqa: E402
from pre_paper.cache import HistoryCache  # noqa: E402
from pre_paper.graphs import manifest_overrides  # noqa: E402
from tests.conftest import CONFIG  # noqa: E402
from tests.prepaper import MINUTE, NS, stamp  # noqa: E402

SYMBOLS = [f"S{i:02d}" for i in range(50)]
T0 = stamp("2024-03-05T00:00:00Z")
WARM, QUIET = SYMBOLS[:25], SYMBOLS[45:]


def synthetic_ticks(path) -> None:
    """SYNTHETIC trades, TICK schema: every 15 s per symbol for an hour (QUIET: 10 minutes)."""
    rng = np.random.default_rng(50)
    columns: dict[str, list] = {name: [] for name in TICK.names}
    for k, symbol in enumerate(SYMBOLS):
        n = 40 if symbol in QUIET else 240
        ts = T0 + 15 * NS * np.arange(n) + k * 1_000_000
        price = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
        columns["symbol"] += [symbol] * n
        columns["ts"] += ts.tolist()
        columns["price"] += np.round(price, 4).tolist()
        columns["size"] += rng.integers(1, 50, n).astype(float).tolist()
        for name in ("side", "bid", "ask", "bid_size", "ask_size", "advances_watermark"):
            columns[name] += [None] * n
        columns["provider"] += ["synthetic"] * n
        columns["seq"] += list(range(n))
        columns["origin"] += ["replay"] * n
    table = pa.table(columns, schema=TICK).sort_by([("ts", "ascending"), ("symbol", "ascending")])
    pq.write_table(table, path)


def run(tmp_path: Path) -> dict[str, float]:
    """Backtest, cache, pre-paper graph on Ray, checks; returns the timings (s)."""
    started = time.perf_counter()
    ticks = tmp_path / "ticks.parquet"
    synthetic_ticks(ticks)
    doc = {
        "symbols": SYMBOLS, "timeframe": "1m", "start": T0, "end": T0 + 60 * MINUTE,
        "data": {"source": "ticks", "files": [{"format": "canonical", "path": str(ticks)}]},
        "strategy": {"name": "dual_sma", "params": {"fast": 3, "slow": 8}}, "execution": {"fee_bps": 0.0},
        # bars_per_year only annualises the metrics; 525,600 overflows backtest/metrics.py's CAGR
        # (growth ** 8760 for a profitable hour raises OverflowError): reported, not fixed here
        "initial_cash": 5_000_000.0, "bars_per_year": 8_760.0,
    }  # fmt: skip
    outcome = run_backtest(parse_run_config(doc), root=tmp_path / "backtests", parallelism=1)
    manifest = outcome.run_dir / "run_manifest.json"
    backtest = pq.read_table(outcome.run_dir / "decisions.parquet")
    cache = HistoryCache(tmp_path / "cache.db")
    for symbol in WARM:  # the 17 minutes before the hour, as a previous session left them
        first = backtest.filter(pc.equal(backtest["symbol"], symbol))["open"][0].as_py()
        ts = T0 - MINUTE * np.arange(17, 0, -1)
        p = np.full(17, first)
        cache.append(symbol, "1m", "UTC", {"ts": ts, "open": p, "high": p, "low": p, "close": p, "volume": np.ones(17)}, "historical", 0)
    cache.close()

    template = yaml.safe_load((CONFIG / "pre_paper.yaml").read_text())
    template["nodes"] = [n for n in template["nodes"] if n["id"] != "store"]
    path = tmp_path / "pre_paper.yaml"
    path.write_text(yaml.safe_dump(template, sort_keys=False))
    replay = {"files": [{"format": "canonical", "path": str(ticks)}], "speed": 0}
    overrides = manifest_overrides(path, manifest, replay=replay, run_id="fifty") + [
        "bars.parallelism=1", "pre_paper.parallelism=2", f"pre_paper.cache={tmp_path / 'cache.db'}", "pre_paper.providers=[]",
        'pre_paper.calendars={"default": "24/7"}', "pre_paper.safety_margin_bars=8", f"audit.path={tmp_path / 'audit'}",
    ]  # fmt: skip
    graph_started = time.perf_counter()
    result = build_graph(load_graph(path, overrides, env={}), backend="ray").run()
    graph_s = time.perf_counter() - graph_started

    shards = {h["shard"]: h["operator"]["symbols"] for h in result.hosts if h["node_id"] == "pre_paper"}
    assert set(shards) == {0, 1} and all(len(s) > 10 for s in shards.values())  # both shards carry symbols
    assert sorted(set(shards[0]) | set(shards[1])) == SYMBOLS and not set(shards[0]) & set(shards[1])
    status = {symbol: m for part in shards.values() for symbol, m in part.items()}
    audit = json.loads((tmp_path / "audit" / "fifty" / "pre_paper_manifest.json").read_text())
    initial, final = audit["history_status"]["initial_check"], audit["history_status"]["final_check"]
    assert sorted(initial) == SYMBOLS
    for symbol in SYMBOLS:
        counts = audit["execution_summary"]["per_symbol"][symbol]
        if symbol in WARM:
            assert initial[symbol]["status"] == "sufficient" and counts["suppressed_bars"] == 0 and counts["decisions"] == 60
        elif symbol in QUIET:
            assert final[symbol]["status"] == "degraded" and final[symbol]["reason"].startswith("outdated history")
            assert counts["suppressed_bars"] == 10 and counts["decisions"] == 0  # 10 bars, never the 17 needed
        else:
            assert initial[symbol]["status"] == "degraded" and final[symbol]["status"] == "sufficient"
            assert counts["suppressed_bars"] == 16 and counts["decisions"] == 44
        assert status[symbol]["status"] == (final[symbol]["status"])
    decided = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "audit" / "fifty" / "signals").glob("*.parquet"))])
    for symbol in SYMBOLS[25:45]:  # cold symbols: exactly the backtest's decisions from their 17th bar on
        mine = decided.filter(pc.equal(decided["symbol"], symbol)).sort_by("ts")
        theirs = backtest.filter(pc.equal(backtest["symbol"], symbol)).sort_by("ts").slice(16)
        assert table_sha256(mine) == table_sha256(theirs), symbol
    return {"setup_s": graph_started - started, "graph_s": graph_s}


def main() -> None:
    """Run it once on a private Ray instance and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    import ray

    from graph.cluster import start_private_ray

    start_private_ray(num_cpus=args.num_cpus, dashboard=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(Path(tmp))
    finally:
        ray.shutdown()
    bars = len(SYMBOLS) * 60
    print(f"{len(SYMBOLS)} symbols x 60 1m bars on 2 pre_paper shards (Ray, {args.num_cpus} CPUs): every status as expected")
    print(f"  backtest + cache setup {figures['setup_s']:.1f} s; graph (build, replay, drain) {figures['graph_s']:.1f} s "
          f"= {bars / figures['graph_s']:.0f} bars/s end to end")  # fmt: skip


if __name__ == "__main__":
    main()
