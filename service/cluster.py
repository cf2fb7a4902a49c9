"""The service's Ray side: the cluster handle (actor metrics) and the replay launcher.

* :class:`RayCluster`: the connected cluster; :meth:`RayCluster.metrics_text` fetches
  every alive node's metrics agent (``/metrics`` at the node's ``MetricsExportPort``),
  which ``service/metrics.py`` merges into the service's ``/metrics``.
* :class:`RayLauncher`: starts a replay job as a detached driver actor
  (``service/driver.py``) running the job's graph on the cluster, and cancels it by
  name. The HTTP process only inserts the ``job_runs`` row and makes two actor calls.

This module (and ``service/driver.py``) is the only place of the service that imports ray.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

__all__ = ["RayCluster", "RayLauncher", "LaunchError", "DRIVER_NAMESPACE"]

#: Ray namespace of the replay drivers, so any service process on the cluster finds them by name.
DRIVER_NAMESPACE = "tickgraph"

_log = logging.getLogger("tickgraph.service")


class LaunchError(RuntimeError):
    """The replay job could not be started on the cluster (the message says why)."""


class RayCluster:
    """The Ray cluster this process is connected to (``ray.init`` was called)."""

    def __init__(self) -> None:
        import ray

        self._ray = ray

    @classmethod
    def current(cls) -> RayCluster | None:
        """The cluster if this process is connected to one, else None."""
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a dependency
            return None
        return cls() if ray.is_initialized() else None

    def metrics_endpoints(self) -> list[str]:
        """``http://address:port/metrics`` of every alive node's metrics agent."""
        out = []
        for node in self._ray.nodes():
            port = node.get("MetricsExportPort")
            if node.get("Alive") and port:
                out.append(f"http://{node['NodeManagerAddress']}:{port}/metrics")
        return out

    async def metrics_text(self, timeout_s: float = 3.0) -> list[str]:
        """The Prometheus documents of every node's metrics agent (unreachable ones skipped)."""
        endpoints = await asyncio.to_thread(self.metrics_endpoints)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def fetch(url: str) -> str | None:
                try:
                    async with session.get(url) as response:
                        return await response.text() if response.status == 200 else None
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    _log.warning("Ray metrics agent %s unreachable: %s", url, type(exc).__name__)
                    return None

            texts = await asyncio.gather(*(fetch(url) for url in endpoints))
        return [t for t in texts if t]


class RayLauncher:
    """Starts and cancels service replay jobs on the cluster.

    Args:
        cluster: the connected cluster.
        state: the service state (config: store URL, replay graph, overrides; the ingest
            key and public URL the job's publisher node uses).
    """

    def __init__(self, cluster: RayCluster, state: Any) -> None:
        self.cluster = cluster
        self.state = state

    def start(self, job_id: str, overrides: list[str], metadata: dict[str, Any], start_ns: int, end_ns: int,
              publish_url: str) -> None:  # fmt: skip
        """Create the job's detached driver actor and start its run (returns at once).

        Raises:
            LaunchError: the actor could not be created.
        """
        import ray

        from service.driver import ReplayDriver, driver_name

        config = self.state.config
        actor = ray.remote(ReplayDriver).options(
            name=driver_name(job_id), namespace=DRIVER_NAMESPACE, lifetime="detached", max_concurrency=4, num_cpus=0,
            max_restarts=0,
        )
        try:
            handle = actor.remote(job_id, config.store_url, str(config.graph), overrides,
                                  (publish_url, self.state.ingest_key), metadata, start_ns, end_ns)  # fmt: skip
            done = handle.run.remote()
        except Exception as exc:  # ray raises many types here; the job row records the reason
            raise LaunchError(f"could not start the replay driver on the cluster: {type(exc).__name__}: {exc}") from exc
        _exit_when_done(handle, done)

    def cancel(self, job_id: str) -> bool:
        """Ask the job's driver to stop; False if no driver of that job is alive."""
        import ray

        from service.driver import driver_name

        try:
            handle = ray.get_actor(driver_name(job_id), namespace=DRIVER_NAMESPACE)
        except ValueError:
            return False
        try:
            return bool(ray.get(handle.cancel.remote(), timeout=10))
        except Exception as exc:  # a dying driver: the caller reads job_runs for the outcome
            _log.warning("cancel of replay job %s: driver did not answer: %s", job_id, type(exc).__name__)
            return False


def _exit_when_done(handle: Any, done: Any) -> None:
    """Kill the driver actor once its run returned (detached actors are not collected)."""
    import threading

    import ray

    def wait() -> None:
        try:
            ray.wait([done], num_returns=1, timeout=None)
        finally:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:  # already gone
                _log.debug("replay driver already gone: %s", exc)

    threading.Thread(target=wait, name="replay-driver-reaper", daemon=True).start()
