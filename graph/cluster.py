"""Starting or joining Ray: a private instance on 127.0.0.1, or a named cluster within a bounded time.

Without ``--address`` tickgraph always starts its *own* Ray instance, whatever
``RAY_ADDRESS`` or Ray's "current cluster" file (someone else's ``ray start``) say, and
binds every one of its servers to the loopback interface:

* Ray derives the node IP from the network unless told otherwise, and its GCS, raylets,
  workers, dashboard agent and metrics exporters listen on it (or on every interface).
  :func:`start_private_ray` makes Ray treat the machine as a single-node installation
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: the node IP is then the loopback address,
  ``ray/_private/services.py: get_node_ip_address``), so nothing listens beyond 127.0.0.1,
  and the dashboard is bound to 127.0.0.1 as well.
* Token authentication (Ray >= 2.5x) is switched on explicitly (``RAY_AUTH_MODE=token``,
  unless you set ``RAY_AUTH_MODE`` yourself): every connection to the instance needs the
  token Ray keeps in ``~/.ray/auth_token`` (created on first use, readable by you only).
  Setting it explicitly is what Ray's "Token authentication is enabled" warning asks
  for, so tickgraph prints one line of its own instead (:func:`security_notice`).

With ``--address`` it joins that cluster and nothing else, and gives up after
``timeout_s`` with a message naming the address (:func:`join_ray`): Ray itself retries an
unreachable address for many minutes.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "ACTOR_MEMORY_BYTES",
    "ClusterError",
    "DEFAULT_JOIN_TIMEOUT_S",
    "join_ray",
    "memory_warning",
    "security_notice",
    "start_private_ray",
]

#: Memory one tickgraph actor (a Ray worker process) takes here, measured: 32 bar shards
#: peaked at 6.7 GiB for 4,000 ticks, about 210 MB each.
ACTOR_MEMORY_BYTES = 210 * 1024 * 1024
#: Seconds ``--address`` waits for the cluster before giving up.
DEFAULT_JOIN_TIMEOUT_S = 30.0
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class ClusterError(RuntimeError):
    """Ray could not be started or joined; the message says what was tried and how long."""


def _prepare_private_env() -> None:
    """Environment for a private loopback instance; must be set before Ray starts its node."""
    os.environ.update(_LOOPBACK_ENV)
    set_auth = "RAY_AUTH_MODE" not in os.environ
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.pop("RAY_ADDRESS", None)  # never join a cluster named by the environment
    if "ray" in sys.modules:  # imported already: it read its settings at import
        from ray._private import ray_constants
        from ray._raylet import Config

        ray_constants.ENABLE_RAY_CLUSTER = False
        if set_auth:
            Config.initialize("")  # re-read RAY_AUTH_MODE, as Ray's own token set-up does


def start_private_ray(
    num_cpus: int | None = None,
    dashboard: bool = True,
    logging_level: int = logging.WARNING,
    configure_logging: bool = True,
) -> dict[str, Any]:
    """Start a new Ray instance of this process only, listening on 127.0.0.1 only.

    Args:
        num_cpus: CPUs Ray may schedule on (None: all).
        dashboard: start the Ray dashboard (bound to 127.0.0.1).
        logging_level, configure_logging: passed to ``ray.init``.

    Returns:
        ``{"dashboard_url": "http://127.0.0.1:8265" or None, "node_ip": "127.0.0.1", "auth": "token" or ...}``.

    Raises:
        ClusterError: Ray failed to start (the message is Ray's first line).
    """
    _prepare_private_env()
    import ray

    try:
        context = ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            logging_level=logging_level,
            configure_logging=configure_logging,
        )
    except Exception as exc:  # Ray raises many types here; one clear line is what a user needs
        raise ClusterError(f"could not start a local Ray instance: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    url = getattr(context, "dashboard_url", None) or None
    return {
        "dashboard_url": f"http://{url}" if url and not url.startswith("http") else url,
        "node_ip": ray.util.get_node_ip_address(),
        "auth": os.environ.get("RAY_AUTH_MODE", "token"),
    }


def security_notice(info: dict[str, Any]) -> str:
    """One line saying how the private instance is secured (printed instead of Ray's warning)."""
    auth = info.get("auth", "token")
    how = (
        f"token authentication on (token in {Path.home() / '.ray' / 'auth_token'})"
        if auth == "token"
        else f"RAY_AUTH_MODE={auth}: token authentication off"
    )
    dashboard = f"; dashboard {info['dashboard_url']}" if info.get("dashboard_url") else "; no dashboard"
    return f"ray: private instance, listening on {info.get('node_ip', '127.0.0.1')} only, {how}{dashboard}"


def _target(address: str) -> tuple[str, int] | None:
    """(host, port) to probe for ``address``; None when Ray resolves it itself (``auto``)."""
    text = address.removeprefix("ray://")
    if text == "auto":
        current = Path("/tmp/ray/ray_current_cluster")
        if not current.is_file():
            raise ClusterError("--address auto: no Ray cluster is running on this machine (no /tmp/ray/ray_current_cluster); start one with 'ray start --head'")
        text = current.read_text().strip()
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def join_ray(address: str, timeout_s: float = DEFAULT_JOIN_TIMEOUT_S, **init_kwargs: Any) -> dict[str, Any]:
    """Join the Ray cluster at ``address``, or fail within about ``timeout_s`` seconds.

    The address is probed with a TCP connection first (every 0.5 s until the deadline),
    then ``ray.init`` runs with the time left; a Ray that still has not connected by then
    is abandoned.

    Args:
        address: ``host:port`` (GCS), ``ray://host:port`` (Ray client) or ``auto``.
        timeout_s: seconds to wait in all.
        init_kwargs: more ``ray.init`` arguments (``runtime_env``, ``logging_level``...).

    Returns:
        ``{"dashboard_url": ... or None, "address": address}``.

    Raises:
        ClusterError: nothing answered at the address in time, or Ray refused to connect.
    """
    deadline = time.monotonic() + timeout_s
    host, port = _target(address)
    last_error = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                break
        except OSError as exc:
            last_error = exc.strerror or type(exc).__name__
        if time.monotonic() >= deadline:
            raise ClusterError(f"no Ray cluster answers at {address} ({host}:{port}: {last_error}) after {timeout_s:g} s")
        time.sleep(0.5)
    import ray

    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            outcome["context"] = ray.init(address=address, **init_kwargs)
        except Exception as exc:  # reported in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=connect, name="ray-join", daemon=True)
    thread.start()
    thread.join(max(1.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise ClusterError(f"the Ray cluster at {address} accepted a connection but did not finish connecting within {timeout_s:g} s")
    if "error" in outcome:
        error = outcome["error"]
        raise ClusterError(f"could not join the Ray cluster at {address}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    url = getattr(outcome["context"], "dashboard_url", None) or None
    return {"dashboard_url": f"http://{url}" if url and not url.startswith("http") else url, "address": address}


def memory_warning(actors: int, available_bytes: int | None = None) -> str | None:
    """A warning when ``actors`` Ray actors would not fit the memory available, else None.

    Args:
        actors: how many actors the graph starts.
        available_bytes: memory available (default: this machine's, from ``psutil``).
    """
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    needed = actors * ACTOR_MEMORY_BYTES
    if needed <= 0.8 * available_bytes:
        return None
    gib = 1024**3
    return (
        f"warning: this graph starts {actors} Ray actors, about {needed / gib:.1f} GiB at "
        f"~{ACTOR_MEMORY_BYTES // (1024 * 1024)} MB each, and {available_bytes / gib:.1f} GiB of memory is "
        "available: lower the nodes' parallelism (a shard per symbol is rarely needed; shards share symbols)"
    )
