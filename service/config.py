"""The service's settings and its binding rule.

Binding rule (the security default): the service listens on 127.0.0.1 unless told
otherwise; any address that is not loopback (``0.0.0.0``, a LAN address, ``::``) needs a
bearer token in ``$TICKGRAPH_API_TOKEN``, and :func:`check_bind` refuses to start
without one. With a token set, every request but the cockpit's static files, the
OpenAPI document and ``/healthz`` must carry ``Authorization: Bearer <token>``
(``service/errors.py``). The token is held in :class:`ServiceConfig` outside its
``repr`` and never written to a log line, an error or a response.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from catalog.layout import default_catalog_dir

__all__ = ["TOKEN_ENV", "DEFAULT_HOST", "DEFAULT_PORT", "ServiceConfig", "ServiceConfigError", "check_bind", "is_loopback"]

#: Environment variable holding the API bearer token.
TOKEN_ENV = "TICKGRAPH_API_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_ROOT = Path(__file__).resolve().parent.parent


class ServiceConfigError(ValueError):
    """Settings the service refuses to start with (the message names the setting; never the token)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a token.

    Raises:
        ServiceConfigError: ``host`` is not loopback and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise ServiceConfigError(
            f"--host {host}: listening beyond loopback needs a bearer token; set {TOKEN_ENV} "
            "(clients then send 'Authorization: Bearer <token>')"
        )


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the app factory needs besides its live handles.

    Attributes:
        store_url: SQLAlchemy URL of the store (bars_ohlcv, signals, job_runs, ...).
        host, port: where to listen (port 0: any free port).
        token: the bearer token, or None (loopback only); never shown by ``repr``.
        graph: the replay graph that ``POST /v1/replay/ticks`` runs (default
            ``config/replay.yaml``); its ``replay`` node's params are set from the request.
        replay_overrides: ``--set`` strings applied to every replay graph (e.g. a Parquet path).
        export_dir: where ``POST /v1/exports`` writes files (``<job id>.<format>``).
        catalog_dir: the tick catalog (ticks, per-tick signals) the service reads and its
            replay jobs' ``catalog`` sinks write (default ``$TICKGRAPH_CATALOG_DIR``, else
            ``out/catalog``: the main job's).
        symbols: symbols accepted besides those stored (None: the replay graph's normalizer's).
        backfill_bars: confirmed bars kept per WebSocket stream for ``?backfill=N``.
        client_buffer: unsent bytes per WebSocket client (its send queue) before it counts
            as too slow and is closed with 1008.
        client_stall_s: a WebSocket client whose socket took nothing for this long is closed (1008).
        client_send_buffer: SO_SNDBUF of each WebSocket connection, bytes (0: the kernel's).
        cache_bars, cache_ttl_s: the bar LRU tier (``db/cache.py``); the TTL bounds how stale
            bars written by other processes (the graph's store actor) can be.
        public_url: the URL replay graphs use to publish their bars into this service
            (default ``http://<host>:<port>``, loopback for a wildcard host).
        backtest_root: the backtests' artifacts directory served at ``/runs`` and
            ``/presets`` (``backtest/api.py``); None: no backtest routes.
        backtest_base_dir: where relative data paths of posted run configs resolve
            (None: the current directory).
    """

    store_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    graph: Path = _ROOT / "config" / "replay.yaml"
    replay_overrides: tuple[str, ...] = ()
    export_dir: Path = _ROOT / "out" / "exports"
    catalog_dir: Path = field(default_factory=default_catalog_dir)
    symbols: tuple[str, ...] | None = None
    backfill_bars: int = 2000
    client_buffer: int = 4 << 20
    client_stall_s: float = 10.0
    client_send_buffer: int = 65_536
    cache_bars: int = 200_000
    cache_ttl_s: float = 2.0
    public_url: str | None = None
    backtest_root: Path | None = Path("artifacts") / "backtests"
    backtest_base_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ServiceConfigError(f"--port {self.port}: must be 0..65535")
        if self.client_buffer < 1 or self.backfill_bars < 0:
            raise ServiceConfigError("client_buffer must be >= 1 byte and backfill_bars >= 0")
        check_bind(self.host, self.token)

    @classmethod
    def from_env(cls, store_url: str, **kwargs) -> ServiceConfig:
        """A config whose token comes from ``$TICKGRAPH_API_TOKEN`` (empty = none).

        Raises:
            ServiceConfigError: see :func:`check_bind`.
        """
        token = os.environ.get(TOKEN_ENV) or None
        return cls(store_url=store_url, token=token, **kwargs)
