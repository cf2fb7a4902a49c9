"""Build a validated graph into wired hosts (Ray actors or in-process) and drive it.

``build_graph(loaded, backend="ray")`` starts one Ray actor per node shard (a
``NodeHost`` wrapped by ``ray.remote``), wires every edge, and returns a
:class:`GraphRun`; ``backend="local"`` builds the same hosts as plain objects in this
process (tests, the in-process baseline). ``GraphRun.run()`` drives the sources
until end-of-stream, a ``--duration``, Ctrl-C, or a node failure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graph.operator import Source
from graph.runtime import HostConfig, HostGroup, LocalTransport, NodeFailure, NodeHost, Route, find_node_failure
from graph.spec import LoadedGraph

__all__ = [
    "ABORT_CLOSE_TIMEOUT_S",
    "RunResult",
    "GraphRun",
    "build_graph",
    "count_actors",
    "plan_hosts",
    "plan_routes",
    "plan_chains",
]

#: Seconds an aborted run's actors get to close (sinks write what they hold) before they are killed.
ABORT_CLOSE_TIMEOUT_S = 30.0


@dataclass
class RunResult:
    """What a finished run reports.

    Attributes:
        elapsed_s: wall seconds from the first source step to drained end-of-stream.
        hosts: ``NodeHost.metrics()`` of every shard, in topological order.
        stopped_early: True if ``--duration`` or Ctrl-C ended the sources.
    """

    elapsed_s: float
    hosts: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def plan_hosts(loaded: LoadedGraph, run_id: str = "") -> dict[str, list[HostConfig]]:
    """One :class:`HostConfig` per shard of every node, in topological order (``run_id``: the run's id)."""
    spec = loaded.spec
    plan: dict[str, list[HostConfig]] = {}
    for node_id in loaded.order:
        node = spec.node(node_id)
        channels: list[str] = []
        for upstream in dict.fromkeys(u for u, _ in loaded.edges[node_id]):
            channels.extend(f"{upstream}#{s}" for s in range(spec.node(upstream).parallelism))
        plan[node_id] = [
            HostConfig(
                node_id=node_id,
                kind=node.kind,
                params=node.params,
                shard=shard,
                num_shards=node.parallelism,
                base_dir=str(loaded.base_dir),
                inputs=channels,
                graph_file=str(loaded.path),
                event_time=spec.event_time.model_dump(),
                run_id=run_id,
            )
            for shard in range(node.parallelism)
        ]
    return plan


def plan_routes(loaded: LoadedGraph) -> dict[str, list[Route]]:
    """For every node, the routes to its downstream nodes (one per downstream node)."""
    spec = loaded.spec
    routes: dict[str, dict[str, set[str]]] = {n: {} for n in loaded.order}
    for node_id, inputs in loaded.edges.items():
        for upstream, stream in inputs:
            routes[upstream].setdefault(node_id, set()).add(stream)
    return {
        upstream: [
            Route(target=t, streams=frozenset(s), key=spec.node(t).key, num_shards=spec.node(t).parallelism)
            for t, s in sorted(targets.items())
        ]
        for upstream, targets in routes.items()
    }


def plan_chains(loaded: LoadedGraph) -> list[list[str]]:
    """Group node ids into actors: chains of parallelism-1 nodes linked by forward edges.

    A node joins its upstream's chain when both have parallelism 1 and that upstream
    is its only upstream node (``runtime.chain: false`` disables chaining). Returns
    the groups in topological order, each in topological order.
    """
    spec = loaded.spec
    group_of: dict[str, int] = {}
    groups: list[list[str]] = []
    for node_id in loaded.order:
        upstreams = {u for u, _ in loaded.edges[node_id]}
        if spec.runtime.chain and spec.node(node_id).parallelism == 1 and len(upstreams) == 1:
            (upstream,) = upstreams
            if spec.node(upstream).parallelism == 1:
                group_of[node_id] = group_of[upstream]
                groups[group_of[node_id]].append(node_id)
                continue
        group_of[node_id] = len(groups)
        groups.append([node_id])
    return groups


def count_actors(loaded: LoadedGraph) -> int:
    """How many Ray actors :func:`build_graph` starts for ``loaded``: one per shard of each
    node, except that a chain of parallelism-1 nodes shares one (:func:`plan_chains`)."""
    spec = loaded.spec
    return sum(1 if len(chain) > 1 else spec.node(chain[0]).parallelism for chain in plan_chains(loaded))


class GraphRun:
    """A built graph: drive it with :meth:`run`, then it is finished (one run per build)."""

    def __init__(self, loaded: LoadedGraph, backend: str, hosts: dict[tuple[str, int], Any], run_id: str = "") -> None:
        self.loaded = loaded
        self.run_id = run_id
        self.backend = backend
        self.hosts = hosts
        self.sources = [
            key for key in hosts if issubclass(_kind_class(loaded, key[0]), Source)
        ]

    def _metrics(self) -> list[dict[str, Any]]:
        if self.backend == "local":
            return [host.metrics() for host in self.hosts.values()]
        import ray

        groups = list({id(h): h for h in self.hosts.values()}.values())
        per_group = ray.get([g.metrics.remote() for g in groups])
        by_key = {(m["node_id"], m["shard"]): m for metrics in per_group for m in metrics}
        return [by_key[key] for key in self.hosts]

    def run(
        self,
        *,
        on_progress: Callable[[int, int | None], None] | None = None,
        duration_s: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RunResult:
        """Drive the sources to end-of-stream and collect every host's metrics.

        Args:
            on_progress: called with (rows emitted by sources, latest source watermark).
            duration_s: stop the sources after this many wall seconds, flush, finish.
            should_stop: polled between steps; True ends the sources cleanly (Ctrl-C).

        Returns:
            :class:`RunResult`.

        Raises:
            NodeFailure: a node raised or its actor died; names the node and shard.
        """
        pump_events = self.loaded.spec.runtime.pump_events
        started = time.perf_counter()
        stopped_early = False

        def stop_now() -> bool:
            nonlocal stopped_early
            if (duration_s is not None and time.perf_counter() - started >= duration_s) or (
                should_stop is not None and should_stop()
            ):
                stopped_early = True
            return stopped_early

        progress: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            if self.backend == "local":
                pending = list(self.sources)
                while pending:
                    for key in list(pending):
                        progress[key] = self.hosts[key].pump(pump_events, stop=stop_now())
                        if progress[key]["done"]:
                            pending.remove(key)
                        _report(on_progress, progress)
            else:
                import ray

                refs = {self.hosts[key].pump.remote(key, pump_events): key for key in self.sources}
                while refs:
                    ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
                    for ref in ready:
                        key = refs.pop(ref)
                        progress[key] = ray.get(ref)
                        if not progress[key]["done"]:
                            refs[self.hosts[key].pump.remote(key, pump_events, stop=stop_now())] = key
                    _report(on_progress, progress)
        except BaseException as exc:
            failure = find_node_failure(exc) if isinstance(exc, Exception) else None
            if failure is None and isinstance(exc, Exception):
                failure = NodeFailure("driver", 0, f"{type(exc).__name__}: {exc}")
            self.abort(str(failure) if failure is not None else None)
            if failure is not None:
                raise failure from None
            raise
        elapsed = time.perf_counter() - started
        metrics = self._metrics()
        self.shutdown()
        return RunResult(elapsed_s=elapsed, hosts=metrics, stopped_early=stopped_early)

    def abort(self, error: str | None = None) -> None:
        """Stop every host now (after a failure or an interrupt) without waiting for drains.

        Args:
            error: the failure (None: an interrupt): a replay records its job ``failed``
                with it, or ``cancelled``.

        Every operator is closed, so healthy sinks write what they have received and
        sources record how the run ended; on Ray an actor that does not close within
        :data:`ABORT_CLOSE_TIMEOUT_S` (blocked on a dead peer) is killed regardless.
        """
        if self.backend == "local":
            for host in self.hosts.values():
                host.close(error)
            return
        import ray

        groups = list({id(h): h for h in self.hosts.values()}.values())
        closing = [group.close.remote(error) for group in groups]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=ABORT_CLOSE_TIMEOUT_S)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Kill the actors of this graph (no-op in-process)."""
        if self.backend == "local":
            return
        import ray

        for handle in {id(h): h for h in self.hosts.values()}.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # already dead: nothing left to release
                continue


def _report(on_progress: Callable | None, progress: dict) -> None:
    if on_progress is None or not progress:
        return
    rows = sum(p["rows"] for p in progress.values())
    marks = [p["watermark"] for p in progress.values() if p["watermark"] is not None]
    on_progress(rows, max(marks) if marks else None)


def _kind_class(loaded: LoadedGraph, node_id: str) -> type:
    from actors import load_kind

    return load_kind(loaded.spec.node(node_id).kind)


def build_graph(loaded: LoadedGraph, backend: str = "ray", run_id: str | None = None) -> GraphRun:
    """Start and wire every node shard.

    Args:
        loaded: a validated graph (``graph.spec.load_graph``).
        backend: ``"ray"`` (actors in the connected Ray cluster; call ``ray.init``
            first) or ``"local"`` (plain objects in this process).
        run_id: the run's id: stamped on quarantine rows (a replay's ``job_runs.id``), its
            first 6 hex digits in actor names and the ``run`` label of the actors' metrics
            (``graph/telemetry.py``); default a new uuid4 hex.

    Returns:
        A :class:`GraphRun` ready to :meth:`GraphRun.run`.

    Raises:
        NodeFailure: an operator failed to start (e.g. the store cannot connect).
        ValueError: unknown backend.
    """
    run_id = run_id or uuid.uuid4().hex
    plan = plan_hosts(loaded, run_id)
    routes = plan_routes(loaded)
    max_in_flight = loaded.spec.runtime.max_in_flight
    if backend == "local":
        hosts: dict[tuple[str, int], Any] = {
            (c.node_id, c.shard): NodeHost(c) for configs in plan.values() for c in configs
        }
        transport = LocalTransport(hosts)
        for (node_id, _), host in hosts.items():
            host.start()
        for (node_id, _), host in hosts.items():
            host.connect(routes[node_id], transport)
        return GraphRun(loaded, backend, hosts, run_id)
    if backend != "ray":
        raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")

    import ray

    actor_class = ray.remote(HostGroup)
    run_tag = run_id[:6]
    hosts = {}
    groups = []
    for node_ids in plan_chains(loaded):
        shards = [config for node_id in node_ids for config in plan[node_id]]
        for shard in range(len(plan[node_ids[0]])):
            configs = shards if len(node_ids) > 1 else [plan[node_ids[0]][shard]]
            handle = actor_class.options(
                name=f"{loaded.spec.name}.{'+'.join(node_ids)}#{shard}.{run_tag}",
                max_restarts=0,
                max_concurrency=1,
            ).remote(configs)
            groups.append((handle, configs))
            for config in configs:
                hosts[(config.node_id, config.shard)] = handle
            if len(node_ids) > 1:
                break  # a chain is parallelism 1: one actor
    run = GraphRun(loaded, backend, hosts, run_id)
    try:
        starts = [(configs, handle.start.remote()) for handle, configs in groups]
        for configs, ref in starts:
            try:
                ray.get(ref)
            except Exception as exc:
                failure = find_node_failure(exc) or NodeFailure(
                    configs[0].node_id, configs[0].shard, f"{type(exc).__name__}: {exc}"
                )
                raise failure from None
        ray.get([handle.connect.remote(routes, hosts, max_in_flight) for handle, _ in groups])
    except BaseException:
        run.shutdown()
        raise
    return run
