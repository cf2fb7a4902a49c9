"""The graph runtime: hosting operators, routing micro-batches, backpressure, watermarks.

One generic :class:`NodeHost` hosts one shard of one node. It is a plain class: the
builder wraps it with ``ray.remote`` for a deployment, or calls it directly for the
in-process chain (tests, backtests, the Ray-free baseline). Only the *transport*
differs (:class:`RayTransport` / :class:`LocalTransport`), so both run the same code.

Wire protocol between hosts: ``push(channel, messages)`` where ``channel`` names the
sending shard (``"normalizer#0"``) and ``messages`` is an ordered list of

    ("data", stream, RecordBatch) | ("wm", ts_ns) | ("eof",)

Every incoming call produces at most one outgoing call per downstream shard, so the
Ray call count scales with batches, never with ticks. Ray runs calls from one caller
to one synchronous actor in submission order, so each edge is FIFO and watermarks
and end-of-stream stay in order with the data (docs: ray-core/actors/task-orders).

Watermarks: a host with several input channels advances to the *minimum* of its
channels' watermarks (as Flink does), and ends when every channel has sent ``eof``.
When a host sees its last ``eof`` it forwards ``eof`` and then waits for every call
it has in flight, so a source's final ``pump`` returns only once the whole graph
has drained; any failure downstream surfaces there as :class:`NodeFailure`.

Backpressure: at most ``max_in_flight`` calls per (sender, receiver shard) are
pending; a sender blocks on the oldest before sending more (Ray pattern
"limit-pending-tasks"), so a fast source never fills memory in front of a slow sink.
"""

from __future__ import annotations

import logging
import traceback
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors import load_kind
from graph import telemetry
from graph.operator import IDLE, OperatorContext, Source, Watermark
from graph.schemas import stamp_quarantine
from graph.secrets import install_redaction, redact
from graph.text import printable
from graph.times import DEFAULT_EARLIEST_NS, DEFAULT_LATEST_NS

__all__ = [
    "DATA",
    "WATERMARK",
    "EOF",
    "NodeFailure",
    "Route",
    "NodeHost",
    "LocalTransport",
    "RayTransport",
    "HostGroup",
    "shard_of",
    "partition_batch",
]

_log = logging.getLogger("tickgraph.runtime")

DATA = "data"
WATERMARK = "wm"
EOF = "eof"

Message = tuple


class NodeFailure(RuntimeError):
    """A node's operator raised (or its actor died); names the node and shard.

    Attributes:
        node_id: the YAML node id.
        shard: the shard index.
        error: one line, ``ExceptionType: message``.
        details: the formatted traceback inside the operator (for ``--verbose``).
    """

    def __init__(self, node_id: str, shard: int, error: str, details: str = "") -> None:
        error, details = redact(printable(error)), redact(details)
        super().__init__(f"node '{node_id}' (shard {shard}) failed: {error}")
        self.node_id = node_id
        self.shard = shard
        self.error = error
        self.details = details

    def __reduce__(self):  # keep attributes across Ray's pickling
        return (NodeFailure, (self.node_id, self.shard, self.error, self.details))


def find_node_failure(exc: BaseException) -> NodeFailure | None:
    """The innermost :class:`NodeFailure` in ``exc``'s cause chain (Ray wraps errors)."""
    seen: set[int] = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NodeFailure):
            found = exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return found


_SHARD_CACHE: dict[tuple[str, int], int] = {}


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard of ``key``: ``crc32(utf-8 key) % num_shards`` (same in every process/run)."""
    cached = _SHARD_CACHE.get((key, num_shards))
    if cached is None:
        cached = zlib.crc32(key.encode("utf-8")) % num_shards
        _SHARD_CACHE[(key, num_shards)] = cached
    return cached


def partition_batch(batch: pa.RecordBatch, key: str, num_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """Split ``batch`` by the stable hash of string column ``key``.

    Row order within each part is the batch's order. Cost: one dictionary encoding
    of the key column, one stable argsort and one ``take``; the parts are slices.

    Returns:
        ``[(shard, sub_batch), ...]`` for the shards that receive rows, ascending.

    Raises:
        KeyError: ``key`` is not a column of ``batch``.
    """
    column = batch.column(key)  # raises KeyError with the column name
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    values = encoded.dictionary.to_pylist()
    shard_per_value = np.fromiter((shard_of(v, num_shards) for v in values), dtype=np.int64, count=len(values))
    present = np.unique(shard_per_value)
    if len(present) == 1:
        return [(int(present[0]), batch)]
    shards = shard_per_value[encoded.indices.to_numpy(zero_copy_only=False)]
    order = np.argsort(shards, kind="stable")
    counts = np.bincount(shards, minlength=num_shards)
    ordered = batch.take(pa.array(order))
    parts, start = [], 0
    for shard in range(num_shards):
        if counts[shard]:
            parts.append((shard, ordered.slice(start, int(counts[shard]))))
            start += int(counts[shard])
    return parts


@dataclass
class Route:
    """Where one node's outputs go: one downstream node (all its shards).

    Attributes:
        target: downstream node id.
        streams: which of this node's output streams the target subscribes to.
        key: partition column for a keyed target (``"symbol"``); None = round-robin.
        num_shards: the target's parallelism.
    """

    target: str
    streams: frozenset[str]
    key: str | None
    num_shards: int
    _next: int = 0

    def split(self, batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch]]:
        """The (shard, rows) parts of ``batch`` for this route."""
        if self.num_shards == 1:
            return [(0, batch)]
        if self.key is not None:
            return partition_batch(batch, self.key, self.num_shards)
        shard = self._next
        self._next = (self._next + 1) % self.num_shards
        return [(shard, batch)]


class LocalTransport:
    """In-process delivery: a call is a direct method call on the target host."""

    def __init__(self, hosts: dict[tuple[str, int], NodeHost]) -> None:
        self.hosts = hosts

    def send(self, target: str, shard: int, channel: str, messages: list[Message]) -> None:
        """Push ``messages`` (in order) on ``channel`` of host ``(target, shard)``, synchronously."""
        self.hosts[(target, shard)].push(channel, messages)

    def drain(self) -> None:
        """Nothing is ever in flight in-process."""


class RayTransport:
    """Delivery to :class:`HostGroup` actors, at most ``max_in_flight`` pending calls per target shard.

    Hosts chained into the sender's own actor (``local``) are called directly: no
    serialization, no object store, no scheduling.
    """

    def __init__(self, handles: dict[tuple[str, int], Any], max_in_flight: int,
                 local: dict[tuple[str, int], NodeHost] | None = None) -> None:
        import ray  # the only import of ray below graph/build.py

        self._ray = ray
        self.handles = handles
        self.local = local or {}
        self.max_in_flight = max_in_flight
        self.in_flight: dict[tuple[str, int], deque] = {}

    def send(self, target: str, shard: int, channel: str, messages: list[Message]) -> None:
        """Push ``messages`` to ``(target, shard)``: directly if chained here, else as a Ray call.

        Blocks while that shard already has ``max_in_flight`` calls pending (backpressure),
        waiting for the oldest. Raises :class:`NodeFailure` (naming the node and shard) when a
        call it waited on failed.
        """
        host = self.local.get((target, shard))
        if host is not None:
            host.push(channel, messages)
            return
        pending = self.in_flight.setdefault((target, shard), deque())
        while len(pending) >= self.max_in_flight:
            self._wait(target, shard, pending.popleft())
        pending.append(self.handles[(target, shard)].push.remote((target, shard), channel, messages))

    def drain(self) -> None:
        """Wait for every pending call; re-raise the first downstream failure."""
        for (target, shard), pending in self.in_flight.items():
            while pending:
                self._wait(target, shard, pending.popleft())

    def _wait(self, target: str, shard: int, ref: Any) -> None:
        try:
            self._ray.get(ref)
        except Exception as exc:  # re-raise as the failing node's NodeFailure
            failure = find_node_failure(exc)
            if failure is not None:
                raise failure from None
            raise NodeFailure(target, shard, f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc


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


class NodeHost:
    """Hosts one shard of one node: feeds its operator and routes what it emits.

    Lifecycle: ``start()`` builds the operator, ``connect(routes, transport)`` wires
    outputs; then either ``push()`` (operators) or ``pump()`` (sources) until
    end-of-stream; ``metrics()`` at any time.
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
        self.telemetry: Any = telemetry.NULL_TELEMETRY  # actor metrics (graph/telemetry.py)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> str:
        """Build the operator from the config; returns the channel name."""
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
            clock_ns=_wall_clock_ns,
            graph_file=Path(cfg.graph_file) if cfg.graph_file else None,
            allowed_lateness_ns=event_time.get("allowed_lateness_ms", 0) * 1_000_000,
            late_policy=event_time.get("late_policy", "drop"),
            idle_timeout_ns=None if idle_ms is None else idle_ms * 1_000_000,
            forming_interval_ns=event_time.get("forming_interval_ms", 0) * 1_000_000,
            earliest_ns=event_time.get("earliest", DEFAULT_EARLIEST_NS),
            latest_ns=event_time.get("latest", DEFAULT_LATEST_NS),
            run_id=cfg.run_id,
        )
        self.op = self._guard(lambda: cls(params, ctx))
        self.telemetry = telemetry.for_host(self, cls)
        return self.channel

    def connect(self, routes: list[Route], transport: LocalTransport | RayTransport) -> None:
        """Wire outputs: ``routes`` say where each stream goes, ``transport`` how."""
        self.routes = routes
        self.transport = transport

    def metrics(self) -> dict[str, Any]:
        """Counters: rows in/out per stream, quarantine reasons, watermark, operator metrics."""
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
        outbox: dict[tuple[str, int], list[Message]] = {}
        ended = False
        for message in messages:
            tag = message[0]
            if tag == DATA:
                _, stream, batch = message
                self.rows_in += batch.num_rows
                self.telemetry.received(stream, batch)
                self._route(self._guard(lambda: self.op.on_batch(stream, batch)), outbox)
            elif tag == WATERMARK:
                self.channel_wm[channel] = message[1]
                self._advance_watermark(outbox)
            elif tag == EOF:
                self.open_channels.discard(channel)
                self.channel_wm.pop(channel, None)
                if self.open_channels:
                    self._advance_watermark(outbox)
                else:
                    self._route(self._guard(self.op.on_eof), outbox)
                    self._broadcast((EOF,), outbox)
                    ended = True
        self._send(outbox)
        if ended:
            self._finish()
        self.telemetry.after_step(self)

    def _advance_watermark(self, outbox: dict) -> None:
        marks = list(self.channel_wm.values())
        if not marks or any(m is None for m in marks):
            return
        low = min(marks)
        if self.watermark is None or low > self.watermark:
            self.watermark = low
            self._route(self._guard(lambda: self.op.on_watermark(low)), outbox)
            self._broadcast((WATERMARK, low), outbox)

    # -- sources --------------------------------------------------------------------
    def pump(self, max_events: int = 8, stop: bool = False) -> dict[str, Any]:
        """Pull up to ``max_events`` events from the source and send them downstream.

        Args:
            max_events: events (batches or watermarks) to pull in this call.
            stop: end the stream now (Ctrl-C, ``--duration``): close the source,
                send end-of-stream and drain.

        Returns:
            ``{"rows": rows emitted so far, "watermark": ts or None, "done": bool}``.
            A source that yields :data:`~graph.operator.IDLE` ends the step early.

        Raises:
            NodeFailure: the source, or any node downstream of it, failed.
        """
        if self.failure is not None:
            raise self.failure
        if self.finished:
            return self._progress()
        if self._events is None:
            self._events = iter(self._guard(self.op.events))
        outbox: dict[tuple[str, int], list[Message]] = {}
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
            self._broadcast((EOF,), outbox)
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
                self._broadcast((WATERMARK, event.ts), outbox)
        else:
            self._route([event], outbox)

    def _progress(self) -> dict[str, Any]:
        return {"rows": sum(self.rows_out.values()), "watermark": self.watermark, "done": self.finished}

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
                        outbox.setdefault((route.target, shard), []).append((DATA, stream, part))

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
        finally:
            self.finished = True
            self._close()

    def _end(self, outcome: str, error: str | None) -> None:
        """Tell an operator with an ``end(outcome, error)`` hook (a replay's job row) how the
        run ended for it: ``completed`` (everything downstream drained), ``failed`` (with the
        failing node's error) or ``cancelled``."""
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

    def close(self, error: str | None = None) -> None:
        """Release the operator's resources (idempotent); used when a run is aborted.

        Args:
            error: the failure that aborted the run (None: an interrupt); an operator
                with an ``end`` hook records ``failed`` with it, or ``cancelled``.

        A sink writes what it has received before it releases (its ``close``), so a
        failure elsewhere never discards rows a healthy sink already took.
        """
        if self.op is not None and not self.finished:
            self.finished = True
            self._end("failed" if error else "cancelled", error)
            try:
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


def _wall_clock_ns() -> int:
    import time

    return time.time_ns()


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
        transport = RayTransport(handles, max_in_flight, local=self.hosts)
        for (node_id, _), host in self.hosts.items():
            host.connect(routes[node_id], transport)

    def push(self, target: tuple[str, int], channel: str, messages: list[Message]) -> None:
        """Deliver to hosted node shard ``target`` (see :meth:`NodeHost.push`)."""
        self.hosts[target].push(channel, messages)

    def pump(self, source: tuple[str, int], max_events: int = 8, stop: bool = False) -> dict[str, Any]:
        """Step hosted source ``source`` (see :meth:`NodeHost.pump`)."""
        return self.hosts[source].pump(max_events, stop=stop)

    def metrics(self) -> list[dict[str, Any]]:
        """Metrics of every hosted shard."""
        return [host.metrics() for host in self.hosts.values()]

    def control(self, target: tuple[str, int], command: str) -> Any:
        """Send ``command`` to hosted node shard ``target`` (see :meth:`NodeHost.control`)."""
        return self.hosts[target].control(command)

    def close(self, error: str | None = None) -> None:
        """Release every hosted operator's resources after an abort (see :meth:`NodeHost.close`)."""
        for host in self.hosts.values():
            host.close(error)
