"""The host of one node shard: feeds its operator, routes what it emits, aligns checkpoint barriers.

One generic :class:`NodeHost` hosts one shard of one node. It is a plain class: the
builder wraps it (in a :class:`HostGroup`) with ``ray.remote`` for a deployment, or calls
it directly for the in-process chain (tests, backtests, the Ray-free baseline); only the
transport differs, so both run the same code.

Every incoming call produces at most one outgoing call per downstream shard, so the Ray
call count scales with batches, never with ticks.

Watermarks: a host with several input channels advances to the *minimum* of their
watermarks (as Flink does), and ends when every channel has sent end-of-stream. When a
host sees its last end-of-stream it forwards it and waits for every call it has in
flight, so a source's final ``pump`` returns only once the whole graph has drained; any
failure downstream surfaces there as :class:`~graph.failures.NodeFailure`.

Checkpoints (asynchronous barrier snapshotting, Carbone et al. 2015, as in Flink): a
source injects ``Barrier(n)`` when the driver asks (``pump(checkpoint=n)``), after its
last emitted event. A host with several channels *aligns* it like a watermark: a channel
that has delivered barrier ``n`` is held (its later messages queue up) until every open
channel has delivered ``n``; then the host calls its operator's ``snapshot()``, writes
that and its own counters to the run's :class:`~graph.checkpoints.CheckpointStore`
(atomically), forwards ``Barrier(n)`` and only then processes what was held. A sink's
``snapshot()`` makes its writes durable (the store commits the flush covering everything
before the barrier). A shard restored from checkpoint ``n`` (:meth:`NodeHost.start` with
``HostConfig.restore``) continues exactly as the uninterrupted run would from there.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from graph import telemetry
from graph.checkpoints import FINAL, CheckpointStore
from graph.failures import NodeFailure
from graph.messages import END_OF_STREAM, STOPPED, Barrier, Data, EndOfStream, Message, Watermark
from graph.operator import IDLE, OperatorContext
from graph.partition import Route
from graph.registry import load_kind
from graph.schemas import stamp_quarantine
from graph.secrets import install_redaction
from graph.times import DEFAULT_EARLIEST_NS, DEFAULT_LATEST_NS

__all__ = ["HostConfig", "NodeHost", "HostGroup"]

_log = logging.getLogger("tickgraph.host")
_SNAPSHOT_VERSION = 1


@dataclass
class HostConfig:
    """Everything a host needs to build its operator (picklable, sent to the actor).

    Attributes:
        node_id, kind, params: from the validated graph spec (params as plain data).
        shard, num_shards: this host's place in the node's parallelism.
        base_dir: the graph file's directory, for relative paths.
        inputs: the channels (``"node#shard"``) this host receives from.
        graph_file: the graph file (None when built in code).
        event_time: the graph's ``event_time`` settings (``EventTimeSettings.model_dump()``).
        run_id: the graph run's id (uuid4 hex): stamped on every quarantine row; the ``run``
            label of its metrics (``graph/telemetry.py``).
        checkpoint_dir: the run's checkpoint directory; None: checkpoints off.
        restore: the checkpoint to restore at start (None: start fresh).
    """

    node_id: str
    kind: str
    params: dict[str, Any]
    shard: int = 0
    num_shards: int = 1
    base_dir: str = "."
    inputs: list[str] = field(default_factory=list)
    graph_file: str | None = None
    event_time: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    checkpoint_dir: str | None = None
    restore: int | None = None


class NodeHost:
    """Hosts one shard of one node: feeds its operator and routes what it emits.

    Lifecycle: ``start()`` builds the operator (and restores it from a checkpoint if
    asked), ``connect(routes, transport)`` wires outputs; then either ``push()``
    (operators) or ``pump()`` (sources) until end-of-stream; ``metrics()`` at any time.
    """

    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.channel = f"{config.node_id}#{config.shard}"
        self.op: Any = None
        self.routes: list[Route] = []
        self.transport: Any = None
        self.channel_wm: dict[str, int | None] = {c: None for c in config.inputs}
        self.open_channels: set[str] = set(config.inputs)
        self.watermark: int | None = None
        self.finished = False
        self.failure: NodeFailure | None = None
        self.rows_in = 0
        self.rows_out: dict[str, int] = {}
        self.quarantined: dict[str, int] = {}
        self._rejections = 0  # quarantine rows emitted so far: the next one's position
        self._events: Iterator | None = None
        self._checkpoints = CheckpointStore(config.checkpoint_dir) if config.checkpoint_dir else None
        self._aligning: int | None = None  # the barrier being aligned
        self._blocked: set[str] = set()  # channels that delivered it
        self._held: dict[str, list[Message]] = {}  # their messages behind it
        self._last_barrier = 0
        self._stopped = False  # an input ended by a stop: what is open is incomplete
        self._final_operator_metrics: dict[str, Any] | None = None  # restored as finished
        self.telemetry: Any = telemetry.NULL_TELEMETRY  # actor metrics (graph/telemetry.py)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> str:
        """Build the operator from the config, restore it if asked; returns the channel name.

        Raises:
            NodeFailure: the params do not validate, the operator fails to start, or the
                checkpoint to restore is unreadable.
        """
        install_redaction()  # this process (a Ray worker) redacts its log lines too
        cfg = self.config
        cls = load_kind(cfg.kind)
        params = self._guard(lambda: cls.Params.model_validate(cfg.params, context={"base_dir": Path(cfg.base_dir)}))
        event_time = cfg.event_time
        idle_ms = event_time.get("idle_timeout_ms", 5_000)
        ctx = OperatorContext(
            node_id=cfg.node_id,
            shard=cfg.shard,
            num_shards=cfg.num_shards,
            base_dir=Path(cfg.base_dir),
            clock_ns=time.time_ns,
            graph_file=Path(cfg.graph_file) if cfg.graph_file else None,
            allowed_lateness_ns=event_time.get("allowed_lateness_ms", 0) * 1_000_000,
            late_policy=event_time.get("late_policy", "drop"),
            idle_timeout_ns=None if idle_ms is None else idle_ms * 1_000_000,
            forming_interval_ns=event_time.get("forming_interval_ms", 0) * 1_000_000,
            amend_window_ns=event_time.get("amend_window_ms", 3_600_000) * 1_000_000,
            earliest_ns=event_time.get("earliest", DEFAULT_EARLIEST_NS),
            latest_ns=event_time.get("latest", DEFAULT_LATEST_NS),
            run_id=cfg.run_id,
        )
        self.op = self._guard(lambda: cls(params, ctx))
        self.telemetry = telemetry.for_host(self, cls)
        if cfg.restore is not None:
            self._guard(lambda: self._restore(cfg.restore))
        return self.channel

    def connect(self, routes: list[Route], transport: Any) -> None:
        """Wire outputs: ``routes`` say where each stream goes, ``transport`` how."""
        self.routes = routes
        self.transport = transport

    def metrics(self) -> dict[str, Any]:
        """Counters: rows in/out per stream, quarantine reasons, watermark, operator metrics."""
        if self._final_operator_metrics is not None:
            op_metrics = self._final_operator_metrics
        else:
            op_metrics = self.op.metrics() if self.op is not None else {}
        return {
            "node_id": self.config.node_id,
            "kind": self.config.kind,
            "shard": self.config.shard,
            "rows_in": self.rows_in,
            "rows_out": dict(self.rows_out),
            "quarantined": dict(self.quarantined),
            "watermark": self.watermark,
            "finished": self.finished,
            "checkpoint": self._last_barrier,
            "operator": op_metrics,
        }

    # -- operators ----------------------------------------------------------------
    def push(self, channel: str, messages: list[Message]) -> None:
        """Deliver an ordered list of messages from input ``channel``.

        Raises:
            NodeFailure: this operator (or a downstream one) raised.
        """
        if self.failure is not None:
            raise self.failure
        if self.finished:  # restored as finished: its inputs end before the checkpoint
            return
        outbox: dict[tuple[str, int], list[Message]] = {}
        ended = self._deliver(channel, messages, outbox)
        self._send(outbox)
        if ended:
            self._finish()
        self.telemetry.after_step(self)

    def _deliver(self, channel: str, messages: list[Message], outbox: dict) -> bool:
        """Process ``messages`` of ``channel`` (holding them behind a barrier being aligned);
        True if the node has ended."""
        ended = False
        for message in messages:
            if channel in self._blocked:
                self._held[channel].append(message)
                continue
            if isinstance(message, Data):
                self.rows_in += message.batch.num_rows
                self.telemetry.received(message.stream, message.batch)
                self._route(self._guard(lambda m=message: self.op.on_batch(m.stream, m.batch)), outbox)
            elif isinstance(message, Watermark):
                self.channel_wm[channel] = message.ts
                self._advance_watermark(outbox)
            elif isinstance(message, Barrier):
                ended |= self._on_barrier(channel, message.checkpoint_id, outbox)
            elif isinstance(message, EndOfStream):
                self.open_channels.discard(channel)
                self.channel_wm.pop(channel, None)
                self._stopped |= message.stopped
                if self._aligning is not None and self.open_channels <= self._blocked:
                    ended |= self._complete_barrier(outbox)  # an ended channel needs no barrier
                elif self.open_channels:
                    self._advance_watermark(outbox)
                else:
                    self._end_stream(outbox)
                    ended = True
            else:
                raise TypeError(f"node {self.channel}: unknown message {message!r}")
        return ended

    def _advance_watermark(self, outbox: dict) -> None:
        marks = list(self.channel_wm.values())
        if not marks or any(m is None for m in marks):
            return
        low = min(marks)
        if self.watermark is None or low > self.watermark:
            self.watermark = low
            self._route(self._guard(lambda: self.op.on_watermark(low)), outbox)
            self._broadcast(Watermark(low), outbox)

    # -- checkpoints ----------------------------------------------------------------------
    def _on_barrier(self, channel: str, checkpoint: int, outbox: dict) -> bool:
        if checkpoint <= self._last_barrier:
            return False  # an old barrier (re-sent after a restore): already snapshotted
        if self._aligning is not None and checkpoint != self._aligning:
            raise RuntimeError(f"node {self.channel}: barrier {checkpoint} while aligning {self._aligning}")
        self._aligning = checkpoint
        self._blocked.add(channel)
        self._held.setdefault(channel, [])
        if self.open_channels <= self._blocked:
            return self._complete_barrier(outbox)
        return False

    def _complete_barrier(self, outbox: dict) -> bool:
        """Every open channel delivered the barrier: snapshot, forward it, release the held messages."""
        checkpoint = self._aligning
        self._write_checkpoint(checkpoint)
        self._broadcast(Barrier(checkpoint), outbox)
        held = self._held
        self._aligning, self._blocked, self._held = None, set(), {}
        ended = False
        for channel in sorted(held):  # deterministic order across channels
            ended |= self._deliver(channel, held[channel], outbox)
        if not self.open_channels and not ended:  # the channels that ended were all that was left
            self._end_stream(outbox)
            ended = True
        return ended

    def _end_stream(self, outbox: dict) -> None:
        """Every input has ended: the operator's ``on_eof`` (or ``on_stop`` after a stop)."""
        self._route(self._guard(self.op.on_stop if self._stopped else self.op.on_eof), outbox)
        self._broadcast(STOPPED if self._stopped else END_OF_STREAM, outbox)

    def _write_checkpoint(self, checkpoint: int) -> None:
        self._last_barrier = checkpoint
        if self._checkpoints is None:
            return
        state = {"version": _SNAPSHOT_VERSION, "host": self._host_state(), "operator": self._guard(self.op.snapshot)}
        self._guard(lambda: self._checkpoints.write(checkpoint, self.channel, state))

    def _host_state(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": dict(self.rows_out),
            "quarantined": dict(self.quarantined),
            "rejections": self._rejections,
            "watermark": self.watermark,
            "channel_wm": dict(self.channel_wm),
            "open_channels": sorted(self.open_channels),
            "last_barrier": self._last_barrier,
        }

    def _restore(self, checkpoint: int) -> None:
        if self._checkpoints is None:
            raise RuntimeError(f"node {self.channel}: restore from checkpoint {checkpoint} without a checkpoint_dir")
        found = self._checkpoints.state_for_restore(checkpoint, self.channel)
        if found is None:
            raise RuntimeError(f"node {self.channel}: checkpoint {checkpoint} in {self._checkpoints.directory} has no state for it")
        kind, state = found
        host = state["host"]
        self.rows_in = host["rows_in"]
        self.rows_out = dict(host["rows_out"])
        self.quarantined = dict(host["quarantined"])
        self._rejections = host["rejections"]
        self.watermark = host["watermark"]
        self.channel_wm = dict(host["channel_wm"])
        self.open_channels = set(host["open_channels"])
        self._last_barrier = host["last_barrier"]
        if kind == FINAL:  # it had ended before the checkpoint: it stays ended
            self.finished = True
            self._final_operator_metrics = state["operator_metrics"]
        else:
            self.op.restore(state["operator"])

    def _write_final(self) -> None:
        """A shard that ended records its final counters (see graph/checkpoints.py)."""
        if self._checkpoints is None or self.op is None:
            return
        state = {"version": _SNAPSHOT_VERSION, "host": self._host_state(), "operator_metrics": self.op.metrics()}
        try:
            self._checkpoints.write(FINAL, self.channel, state)
        except OSError as exc:  # the run's outcome does not depend on it; a restart would redo the shard
            _log.warning("node %s: could not record its final state: %s", self.channel, exc)

    # -- sources --------------------------------------------------------------------
    def pump(self, max_events: int = 8, stop: bool = False, checkpoint: int | None = None) -> dict[str, Any]:
        """Pull up to ``max_events`` events from the source and send them downstream.

        Args:
            max_events: events (batches or watermarks) to pull in this call.
            stop: end the stream now (Ctrl-C, ``--duration``): close the source,
                send end-of-stream and drain.
            checkpoint: start checkpoint ``n`` first: snapshot the source (its offsets)
                and inject ``Barrier(n)`` after everything emitted so far.

        Returns:
            ``{"rows": rows emitted so far, "watermark": ts or None, "done": bool,
            "checkpoint": the last barrier injected}``. A source that yields
            :data:`~graph.operator.IDLE` ends the step early.

        Raises:
            NodeFailure: the source, or any node downstream of it, failed.
        """
        if self.failure is not None:
            raise self.failure
        if self.finished:
            return self._progress()
        outbox: dict[tuple[str, int], list[Message]] = {}
        if checkpoint is not None and checkpoint > self._last_barrier:
            self._write_checkpoint(checkpoint)
            self._broadcast(Barrier(checkpoint), outbox)
        if self._events is None:
            self._events = iter(self._guard(self.op.events))
        done = stop
        if stop and callable(getattr(self.op, "stop", None)):
            # A source that buffers (a live feed) hands over what it already received.
            self._guard(self.op.stop)
            for event in self._guard(lambda: list(self._events)):
                self._emit_source_event(event, outbox)
        if not stop:
            for _ in range(max_events):
                event = self._guard(lambda: next(self._events, None))
                if event is None:
                    done = True
                    break
                if event is IDLE:
                    break
                self._emit_source_event(event, outbox)
        if done:
            self._broadcast(STOPPED if stop else END_OF_STREAM, outbox)
        self._send(outbox)
        if done:
            self._finish()
        self.telemetry.after_step(self)
        return self._progress()

    def _emit_source_event(self, event: Any, outbox: dict) -> None:
        if event is IDLE:
            return
        if isinstance(event, Watermark):
            if self.watermark is None or event.ts > self.watermark:
                self.watermark = event.ts
                self._broadcast(event, outbox)
        else:
            self._route([event], outbox)

    def _progress(self) -> dict[str, Any]:
        return {
            "rows": sum(self.rows_out.values()),
            "watermark": self.watermark,
            "done": self.finished,
            "checkpoint": self._last_barrier,
        }

    # -- routing ------------------------------------------------------------------------
    def _route(self, emits: list, outbox: dict) -> None:
        for stream, batch in emits or ():
            if batch.num_rows == 0:
                continue
            if stream == "quarantine":
                cfg = self.config
                batch = stamp_quarantine(batch, cfg.run_id, self._rejections, cfg.num_shards, cfg.shard)
                self._rejections += batch.num_rows
            self.rows_out[stream] = self.rows_out.get(stream, 0) + batch.num_rows
            self.telemetry.emitted(stream, batch)
            if stream == "quarantine":
                for item in pc.value_counts(batch.column("reason")).to_pylist():
                    self.quarantined[item["values"]] = self.quarantined.get(item["values"], 0) + item["counts"]
            for route in self.routes:
                if stream in route.streams:
                    for shard, part in route.split(batch):
                        outbox.setdefault((route.target, shard), []).append(Data(stream, part))

    def _broadcast(self, message: Message, outbox: dict) -> None:
        for route in self.routes:
            for shard in range(route.num_shards):
                outbox.setdefault((route.target, shard), []).append(message)

    def _send(self, outbox: dict) -> None:
        """Send every target its messages; a failing target does not keep the others from
        theirs (a healthy sink still gets the rows it is owed), the first failure is raised."""
        first: NodeFailure | None = None
        for (target, shard), messages in outbox.items():
            try:
                self.transport.send(target, shard, self.channel, messages)
            except NodeFailure as failure:
                first = first or failure
        if first is not None:
            self.failure = first
            raise first

    def _finish(self) -> None:
        try:
            self.transport.drain()
        except NodeFailure as failure:
            self.failure = failure
            self._end("failed", str(failure))
            raise
        else:
            self._end("completed", None)
            self._write_final()
        finally:
            self.finished = True
            self._close()

    def _end(self, outcome: str, error: str | None) -> None:
        """Tell an operator with an ``end(outcome, error)`` hook how the run ended for it:
        ``completed`` (everything downstream drained), ``failed`` (with the failing
        node's error) or ``cancelled``."""
        end = getattr(self.op, "end", None)
        if callable(end):
            try:
                end(outcome, error)
            except Exception as exc:  # the run's own outcome is what matters; say why the record failed
                _log.warning("node %s: recording the outcome %s failed: %s", self.channel, outcome, exc)

    def _close(self) -> None:
        if self.op is not None:
            self._guard(self.op.close)

    def control(self, command: str) -> Any:
        """Send ``command`` to the operator's ``control`` method (e.g. a replay's
        ``pause``/``resume``/``status``); for a running graph on Ray this call is
        queued behind the current step, so it takes effect between steps.

        Raises:
            ValueError: the operator takes no commands.
        """
        control = getattr(self.op, "control", None)
        if not callable(control):
            raise ValueError(f"node '{self.config.node_id}' ({self.config.kind}) takes no control commands")
        return self._guard(lambda: control(command))

    def close(self, error: str | None = None, write: bool = True) -> None:
        """Release the operator's resources (idempotent); used when a run is aborted.

        Args:
            error: the failure that aborted the run (None: an interrupt); an operator
                with an ``end`` hook records ``failed`` with it, or ``cancelled``.
            write: let a sink write what it holds first (an abort that ends the run).
                False for a restart: the checkpoint holds the sink's pending rows and the
                sources resend the rest, so writing now could only duplicate (a Parquet
                file cut at another row than the resumed run will cut it).

        A sink writes what it has received before it releases (its ``close``), so a
        failure elsewhere never discards rows a healthy sink already took.
        """
        if self.op is not None and not self.finished:
            self.finished = True
            self._end("failed" if error else "cancelled", error)
            try:
                discard = getattr(self.op, "discard", None)
                if not write and callable(discard):
                    discard()
                self.op.close()
            except Exception as exc:  # closing after a failure: the first error is what matters
                _log.warning("node %s: close after abort failed: %s", self.channel, exc)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run operator code; turn its exception into this node's NodeFailure."""
        try:
            return fn()
        except NodeFailure:
            raise
        except Exception as exc:
            self.telemetry.failed(self)
            self.failure = NodeFailure(
                self.config.node_id,
                self.config.shard,
                f"{type(exc).__name__}: {exc}",
                traceback.format_exc(),
            )
            # Not chained: Ray renders the whole cause chain into its error text and worker
            # logs, and an operator's exception may carry a statement's rows or a key; the
            # (redacted) traceback travels in ``details`` for --verbose.
            raise self.failure from None


class HostGroup:
    """The hosts that share one Ray actor: a chain of nodes linked by forward edges.

    As in Flink's operator chaining, a node with parallelism 1 whose only upstream
    node also has parallelism 1 runs in its upstream's actor: batches pass between
    them by a direct call instead of through the object store. Every other edge is a
    Ray call with backpressure. A group of one host is the unchained case.
    """

    def __init__(self, configs: list[HostConfig]) -> None:
        self.hosts = {(c.node_id, c.shard): NodeHost(c) for c in configs}

    def start(self) -> list[str]:
        """Build every hosted operator; returns their channel names."""
        return [host.start() for host in self.hosts.values()]

    def connect(self, routes: dict[str, list[Route]], handles: dict[tuple[str, int], Any], max_in_flight: int) -> None:
        """Wire every hosted node: ``routes`` by node id, ``handles`` by (node, shard)."""
        from graph.transport import RayTransport

        transport = RayTransport(handles, max_in_flight, local=self.hosts)
        for (node_id, _), host in self.hosts.items():
            host.connect(routes[node_id], transport)

    def push(self, target: tuple[str, int], channel: str, messages: list[Message]) -> None:
        """Deliver to hosted node shard ``target`` (see :meth:`NodeHost.push`)."""
        self.hosts[target].push(channel, messages)

    def pump(self, source: tuple[str, int], max_events: int = 8, stop: bool = False, checkpoint: int | None = None) -> dict[str, Any]:
        """Step hosted source ``source`` (see :meth:`NodeHost.pump`)."""
        return self.hosts[source].pump(max_events, stop=stop, checkpoint=checkpoint)

    def node_id(self) -> str:
        """The hex id of the Ray node this actor runs on (placement, ``runtime.placement``)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def metrics(self) -> list[dict[str, Any]]:
        """Metrics of every hosted shard."""
        return [host.metrics() for host in self.hosts.values()]

    def control(self, target: tuple[str, int], command: str) -> Any:
        """Send ``command`` to hosted node shard ``target`` (see :meth:`NodeHost.control`)."""
        return self.hosts[target].control(command)

    def close(self, error: str | None = None, write: bool = True) -> None:
        """Release every hosted operator's resources after an abort (see :meth:`NodeHost.close`)."""
        for host in self.hosts.values():
            host.close(error, write=write)
