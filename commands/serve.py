"""``python run.py serve``: the service standalone, over an existing store, with Ray for replay jobs.

    python run.py serve                                   # 127.0.0.1:8000, store sqlite:///tickgraph.db
    python run.py serve --graph replay.yaml --port 8080 --set parquet.path=/tmp/pq
    TICKGRAPH_API_TOKEN=... python run.py serve --host 0.0.0.0   # beyond loopback: token required

The store defaults to ``$TICKGRAPH_DATABASE_URL``, else ``sqlite:///tickgraph.db`` (the main
job's). ``--graph`` is the replay graph ``POST /v1/replay/ticks`` runs (its ``replay``
node's params are set per request); ``--set`` overrides apply to every such run. Ray
starts locally (dashboard URL printed) unless ``--address`` joins a cluster.

Exit codes: 0 stopped by Ctrl-C/SIGTERM; 2 bad arguments (a non-loopback ``--host``
without ``$TICKGRAPH_API_TOKEN``, a graph that does not load, a port in use). The token
is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

__all__ = ["main", "parse_args"]

_DEFAULT_URL = "sqlite:///tickgraph.db"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``serve`` arguments (see the module docstring)."""
    from service.config import DEFAULT_HOST, DEFAULT_PORT

    parser = argparse.ArgumentParser(prog="python run.py serve", description="Serve bars, streams, jobs, metrics and the cockpit.")
    parser.add_argument("--graph", default="replay.yaml", help="replay graph for replay jobs (path or name in config/)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--database-url", default=None, help="the store (default $TICKGRAPH_DATABASE_URL or sqlite:///tickgraph.db)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE",
                        help="override applied to every replay job's graph; repeatable")  # fmt: skip
    parser.add_argument("--export-dir", type=Path, default=None, help="where POST /v1/exports writes (default out/exports)")
    parser.add_argument("--catalog-dir", type=Path, default=None, help="tick catalog read and written by jobs (default $TICKGRAPH_CATALOG_DIR or out/catalog)")
    parser.add_argument("--address", default=None, help="join an existing Ray cluster (default: start one locally)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a locally started Ray")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    return parser.parse_args(argv)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


async def _serve(app, host: str, port: int) -> None:
    from aiohttp import web

    from service.app import STATE
    from service.server import access_logger

    runner = web.AppRunner(app, access_log=access_logger(), shutdown_timeout=3.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port actually bound
    shown = f"[{host}]" if ":" in host else host
    app[STATE].bound_url = f"http://{shown}:{bound}"
    print(f"tickgraph service: {app[STATE].bound_url}/ (cockpit), {app[STATE].bound_url}/openapi.json", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    """Run the service until interrupted; returns the exit code."""
    args = parse_args(argv)
    from graph.spec import GraphError, load_graph
    from service.config import ServiceConfig, ServiceConfigError

    try:
        loaded = load_graph(args.graph, args.overrides)
        extra = {"export_dir": args.export_dir} if args.export_dir is not None else {}
        if args.catalog_dir is not None:
            extra["catalog_dir"] = args.catalog_dir.expanduser().absolute()
        config = ServiceConfig.from_env(
            args.database_url or os.environ.get("TICKGRAPH_DATABASE_URL") or _DEFAULT_URL,
            host=args.host, port=args.port, graph=loaded.path, replay_overrides=tuple(args.overrides), **extra,
        )  # fmt: skip
    except (GraphError, ServiceConfigError) as exc:
        return _fail(str(exc))
    import ray

    from graph.cluster import ClusterError, join_ray, security_notice, start_private_ray
    from graph.secrets import install_redaction
    from service.app import create_app
    from service.cluster import RayCluster

    install_redaction()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:  # the same Ray as run.py: a private loopback instance, or exactly the --address cluster
        if args.address:
            info = join_ray(args.address, logging_level=logging.WARNING)
        else:
            info = start_private_ray(num_cpus=args.num_cpus, dashboard=not args.no_dashboard)
            print(security_notice(info), file=sys.stderr, flush=True)
    except ClusterError as exc:
        return _fail(str(exc))
    try:
        cluster = RayCluster()
        if info.get("dashboard_url"):
            print(f"Ray dashboard: {info['dashboard_url']}", flush=True)
        app = create_app(config, cluster=cluster)
        try:
            asyncio.run(_serve(app, config.host, config.port))
        except OSError as exc:
            return _fail(f"--host {config.host} --port {config.port}: {exc.strerror or exc}")
    finally:
        ray.shutdown()
    return 0
