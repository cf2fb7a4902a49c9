"""Running the app on a thread of its own: for the ``api`` sink (inside a graph actor) and tests.

    server = ServiceServer(create_app(config), "127.0.0.1", 0)
    port = server.start()                 # listening when this returns
    server.call(hub.publish, bars)        # run on the service's loop, from any thread
    server.stop()

The loop runs in a daemon thread; :meth:`ServiceServer.call` hands work to it with
``call_soon_threadsafe`` and never waits, so a producer (a graph operator) is never
slowed by the service or its clients.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["ServiceServer", "access_logger"]

_log = logging.getLogger("tickgraph.service")


def access_logger() -> logging.Logger:
    """The access log (aiohttp's line: client, request line, status, size, referer, user agent).

    No header but Referer and User-Agent is logged, and no route takes a secret in its
    URL, so the bearer token never appears in it."""
    return logging.getLogger("tickgraph.service.access")


class ServiceServer:
    """An aiohttp application served from a private event loop thread.

    Args:
        app: the application (``service.app.create_app``).
        host: address to bind (the app's config already enforced the loopback rule).
        port: port (0: any free port).
    """

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tickgraph-service", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        """Bind and start serving; returns the bound port.

        Raises:
            OSError: the address is in use or cannot be bound.
        """
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=access_logger(), handle_signals=False, shutdown_timeout=3.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # noqa: SLF001 - the bound port
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        from service.app import STATE

        if STATE in self.app:
            self.app[STATE].bound_url = self.url
        return self.port

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the service's loop soon; returns at once (no-op once stopped)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def run(self, coroutine: Any, timeout: float | None = 30.0) -> Any:
        """Run ``coroutine`` on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """Close every connection and stop the loop (idempotent)."""
        if self._loop.is_closed():
            return
        if self._runner is not None:
            try:
                self.run(self._runner.cleanup(), timeout=10.0)
            except Exception as exc:  # stopping anyway: report why the cleanup did not finish
                _log.warning("service cleanup failed: %s: %s", type(exc).__name__, exc)
        try:
            self.run(_cancel_remaining(), timeout=5.0)
        except Exception as exc:  # handlers that ignore cancellation: the loop closes anyway
            _log.warning("service tasks did not finish: %s: %s", type(exc).__name__, exc)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self._loop.close()


async def _cancel_remaining() -> None:
    """Cancel the loop's other tasks (connection handlers left after cleanup) and wait for them."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
