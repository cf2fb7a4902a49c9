"""``python run.py backtest``: run, sweep and verify backtests.

    python run.py backtest run CONFIG.json [--force] [--backend ray|local] [--parallelism N]
    python run.py backtest sweep CONFIG.json --grid strategy.params.fast=5,10,20 \\
        --grid strategy.params.slow=50,100,200 [--top 10] [--mode auto|vectorised|tasks] [--summary PATH]
    python run.py backtest verify

Common options: ``--artifacts DIR`` (default ``artifacts/backtests``, relative to the
current directory), ``--keep N`` (retention, default 100 runs), ``--num-cpus``,
``--address`` (Ray). Relative data paths in CONFIG.json resolve against its directory.

Exit codes: 0 done (``run``: also when the run already existed; ``verify``: chain
intact); 1 a node failed, a ``--force`` rerun did not reproduce the artifacts, or
``verify`` found a broken link (named); 2 a bad config or argument, reported before any
work with the field path (``CONFIG.json: strategy.params.slow: ...``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``backtest`` arguments (see module docstring); argparse exits 2 on bad syntax."""
    parser = argparse.ArgumentParser(prog="python run.py backtest", description="Backtests on the tickgraph graph.")
    sub = parser.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--artifacts", type=Path, default=Path("artifacts") / "backtests", help="artifacts directory")
        p.add_argument("--keep", type=int, default=100, help="retention: run directories kept (default 100)")

    def compute(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", type=Path, help="run config JSON")
        p.add_argument("--backend", choices=("ray", "local"), default="ray", help="ray (default) or in-process")
        p.add_argument("--parallelism", type=int, default=2, help="shards of the keyed nodes (default 2)")
        p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a locally started Ray")
        p.add_argument("--address", default=None, help="join an existing Ray cluster")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        common(p)

    run = sub.add_parser("run", help="run one backtest (idempotent by run hash)")
    compute(run)
    run.add_argument("--force", action="store_true", help="recompute an existing run; it must reproduce byte for byte")
    sweep = sub.add_parser("sweep", help="run every combination of a parameter grid")
    compute(sweep)
    sweep.add_argument("--grid", action="append", default=[], required=True, metavar="PATH=V1,V2,...",
                       help="a config path and its values, e.g. strategy.params.fast=5,10,20 (repeatable)")  # fmt: skip
    sweep.add_argument("--top", type=int, default=10, help="rows of the printed summary (default 10)")
    sweep.add_argument("--mode", choices=("auto", "vectorised", "tasks"), default="auto", help="how a task evaluates its combinations")
    sweep.add_argument("--chunk", type=int, default=25, help="combinations per task (default 25)")
    sweep.add_argument("--summary", type=Path, default=None, help="summary Parquet (default ARTIFACTS/sweeps/<id>.parquet)")
    verify = sub.add_parser("verify", help="re-hash every run and the manifest chain")
    common(verify)
    args = parser.parse_args(argv)
    for name in ("keep", "parallelism", "chunk", "top"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def _fail(message: str, code: int) -> int:
    print(f"error: {message}" if "\n" not in message else message, file=sys.stderr)
    return code


def _start_ray(args: argparse.Namespace) -> None:
    """Start (or join, ``--address``) Ray the way ``run.py`` does, without the dashboard."""
    from run import _start_ray as start

    from graph.cluster import ClusterError

    args.no_dashboard = True
    args.connect_timeout = getattr(args, "connect_timeout", 30.0)
    try:
        start(args)
    except ClusterError as exc:  # no cluster at --address: a user error, one line, exit 2
        raise SystemExit(_fail(str(exc), 2)) from None


def _print_metrics(metrics: dict) -> None:
    book = metrics["book"]
    keys = ("final_equity", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "trades", "win_rate", "profit_factor", "exposure")
    for key in keys:
        value = book.get(key)
        text = "-" if value is None else f"{value:,.6g}" if isinstance(value, float) else str(value)
        print(f"  {key:<15}{text:>16}")


def _run(args: argparse.Namespace) -> int:
    from backtest.config import ConfigError, load_run_config
    from backtest.runner import run_backtest
    from graph.runtime import NodeFailure

    try:
        config = load_run_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    started = False
    try:
        if args.backend == "ray":
            _start_ray(args)
            started = True
        shown: dict[str, float] = {}

        def on_event(step: str, progress: float, detail: str) -> None:
            # each step's start, end and every quarter in between (the permutation test reports often)
            if args.no_progress or (0 < progress < 1 and progress - shown.get(step, 0.0) < 0.25):
                return
            shown[step] = progress
            print(f"  {step:<11}{progress:>5.0%}  {detail}", file=sys.stderr)

        outcome = run_backtest(config, root=args.artifacts, base_dir=args.config.resolve().parent, force=args.force,
                               backend=args.backend, parallelism=args.parallelism, keep=args.keep, on_event=on_event)  # fmt: skip
    except ConfigError as exc:
        return _fail(str(exc).replace("run config:", f"{args.config}:"), 2)
    except NodeFailure as failure:
        return _fail(str(failure), 1)
    finally:
        if started:
            import ray

            ray.shutdown()
    print(f"backtest {outcome.status}: {outcome.run_hash}")
    print(f"  artifacts      {outcome.run_dir}")
    _print_metrics(outcome.metrics)
    if outcome.status == "recomputed":
        if not outcome.identical:
            return _fail(f"--force rerun differs from the stored run in {', '.join(outcome.differing)} "
                         f"(new files kept in {outcome.run_dir}.rerun)", 1)  # fmt: skip
        print("  --force: every artifact byte-identical to the stored run")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from backtest.config import ConfigError
    from backtest.sweep import format_summary, parse_grid, sweep
    from graph.runtime import NodeFailure

    try:
        doc = json.loads(args.config.read_text(encoding="utf-8"))
        grid = parse_grid(args.grid)
    except (OSError, json.JSONDecodeError) as exc:
        return _fail(f"{args.config}: {exc}", 2)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    started = False
    bar = None
    try:
        if args.backend == "ray":
            _start_ray(args)
            started = True
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(unit=" runs", desc="sweep", file=sys.stderr, disable=None)

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        result = sweep(doc, grid, root=args.artifacts, base_dir=args.config.resolve().parent, backend=args.backend,
                       mode=args.mode, chunk_size=args.chunk, parallelism=args.parallelism, keep=args.keep,
                       summary_path=args.summary, progress=progress)  # fmt: skip
    except ConfigError as exc:
        return _fail(str(exc).replace("run config:", f"{args.config}:").replace("sweep:", f"{args.config}:"), 2)
    except NodeFailure as failure:
        return _fail(str(failure), 1)
    finally:
        if bar is not None:
            bar.close()
        if started:
            import ray

            ray.shutdown()
    plan = result.plan
    print(f"sweep: {len(plan.combos)} combinations ({len(plan.skipped)} skipped), summary {result.summary_path}")
    for combo, problem in plan.skipped:
        print(f"  skipped {json.dumps(combo)}: {problem}")
    print(format_summary(result.summary, args.top, list(grid)))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from backtest.manifest import verify_artifacts

    report = verify_artifacts(args.artifacts)
    if report.ok:
        print(f"verify: {report.runs} runs re-hashed, chain intact ({report.pruned} older runs removed by retention)")
        return 0
    print(f"verify: first broken link at run {report.first_broken}", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    """Run ``backtest`` with ``argv``; returns the exit code."""
    args = parse_args(argv)
    try:
        return {"run": _run, "sweep": _sweep, "verify": _verify}[args.action](args)
    except KeyboardInterrupt:
        return _fail("aborted", 130)
