"""tickgraph command line: run a YAML streaming graph on Ray (or in-process).

    python run.py --graph replay.yaml                      # config/replay.yaml, local Ray
    python run.py --graph my.yaml --set bars.parallelism=4 --summary-json out/summary.json
    python run.py --graph live.yaml --address auto         # join a running Ray cluster
    python run.py parity ... | python run.py export ...    # subcommands (commands/)

Exit codes: 0 success; 1 a node failed while running; 2 a user error (bad graph file,
bad ``--set``, missing file) reported before any actor started; 130 interrupted twice.
User errors print one clear message per problem and no Python traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python run.py",
        description="Run a tickgraph streaming graph (YAML) on Ray.",
    )
    parser.add_argument("--graph", required=True, help="graph file path, or a name in config/ (replay.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="override a node field or param, e.g. bars.parallelism=2 or source.params.url=ws://...; repeatable",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster (host:port, ray://host:10001 or auto); default: start a private one on 127.0.0.1",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --address: give up when the cluster has not answered after this long (default 30)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a locally started Ray (default: all)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard locally")
    parser.add_argument(
        "--backend",
        choices=("ray", "local"),
        default="ray",
        help="ray (default): one actor per node shard; local: the same operators chained in this process",
    )
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop sources after this long")
    parser.add_argument("--summary-json", type=Path, default=None, metavar="PATH", help="write the run summary here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", "-v", action="store_true", help="show operator tracebacks on failure")
    parser.add_argument(
        "--resume",
        default=None,
        metavar="RUN_ID",
        help="continue run RUN_ID (its driver was killed) from its last complete checkpoint",
    )
    return parser.parse_args(argv)


def _fail(message: str, code: int) -> int:
    from graph.secrets import redact

    print(f"error: {redact(message)}", file=sys.stderr)
    return code


#: tickgraph's packages, shipped to the workers of a cluster joined with ``--address``.
PACKAGES = ("actors", "backtest", "commands", "db", "graph", "parity", "pre_paper", "service", "strategies")


def _start_ray(args: argparse.Namespace) -> dict[str, Any]:
    """A private loopback Ray instance, or the cluster of ``--address`` (graph/cluster.py)."""
    from graph.cluster import join_ray, start_private_ray

    root = Path(__file__).resolve().parent
    if args.address:
        # Workers on other nodes import our packages from the driver's copy.
        modules = [str(root / name) for name in PACKAGES]
        return join_ray(
            args.address,
            timeout_s=args.connect_timeout,
            runtime_env={"py_modules": modules},
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    return start_private_ray(num_cpus=args.num_cpus, dashboard=not args.no_dashboard)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    While the graph runs, everything printed to stdout (Ray's forwarded worker output
    included) goes to stderr, so stdout carries the run summary alone.
    """
    args = parse_args(argv)
    from graph.secrets import install_redaction

    install_redaction()
    from graph.build import build_graph, count_actors
    from graph.cluster import ClusterError, memory_warning, security_notice
    from graph.runtime import NodeFailure
    from graph.spec import GraphError, load_graph
    from graph.summary import build_summary, format_summary

    try:
        loaded = load_graph(args.graph, args.overrides)
    except GraphError as exc:
        return _fail(str(exc), 2)

    interrupts = {"count": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupts["count"] += 1
        if interrupts["count"] >= 2:
            raise KeyboardInterrupt
        print("\ninterrupt: stopping sources and flushing (Ctrl-C again to abort)", file=sys.stderr)

    progress_bar = None
    if not args.no_progress:
        from tqdm import tqdm

        progress_bar = tqdm(unit=" ticks", unit_scale=True, desc=loaded.spec.name, disable=None, file=sys.stderr)

    def on_progress(rows: int, watermark: int | None) -> None:
        if progress_bar is not None:
            progress_bar.update(rows - progress_bar.n)

    actors = count_actors(loaded)
    if args.backend == "ray" and not args.address:
        warning = memory_warning(actors)
        if warning:
            print(warning, file=sys.stderr)
    started_ray = False
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if args.backend == "ray":
                try:
                    info = _start_ray(args)
                except ClusterError as exc:
                    return _fail(str(exc), 2)
                started_ray = True
                if not args.address:
                    print(security_notice(info), file=sys.stderr)
                elif info.get("dashboard_url"):
                    print(f"ray: joined {args.address}; dashboard {info['dashboard_url']}", file=sys.stderr)
            previous = signal.signal(signal.SIGINT, on_sigint)
            try:
                try:
                    run = build_graph(loaded, backend=args.backend, run_id=args.resume, resume=args.resume is not None)
                except ValueError as exc:  # --resume of a run without a complete checkpoint
                    return _fail(str(exc), 2)
                print(f"run {run.run_id}" + (f": resumed from checkpoint {run.resumed_from}" if args.resume else ""),
                      file=sys.stderr)  # fmt: skip
                result = run.run(
                    on_progress=on_progress,
                    duration_s=args.duration,
                    should_stop=lambda: interrupts["count"] > 0,
                )
            finally:
                signal.signal(signal.SIGINT, previous)
                if started_ray:
                    import ray

                    ray.shutdown()
                    started_ray = False
    except NodeFailure as failure:
        if progress_bar is not None:
            progress_bar.close()
        if args.verbose and failure.details:
            print(failure.details, file=sys.stderr)
        return _fail(str(failure), 1)
    except KeyboardInterrupt:
        return _fail("aborted", 130)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    if progress_bar is not None:
        progress_bar.close()

    from graph.secrets import redact

    summary = build_summary(loaded, result)
    print(redact(format_summary(summary)))
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(redact(json.dumps(summary, indent=2, sort_keys=False)) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from commands import SUBCOMMANDS, dispatch

    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        sys.exit(dispatch(sys.argv[1], sys.argv[2:]))
    sys.exit(main())
