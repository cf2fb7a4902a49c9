"""Build a validated graph into wired hosts: Ray actors, or plain objects in this process.

:func:`deploy` starts one Ray actor per node shard (a :class:`~graph.host.HostGroup`
wrapped by ``ray.remote``; a chain of parallelism-1 nodes shares one, as Flink chains
operators), wires every edge and returns a :class:`Deployment`; ``backend="local"`` builds
the same hosts in this process (tests, the in-process baseline). :func:`build_graph`
returns the :class:`~graph.driver.GraphRun` that drives a deployment to its end and
redeploys it from the last checkpoint when an actor dies.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from graph.failures import NodeFailure, find_node_failure
from graph.host import HostConfig, HostGroup, NodeHost
from graph.operator import Source
from graph.partition import Route
from graph.registry import load_kind
from graph.spec import LoadedGraph
from graph.transport import LocalTransport

__all__ = [
    "ABORT_CLOSE_TIMEOUT_S",
    "Deployment",
    "build_graph",
    "count_actors",
    "deploy",
    "plan_hosts",
    "plan_routes",
    "plan_chains",
]

#: Seconds an aborted run's actors get to close (sinks write what they hold) before they are killed.
ABORT_CLOSE_TIMEOUT_S = 30.0


def plan_hosts(
    loaded: LoadedGraph, run_id: str = "", checkpoint_dir: str | None = None, restore: int | None = None
) -> dict[str, list[HostConfig]]:
    """One :class:`HostConfig` per shard of every node, in topological order.

    Args:
        loaded: the validated graph.
        run_id: the run's id.
        checkpoint_dir: the run's checkpoint directory (None: checkpoints off).
        restore: the checkpoint every shard restores at start (None: fresh).
    """
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
                checkpoint_dir=checkpoint_dir,
                restore=restore,
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


class Deployment:
    """The started hosts of one attempt of a graph run.

    Attributes:
        backend: ``"ray"`` or ``"local"``.
        hosts: ``(node id, shard)`` -> the host (local) or its actor handle (Ray; the
            shards of a chain share one).
        sources: the source shards' keys, in topological order.
    """

    def __init__(self, loaded: LoadedGraph, backend: str, hosts: dict[tuple[str, int], Any]) -> None:
        self.loaded = loaded
        self.backend = backend
        self.hosts = hosts
        self.sources = [key for key in hosts if issubclass(load_kind(loaded.spec.node(key[0]).kind), Source)]

    @property
    def channels(self) -> list[str]:
        """Every shard's channel name (``node#shard``)."""
        return [f"{node}#{shard}" for node, shard in self.hosts]

    def _groups(self) -> list[Any]:
        return list({id(h): h for h in self.hosts.values()}.values())

    def metrics(self) -> list[dict[str, Any]]:
        """``NodeHost.metrics()`` of every shard, in topological order."""
        if self.backend == "local":
            return [host.metrics() for host in self.hosts.values()]
        import ray

        per_group = ray.get([g.metrics.remote() for g in self._groups()])
        by_key = {(m["node_id"], m["shard"]): m for metrics in per_group for m in metrics}
        return [by_key[key] for key in self.hosts]

    def abort(self, error: str | None = None, write: bool = True) -> None:
        """Stop every host now without waiting for drains, then kill the actors.

        Args:
            error: the failure (None: an interrupt).
            write: let healthy sinks write what they hold (an abort that ends the run);
                False before a restart (see :meth:`graph.host.NodeHost.close`).

        On Ray an actor that does not close within :data:`ABORT_CLOSE_TIMEOUT_S` (blocked
        on a dead peer) is killed regardless.
        """
        if self.backend == "local":
            for host in self.hosts.values():
                host.close(error, write=write)
            return
        import ray

        closing = [group.close.remote(error, write) for group in self._groups()]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=ABORT_CLOSE_TIMEOUT_S if write else 5.0)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Kill the actors of this deployment (no-op in-process)."""
        if self.backend == "local":
            return
        import ray

        for handle in self._groups():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # already dead: nothing left to release
                continue


def deploy(
    loaded: LoadedGraph,
    backend: str,
    run_id: str,
    *,
    checkpoint_dir: str | None = None,
    restore: int | None = None,
    attempt: int = 0,
) -> Deployment:
    """Start and wire every node shard (restoring each from checkpoint ``restore`` if given).

    Args:
        loaded: a validated graph (``graph.spec.load_graph``).
        backend: ``"ray"`` (actors in the connected Ray cluster; call ``ray.init``
            first) or ``"local"`` (plain objects in this process).
        run_id: the run's id (quarantine rows, actor names, metrics labels).
        checkpoint_dir: the run's checkpoint directory; None: no checkpoints.
        restore: the complete checkpoint to restore every shard from.
        attempt: 0 for the first deployment, 1, 2, ... for restarts (in actor names).

    Raises:
        NodeFailure: an operator failed to start (e.g. the store cannot connect).
        ValueError: unknown backend.
    """
    plan = plan_hosts(loaded, run_id, checkpoint_dir, restore)
    routes = plan_routes(loaded)
    max_in_flight = loaded.spec.runtime.max_in_flight
    if backend == "local":
        hosts: dict[tuple[str, int], Any] = {
            (c.node_id, c.shard): NodeHost(c) for configs in plan.values() for c in configs
        }
        transport = LocalTransport(hosts)
        for host in hosts.values():
            host.start()
        for (node_id, _), host in hosts.items():
            host.connect(routes[node_id], transport)
        return Deployment(loaded, backend, hosts)
    if backend != "ray":
        raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")

    import ray

    actor_class = ray.remote(HostGroup)
    placement = _placement(loaded.spec.runtime.placement)
    run_tag = run_id[:6] + (f"-r{attempt}" if attempt else "")
    hosts = {}
    groups = []
    for node_ids in plan_chains(loaded):
        shards = [config for node_id in node_ids for config in plan[node_id]]
        for shard in range(len(plan[node_ids[0]])):
            configs = shards if len(node_ids) > 1 else [plan[node_ids[0]][shard]]
            handle = actor_class.options(
                name=f"{loaded.spec.name}.{'+'.join(node_ids)}#{shard}.{run_tag}",
                max_restarts=0,  # a dead actor is replaced by a restart of the whole graph (graph/driver.py)
                max_concurrency=1,
                scheduling_strategy=placement(len(groups)),
            ).remote(configs)
            groups.append((handle, configs))
            for config in configs:
                hosts[(config.node_id, config.shard)] = handle
            if len(node_ids) > 1:
                break  # a chain is parallelism 1: one actor
    deployment = Deployment(loaded, backend, hosts)
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
        deployment.shutdown()
        raise
    return deployment


def _placement(mode: str) -> Callable[[int], Any]:
    """Actor number -> Ray scheduling strategy. ``spread``: round-robin over the alive
    nodes with CPUs, in node-id order (a soft node affinity: a node that is gone or full
    falls back to Ray's choice), so consecutive actors -- the shards of a keyed node --
    land on different nodes. Ray's own ``SPREAD`` is best-effort and may pack them."""
    if mode != "spread":
        return lambda _: "DEFAULT"
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)
    return lambda index: NodeAffinitySchedulingStrategy(nodes[index % len(nodes)], soft=True)


def build_graph(loaded: LoadedGraph, backend: str = "ray", run_id: str | None = None, *, resume: bool = False, record: bool = True):
    """Deploy every node shard; returns the :class:`~graph.driver.GraphRun` that drives it.

    Args:
        loaded: a validated graph (``graph.spec.load_graph``).
        backend: ``"ray"`` (call ``ray.init`` first) or ``"local"``.
        run_id: the run's id: stamped on quarantine rows, the ``job_runs`` id, its first 6
            hex digits in actor names, the ``run`` label of the actors' metrics
            (``graph/telemetry.py``); default a new uuid4 hex.
        resume: continue run ``run_id`` from its last complete checkpoint (a driver that
            was killed); ``run_id`` is then required.
        record: own the run's ``job_runs`` row when the graph names a job database
            (False when a caller keeps the row itself, as the service's replay driver does).

    Raises:
        NodeFailure: an operator failed to start.
        ValueError: unknown backend, or ``resume`` without ``run_id`` or checkpoints.
    """
    from graph.driver import GraphRun

    if resume and not run_id:
        raise ValueError("resume needs the run_id of the run to continue")
    return GraphRun(loaded, backend, run_id or uuid.uuid4().hex, resume=resume, record=record)
