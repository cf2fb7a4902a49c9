"""``python run.py pre-paper``: run a promoted backtest as a pre-paper graph.

    python run.py pre-paper --manifest artifacts/backtests/<run_hash>/run_manifest.json
    python run.py pre-paper --manifest M --graph my_pre_paper.yaml --duration 3600
    python run.py pre-paper --manifest M --replay --speed 20      # the backtest's own tick files, replayed
    python run.py pre-paper --manifest M --replay --start 2012-06-21T13:30:00Z --end 2012-06-21T15:00:00Z

The graph (default ``config/pre_paper.yaml``) is filled in from the manifest
(``pre_paper/graphs.py``: the pre_paper node's manifest, the bars timeframe, the
normalizer's and the source's symbols) and run by ``run.py`` with every other option
passed through (``--backend``, ``--set``, ``--duration``, ``--summary-json``, ...).
``--replay`` swaps the live source for a replay of the backtest's own tick files (a
run config with ``data.source: ticks``) and runs the pre_paper node on event time.

Exit codes as ``run.py``: 2 for a manifest or graph that cannot run, reported before
any connection is made.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from backtest.config import TickData

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python run.py pre-paper", description="Run a backtest manifest as a pre-paper graph.")
    parser.add_argument("--manifest", required=True, help="a backtest's run_manifest.json (or its run directory)")
    parser.add_argument("--graph", default="pre_paper.yaml", help="the pre-paper graph template (default config/pre_paper.yaml)")
    parser.add_argument("--replay", action="store_true", help="replay the backtest's own tick files instead of the live source")
    parser.add_argument("--speed", type=float, default=0.0, help="with --replay: 0 = burst (default), 1 = original pace, 20 = 20x")
    parser.add_argument("--start", default=None, help="with --replay: only ticks from this time (ISO-8601 with offset)")
    parser.add_argument("--end", default=None, help="with --replay: only ticks before this time")
    return parser


def main(argv: list[str]) -> int:
    """Fill the graph from the manifest and run it with ``run.py``; returns the exit code."""
    args, rest = _parser().parse_known_args(argv)
    from graph.spec import GraphError, resolve_graph_path
    from pre_paper.graphs import GraphShapeError, default_run_id, manifest_overrides
    from pre_paper.manifest import ManifestError, load_promoted

    try:
        path = resolve_graph_path(args.graph)
        replay: dict[str, Any] | None = None
        if args.replay:
            run = load_promoted(args.manifest)
            if not isinstance(run.config.data, TickData):
                print(f"error: {run.path}: data.source: --replay needs a backtest of tick files, this one read {run.config.data.source}", file=sys.stderr)
                return 2
            replay = {"files": list(run.config.data.files), "speed": args.speed}
            replay.update({k: v for k, v in (("start", args.start), ("end", args.end)) if v is not None})
        run_id = default_run_id(args.manifest, time.time_ns())
        overrides = manifest_overrides(path, args.manifest, replay, run_id=run_id)
    except (GraphError, GraphShapeError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import run as runner

    sets = [item for override in overrides for item in ("--set", override)]
    print(f"pre-paper run {run_id} (audit: the pre_paper_audit node's path/{run_id}/)", file=sys.stderr)
    return runner.main(["--graph", str(path), *sets, *rest])
