"""The app factory: ``create_app(config, ...)`` builds the aiohttp application.

    app = create_app(ServiceConfig(store_url="sqlite:///tickgraph.db"), cluster=RayCluster.current())
    web.run_app(app, host="127.0.0.1", port=8000)      # or service/server.py: ServiceServer

As in freqtrade's ``rpc/api_server`` split: this module wires the live handles (the store
URL, the bar cache, the WebSocket hub, the Ray cluster, the replay launcher) into
:class:`ServiceState`, and mounts one routes module per resource
(``service/routes/``); request/response models are ``service/models.py`` and the OpenAPI
document is generated from them (``service/openapi.py``). Route modules of other
packages are mounted from :data:`EXTRA_ROUTE_INSTALLERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from db.cache import BarCache
from service import errors
from service.config import ServiceConfig
from service.hub import BarHub, Client
from service.metrics import ServiceMetrics
from service.openapi import OPERATIONS

__all__ = ["STATE", "ServiceState", "create_app", "ROUTE_INSTALLERS", "EXTRA_ROUTE_INSTALLERS"]

_log = logging.getLogger("tickgraph.service")


@dataclass
class ServiceState:
    """The live handles every route reads (``request.app[STATE]``).

    Attributes:
        config: the settings.
        hub: the WebSocket fan-out.
        cache: the bar LRU tier over the store.
        metrics: the service's prometheus_client metrics.
        cluster: the Ray cluster (``service/cluster.py``), or None without Ray.
        launcher: starts and cancels replay jobs (``service/cluster.py: RayLauncher``), or None.
        ingest_key: the key graphs present to publish bars here (``service/wire.py``).
        latest_signals: (symbol, name) -> the newest signal row received from a graph.
        bound_url: ``http://host:port`` once listening (set by whoever starts the server).
    """

    config: ServiceConfig
    hub: BarHub
    cache: BarCache
    metrics: ServiceMetrics
    cluster: Any = None
    launcher: Any = None
    ingest_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    latest_signals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    bound_url: str | None = None
    _symbols: tuple[float, frozenset[str]] = (0.0, frozenset())
    _graph_symbols: frozenset[str] | None = None

    @property
    def url(self) -> str:
        """The store's SQLAlchemy URL."""
        return self.config.store_url

    async def known_symbols(self) -> frozenset[str]:
        """Symbols the service knows: stored bars, live streams, the configured or graph symbols.

        The stored ones are re-read at most once per ``cache_ttl_s``.
        """
        loaded_at, stored = self._symbols
        if time.monotonic() - loaded_at > self.config.cache_ttl_s:
            from db.read import distinct_values_async
            from db.tables import bars_ohlcv

            stored = frozenset(await distinct_values_async(self.url, bars_ohlcv, "symbol"))
            self._symbols = (time.monotonic(), stored)
        return stored | self.hub.symbols() | self.configured_symbols()

    def public_url(self) -> str:
        """The URL graphs publish to: ``config.public_url``, else the bound address (a
        wildcard host is reached at 127.0.0.1).

        Raises:
            RuntimeError: the server is not listening yet.
        """
        if self.config.public_url:
            return self.config.public_url
        if self.bound_url is None:
            raise RuntimeError("the service is not listening yet (no bound address)")
        for wildcard in ("0.0.0.0", "[::]"):
            if f"//{wildcard}:" in self.bound_url:
                return self.bound_url.replace(wildcard, "127.0.0.1")
        return self.bound_url

    def configured_symbols(self) -> frozenset[str]:
        """``config.symbols``, else the replay graph's normalizer ``symbols`` (empty if none)."""
        if self.config.symbols is not None:
            return frozenset(self.config.symbols)
        if self._graph_symbols is None:
            from service.graphs import graph_symbols

            self._graph_symbols = frozenset(graph_symbols(self.config.graph))
        return self._graph_symbols


STATE = web.AppKey("state", ServiceState)


def _installers() -> list[Callable[[web.Application], None]]:
    from service.routes import backtests, bars, cockpit, exports, ingest, metrics, parity, replay, signals, ws

    return [bars.install, ws.install, replay.install, signals.install, exports.install, parity.install,
            metrics.install, ingest.install, cockpit.install, backtests.install]  # fmt: skip


#: This package's route modules, one per resource (see service/routes/).
ROUTE_INSTALLERS: list[Callable[[web.Application], None]] = []

# -- mount point for route modules of other packages ------------------------------------
#: Functions ``install(app: web.Application) -> None`` that add routes to the service, run
#: after ours; each may read ``app[STATE]`` and register documented operations with
#: ``service.openapi.add``. (The backtests' ``/runs`` and ``/presets`` are ours:
#: ``service/routes/backtests.py``.)
EXTRA_ROUTE_INSTALLERS: list[Callable[[web.Application], None]] = []


@web.middleware
async def _count_requests(request: web.Request, handler: Callable) -> web.StreamResponse:
    state = request.app[STATE]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        state.metrics.requests.labels(request.method, name, str(status)).inc()
        state.metrics.duration.labels(name).observe(time.perf_counter() - started)


def create_app(
    config: ServiceConfig,
    *,
    cluster: Any = None,
    launcher: Any = None,
    hub: BarHub | None = None,
    cache: BarCache | None = None,
) -> web.Application:
    """Build the service application.

    Args:
        config: settings (store URL, limits, the replay graph, the token).
        cluster: a ``service.cluster.RayCluster`` (actor metrics, replay jobs); None: no Ray.
        launcher: what starts replay jobs; default a ``RayLauncher`` when ``cluster`` is given.
        hub: the WebSocket fan-out (default: a new one from the config's limits).
        cache: the bar cache (default: a new ``BarCache`` over the store).

    Returns:
        The application; ``app[STATE]`` holds the handles. On startup it creates the
        store's tables if missing; on cleanup it closes the cache.
    """
    state_holder: dict[str, ServiceState] = {}

    def on_slow(client: Client) -> None:
        state_holder["state"].metrics.ws_slow.inc()

    def on_message(delivered: int) -> None:
        state_holder["state"].metrics.ws_sent.inc(delivered)

    hub = hub or BarHub(
        config.backfill_bars, config.client_buffer, config.client_stall_s, on_slow=on_slow, on_message=on_message
    )
    cache = cache or BarCache(config.store_url, capacity_bars=config.cache_bars, ttl_s=config.cache_ttl_s)
    state = ServiceState(config=config, hub=hub, cache=cache, metrics=ServiceMetrics(cache), cluster=cluster)
    state_holder["state"] = state
    if launcher is None and cluster is not None:
        from service.cluster import RayLauncher

        launcher = RayLauncher(cluster, state)
    state.launcher = launcher

    app = web.Application(
        middlewares=[_count_requests, errors.error_middleware, errors.auth_middleware(config.token)],
        client_max_size=errors.MAX_BODY_BYTES,
    )
    app[STATE] = state
    app[OPERATIONS] = []
    for install in [*_installers(), *ROUTE_INSTALLERS, *EXTRA_ROUTE_INSTALLERS]:
        install(app)
    app.on_startup.append(_create_tables)
    app.cleanup_ctx.append(_sweep_clients)
    app.on_cleanup.append(_close)
    return app


async def _create_tables(app: web.Application) -> None:
    from db.engine import create_engine
    from db.tables import metadata

    engine = create_engine(app[STATE].url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


async def _sweep_clients(app: web.Application):
    """Run the hub's write-timeout sweep every quarter of ``client_stall_s`` (at most 1 s)."""
    state = app[STATE]
    period = min(1.0, state.config.client_stall_s / 4)

    async def loop() -> None:
        while True:
            await asyncio.sleep(period)
            state.hub.sweep()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close(app: web.Application) -> None:
    app[STATE].cache.close()
