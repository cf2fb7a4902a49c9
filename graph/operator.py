"""The operator contract: plain Python classes that the runtime hosts, in-process or on Ray.

An operator never imports ``ray`` and never reads the wall clock (a clock, if it needs
one, comes in its :class:`OperatorContext`). The same operator object serves replay,
live and backtest; ``graph/runtime.py`` is the only place that knows about actors.

Message order on every edge is: data batches, then the watermark that follows them,
then more data, checkpoint barriers, ..., then end-of-stream (``graph/messages.py``). A watermark ``w`` says event time has reached
``w`` on that edge: ticks with ``ts == w`` may still come, and a later tick with
``ts < w`` is a *late tick* (a replayed file with out-of-order rows, a slow live
feed). Operators never drop a late tick silently: they apply their late-tick policy
and emit it on their ``quarantine`` stream with reason ``late``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from graph.messages import Watermark
from graph.times import DEFAULT_EARLIEST_NS, DEFAULT_LATEST_NS, EventTimeRange

__all__ = [
    "Emit",
    "Watermark",
    "IDLE",
    "OperatorContext",
    "Params",
    "Operator",
    "Source",
    "check_snapshot_version",
]

#: One output of an operator: (output stream name, Arrow batch of that stream's schema).
Emit = tuple[str, pa.RecordBatch]


class _Idle:
    """Type of :data:`IDLE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


#: Yielded by a source's ``events()`` when it has nothing to emit right now (a quiet
#: live feed, a paced replay waiting for the next tick's time): the host ends the
#: current step, so the driver stays responsive (stop, duration, progress).
IDLE = _Idle()


@dataclass(frozen=True)
class OperatorContext:
    """What the host tells an operator about where it runs.

    Attributes:
        node_id: the YAML node id (``bars``).
        shard: this instance's shard index, 0-based.
        num_shards: the node's ``parallelism``.
        base_dir: directory of the graph file; relative paths in params resolve here.
        clock_ns: wall clock, int64 ns since epoch UTC; operators call this, never ``time``.
        graph_file: the graph file this operator belongs to (None when built in code).
        allowed_lateness_ns, late_policy, idle_timeout_ns, forming_interval_ns: the
            graph's ``event_time`` settings (``graph/spec.py: EventTimeSettings``), in ns.
        amend_window_ns: late policy ``amend``: how long behind the watermark a confirmed
            bar can still be corrected (``event_time.amend_window_ms``), in ns.
        earliest_ns, latest_ns: the plausible event-time range ``[earliest, latest)``
            (``event_time.earliest/latest``, int ns UTC; ``graph/times.py``).
        run_id: the graph run's id (``job_runs.id`` of a replay); "" when built in code.
    """

    node_id: str
    shard: int = 0
    num_shards: int = 1
    base_dir: Path = field(default_factory=Path.cwd)
    clock_ns: Callable[[], int] | None = None
    graph_file: Path | None = None
    allowed_lateness_ns: int = 0
    late_policy: str = "drop"
    idle_timeout_ns: int | None = 5_000_000_000
    forming_interval_ns: int = 0
    amend_window_ns: int = 3_600_000_000_000
    earliest_ns: int = DEFAULT_EARLIEST_NS
    latest_ns: int = DEFAULT_LATEST_NS
    run_id: str = ""

    @property
    def event_time_range(self) -> EventTimeRange:
        """The plausible event times as an :class:`~graph.times.EventTimeRange`."""
        return EventTimeRange(self.earliest_ns, self.latest_ns)


class Params(BaseModel):
    """Base of every node kind's ``params`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Operator:
    """A stateful stream operator: batches and watermarks in, emits out.

    Subclasses set ``Params`` (their pydantic params model), ``outputs`` (output
    stream name -> Arrow schema; the first is the default stream) and override the
    ``on_*`` hooks. Every hook returns a list of :data:`Emit`; the host forwards them
    downstream, then forwards the watermark / end-of-stream itself.
    """

    Params: ClassVar[type[Params]] = Params
    outputs: ClassVar[dict[str, pa.Schema]] = {}
    #: True for operators with per-key state (bar engines): with parallelism > 1 the
    #: graph must name a ``key`` so each key's rows always reach the same shard.
    keyed: ClassVar[bool] = False

    def __init__(self, params: Params, ctx: OperatorContext) -> None:
        self.params = params
        self.ctx = ctx

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Process one batch that arrived on input stream ``stream`` (upstream's output name)."""
        raise NotImplementedError

    def on_watermark(self, ts: int) -> list[Emit]:
        """Event time has reached ``ts`` (int64 ns UTC) on every input."""
        return []

    def on_eof(self) -> list[Emit]:
        """Every input has ended: flush state (e.g. confirm forming bars)."""
        return []

    def on_stop(self) -> list[Emit]:
        """Every input has ended because the run was stopped early (``--duration``, Ctrl-C).

        What is still open is incomplete: an operator that would finalise it at
        ``on_eof`` must not (the bar engine emits its open bars as ``partial``). The
        default is :meth:`on_eof`.
        """
        return self.on_eof()

    def close(self) -> None:
        """Release resources (connections, files). Called once, after ``on_eof`` or on failure."""

    def metrics(self) -> dict[str, Any]:
        """Operator-specific counters for the run summary (JSON-serialisable)."""
        return {}

    def snapshot(self) -> Any:
        """State at a checkpoint barrier, to restore after a restart (picklable).

        Called when every input has delivered the barrier: everything before it has been
        passed to ``on_batch``/``on_watermark``, nothing after it. ``restore(snapshot())``
        followed by the rest of the stream must give exactly the uninterrupted output. A
        sink makes its writes durable here (the SQL store commits its buffer).
        """
        return None

    def restore(self, state: Any) -> None:
        """Restore the state returned by :meth:`snapshot` (called right after construction)."""


class Source:
    """A source of ticks: a file replay, a live feed.

    ``events()`` yields :data:`Emit` tuples and :class:`Watermark` objects in stream
    order; the host pulls it step by step, so pausing or stopping is just not pulling.

    A source that buffers data it has already received (a live feed) may define
    ``stop()``: on ``--duration`` or Ctrl-C the host calls it, then drains ``events()``
    to its end before sending end-of-stream, so nothing received is lost. Sources
    without ``stop()`` (file replays) simply end where they are.
    """

    Params: ClassVar[type[Params]] = Params
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: Params, ctx: OperatorContext) -> None:
        self.params = params
        self.ctx = ctx

    def events(self) -> Iterator[Emit | Watermark | _Idle]:
        """Yield data, watermarks and :data:`IDLE` (nothing now) until exhausted."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (files, sockets)."""

    def metrics(self) -> dict[str, Any]:
        """Source-specific counters for the run summary (JSON-serialisable)."""
        return {}

    def snapshot(self) -> Any:
        """The source's offset at a checkpoint (taken between two events; picklable).

        After ``restore(snapshot())`` (before ``events()`` starts), ``events()`` must
        continue exactly after the last event emitted before the snapshot.
        """
        return None

    def restore(self, state: Any) -> None:
        """Resume from the offset returned by :meth:`snapshot` (called right after construction)."""


def check_snapshot_version(state: dict[str, Any], expected: int, what: str) -> None:
    """Refuse a snapshot written by another version of an operator's state layout.

    Args:
        state: the dict a ``snapshot()`` returned (its ``"version"`` key).
        expected: the version this code writes and reads.
        what: the operator, for the message (``bars``, ``sql_store``, ...).

    Raises:
        ValueError: ``{what} snapshot version {found!r}, expected {expected}``.
    """
    if state.get("version") != expected:
        raise ValueError(f"{what} snapshot version {state.get('version')!r}, expected {expected}")
