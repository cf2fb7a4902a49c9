"""The driver of a graph run: pumps the sources, triggers checkpoints, restarts, keeps the run's record.

:class:`GraphRun` drives a :class:`~graph.build.Deployment` until every source has ended
(and so the whole graph has drained), a ``--duration``, Ctrl-C, or a failure.

Checkpoints: every ``runtime.checkpoint_interval_ms`` of wall time the driver starts
checkpoint ``n``: each running source's next step snapshots its offset and injects
``Barrier(n)`` (``NodeHost.pump(checkpoint=n)``); the hosts align and persist it
(``graph/host.py``). Once every shard has its file for ``n`` (or had ended before), the
checkpoint is complete: the driver marks it, records it in the run's ``job_runs``
metadata and drops older ones. One checkpoint is in flight at a time.

Restarts (global rollback, as in Flink): when an actor dies (a shard's process killed,
out of memory, its node lost), the driver kills the rest of the deployment without
letting sinks write, deploys the graph again with the same run id, restores every shard
from the last complete checkpoint (or starts over when there is none), and continues:
the sources rewind to the checkpoint's offsets, and since sinks upsert by primary key
and Parquet files are deterministic, what is sent again leaves the outputs as if
nothing had happened. After ``runtime.max_restarts`` restarts the run fails with the
node and shard that died. An operator that raises is not restarted: it would raise again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.build import Deployment, deploy
from graph.checkpoints import CheckpointStore
from graph.failures import NodeFailure, find_node_failure, is_actor_death
from graph.run_record import RunRecord, job_database_url
from graph.spec import LoadedGraph

__all__ = ["RunResult", "GraphRun"]

_log = logging.getLogger("tickgraph.driver")


@dataclass
class RunResult:
    """What a finished run reports.

    Attributes:
        elapsed_s: wall seconds from the first source step to drained end-of-stream.
        hosts: ``NodeHost.metrics()`` of every shard, in topological order.
        stopped_early: True if ``--duration`` or Ctrl-C ended the sources.
        run_id: the run's id (``--resume RUN_ID`` continues a stopped or failed run).
        restarts: how many times the graph was redeployed after an actor died.
        checkpoint: the last complete checkpoint (None: none).
        recoveries: per restart, ``{"failure", "detected_s", "resumed_s"}``: seconds from
            the run's start to the failure's detection and to the first step after it.
    """

    elapsed_s: float
    hosts: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    run_id: str = ""
    restarts: int = 0
    checkpoint: int | None = None
    recoveries: list[dict[str, Any]] = field(default_factory=list)


class GraphRun:
    """A deployed graph and its driver: :meth:`run` it once.

    Args:
        loaded: the validated graph.
        backend: ``"ray"`` or ``"local"``.
        run_id: the run's id.
        resume: continue from the run's last complete checkpoint (``--resume``).
        record: own the run's ``job_runs`` row (see ``graph/run_record.py``).

    Raises:
        NodeFailure: a node failed to start.
        ValueError: ``resume`` without a complete checkpoint (or with checkpoints off).
    """

    def __init__(self, loaded: LoadedGraph, backend: str, run_id: str, *, resume: bool = False, record: bool = True) -> None:
        self.loaded, self.backend, self.run_id = loaded, backend, run_id
        runtime = loaded.spec.runtime
        self.max_restarts = runtime.max_restarts
        self.interval_s = runtime.checkpoint_interval_ms / 1000
        self.checkpoints = CheckpointStore(Path(runtime.checkpoint_dir) / run_id) if self.interval_s > 0 else None
        self.restarts = 0
        self.recoveries: list[dict[str, Any]] = []
        self.resumed_from: int | None = None
        self.last_complete: int | None = None
        restore = None
        if resume:
            if self.checkpoints is None:
                raise ValueError(f"run {run_id}: cannot resume, runtime.checkpoint_interval_ms is 0 (checkpoints off)")
            restore = self.checkpoints.latest_complete()
            if restore is None:
                raise ValueError(f"run {run_id} has no complete checkpoint in {self.checkpoints.directory}")
            self.resumed_from = self.last_complete = restore
        kinds = {node.kind for node in loaded.spec.nodes}
        self.record = RunRecord(
            job_database_url(loaded) if record else None,
            run_id,
            "replay" if "replay" in kinds else "graph",
            {"graph": loaded.spec.name, "graph_file": str(loaded.path), "restarts": 0, "checkpoint": restore},
        )
        self.deployment: Deployment = self._deploy(restore)

    @property
    def hosts(self) -> dict[tuple[str, int], Any]:
        """The current deployment's hosts (or actor handles) by ``(node id, shard)``."""
        return self.deployment.hosts

    def _deploy(self, restore: int | None) -> Deployment:
        if self.checkpoints is not None:
            self.checkpoints.discard_after(restore)
        directory = str(self.checkpoints.directory) if self.checkpoints is not None else None
        deployment = deploy(self.loaded, self.backend, self.run_id, checkpoint_dir=directory, restore=restore,
                            attempt=self.restarts)  # fmt: skip
        if self.checkpoints is not None:  # shards that run again must not count as ended
            running = [c for c in deployment.channels if restore is None or self.checkpoints.read(restore, c) is not None]
            self.checkpoints.clear_final(running)
        return deployment

    def abort(self, error: str | None = None) -> None:
        """Stop every host now (after a failure or an interrupt); healthy sinks write what they hold."""
        self.deployment.abort(error)

    def shutdown(self) -> None:
        """Kill the actors of the current deployment (no-op in-process)."""
        self.deployment.shutdown()

    # -- the run ---------------------------------------------------------------------------------
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
            NodeFailure: a node raised, or actors kept dying after ``max_restarts``
                restarts; names the node and shard. The run's record says ``failed``.
        """
        started = time.perf_counter()
        state = {"stopped": False}

        def stop_now() -> bool:
            if (duration_s is not None and time.perf_counter() - started >= duration_s) or (
                should_stop is not None and should_stop()
            ):
                state["stopped"] = True
            return state["stopped"]

        self.record.start(resumed_from=self.resumed_from)
        while True:
            try:
                self._drive(on_progress, stop_now, started)
                break
            except BaseException as exc:
                failure = find_node_failure(exc) if isinstance(exc, Exception) else None
                if failure is None and isinstance(exc, Exception):
                    failure = NodeFailure("driver", 0, f"{type(exc).__name__}: {exc}", actor_died=is_actor_death(exc))
                if failure is not None and self._restartable(failure):
                    try:
                        self._restart(failure, time.perf_counter() - started)
                        continue
                    except NodeFailure as again:  # the redeploy itself failed for good: the run failed
                        failure = again
                error = str(failure) if failure is not None else None
                self.deployment.abort(error)
                self.record.finish("failed" if failure is not None else "cancelled", error)
                if failure is not None:
                    raise failure from None
                raise
        elapsed = time.perf_counter() - started
        metrics = self.deployment.metrics()
        self.deployment.shutdown()
        sources = {key for key in self.deployment.sources}
        source_metrics = [m["operator"] for m in metrics if (m["node_id"], m["shard"]) in sources]
        self.record.finish("cancelled" if state["stopped"] else "completed", sources=source_metrics)
        if self.checkpoints is not None and not state["stopped"]:
            self.checkpoints.remove()  # a completed run has nothing to resume
        return RunResult(elapsed, metrics, state["stopped"], self.run_id, self.restarts, self.last_complete, self.recoveries)

    def _restartable(self, failure: NodeFailure) -> bool:
        return failure.actor_died and self.backend == "ray" and self.restarts < self.max_restarts

    def _restart(self, failure: NodeFailure, at_s: float) -> None:
        """Kill the deployment, deploy again from the last complete checkpoint."""
        self.restarts += 1
        restore = self.checkpoints.latest_complete() if self.checkpoints is not None else None
        _log.warning("%s; restart %d of %d from checkpoint %s", failure, self.restarts, self.max_restarts, restore)
        self.deployment.abort(str(failure), write=False)
        self.recoveries.append({"failure": str(failure), "detected_s": round(at_s, 3), "checkpoint": restore})
        self.last_complete = restore
        while True:
            try:
                self.deployment = self._deploy(restore)
                break
            except NodeFailure as again:  # e.g. placed on a node not yet known to be dead
                if not self._restartable(again):
                    raise
                self.restarts += 1
                _log.warning("%s while redeploying; restart %d of %d", again, self.restarts, self.max_restarts)
                time.sleep(min(5.0, 0.5 * self.restarts))  # let Ray notice the lost node
        self.record.beat(force=True, restarts=self.restarts, checkpoint=restore, last_failure=str(failure))

    def _drive(self, on_progress: Callable | None, stop_now: Callable[[], bool], started: float) -> None:
        """Pump every source to its end, with checkpoints; raises on a failure."""
        deployment, pump_events = self.deployment, self.loaded.spec.runtime.pump_events
        coordinator = _Checkpoints(self, deployment)
        progress: dict[tuple[str, int], dict[str, Any]] = {}
        resumed = False

        def stepped() -> None:
            nonlocal resumed
            if self.recoveries and not resumed:  # the first step after a restart: progress again
                resumed = True
                self.recoveries[-1].setdefault("resumed_s", round(time.perf_counter() - started, 3))
            coordinator.poll()
            _report(on_progress, progress)
            self.record.beat(sum(p["rows"] for p in progress.values()), checkpoint=self.last_complete, restarts=self.restarts)

        if self.backend == "local":
            pending = list(deployment.sources)
            while pending:
                for key in list(pending):
                    stop = stop_now()
                    progress[key] = deployment.hosts[key].pump(pump_events, stop=stop, checkpoint=coordinator.barrier_for(key, stop))
                    if progress[key]["done"]:
                        pending.remove(key)
                        coordinator.finished(key)
                    stepped()
            coordinator.poll()
            return
        import ray

        def step(key: tuple[str, int], stop: bool = False) -> Any:
            return deployment.hosts[key].pump.remote(key, pump_events, stop=stop, checkpoint=coordinator.barrier_for(key, stop))

        refs = {step(key): key for key in deployment.sources}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
            for ref in ready:
                key = refs.pop(ref)
                try:
                    progress[key] = ray.get(ref)
                except Exception as exc:
                    failure = find_node_failure(exc)
                    if failure is not None:
                        raise failure from None
                    raise NodeFailure(key[0], key[1], f"{type(exc).__name__}: {exc}".splitlines()[0],
                                      actor_died=is_actor_death(exc)) from None  # fmt: skip
                if progress[key]["done"]:
                    coordinator.finished(key)
                else:
                    refs[step(key, stop_now())] = key
            stepped()
        coordinator.poll()


class _Checkpoints:
    """The driver's side of checkpointing for one deployment: trigger, then wait for completion."""

    def __init__(self, run: GraphRun, deployment: Deployment) -> None:
        self.run, self.store = run, run.checkpoints
        self.channels = deployment.channels
        self.sources = list(deployment.sources)
        existing = self.store.checkpoints() if self.store is not None else []
        self.next_id = max([run.last_complete or 0, *existing]) + 1
        self.in_flight: int | None = None
        self.waiting: set[tuple[str, int]] = set()  # sources still to inject ``in_flight``
        self.last = time.monotonic()

    def barrier_for(self, source: tuple[str, int], stop: bool = False) -> int | None:
        """The checkpoint ``source``'s next step must start, if any (starting one when due).

        A stopping step always starts one: a stopped run keeps its checkpoints, so
        ``--resume`` continues it (its open bars complete instead of staying partial).
        """
        if self.store is None:
            return None
        if self.in_flight is None and (stop or time.monotonic() - self.last >= self.run.interval_s):
            self.in_flight, self.waiting = self.next_id, set(self.sources)
            self.next_id += 1
        if self.in_flight is not None and source in self.waiting:
            self.waiting.discard(source)
            return self.in_flight
        return None

    def finished(self, source: tuple[str, int]) -> None:
        """``source`` has ended: it will inject no more barriers (its final state counts)."""
        self.waiting.discard(source)
        if source in self.sources:
            self.sources.remove(source)

    def poll(self) -> None:
        """Mark the checkpoint in flight complete once every shard has persisted it."""
        if self.in_flight is None or self.waiting or not self.store.is_complete(self.in_flight, self.channels):
            return
        done, self.in_flight, self.last = self.in_flight, None, time.monotonic()
        self.store.mark_complete(done, {"run_id": self.run.run_id, "restarts": self.run.restarts, "completed_ns": time.time_ns()})
        self.run.last_complete = done
        self.run.record.beat(force=True, checkpoint=done, restarts=self.run.restarts)


def _report(on_progress: Callable | None, progress: dict) -> None:
    if on_progress is None or not progress:
        return
    rows = sum(p["rows"] for p in progress.values())
    marks = [p["watermark"] for p in progress.values() if p["watermark"] is not None]
    on_progress(rows, max(marks) if marks else None)
