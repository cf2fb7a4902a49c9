"""Actor metrics: what every node shard reports to Ray's metrics pipeline (``ray.util.metrics``).

A :class:`NodeTelemetry` watches one :class:`~graph.runtime.NodeHost`. It is active only
when the host runs inside a Ray actor (``build_graph(backend="ray")``); in-process runs get
:data:`NULL_TELEMETRY`, whose hooks do nothing. Ray aggregates the values per worker and
exports them on every node's metrics endpoint with a ``ray_`` prefix (the Ray dashboard's
Prometheus); the service's ``/metrics`` (``service/metrics.py``) re-exports them under the
names below, summed over workers.

Names follow the Prometheus conventions (``_total`` counters, base units in the name):

================================== ========= ====================================== ==========================
name                               type      labels                                 counted
================================== ========= ====================================== ==========================
``tick_replay_ticks_emitted_total`` counter  run, node, provider, symbol            ticks a replay source emits
``tick_replay_lag_seconds``        gauge     run, node                              replay clock - newest tick
``tick_replay_errors_total``       counter   run, node                              replay source failures
``bars_confirmed_total``           counter   run, symbol, timeframe                 bar rows ``confirmed``
``bars_corrected_total``           counter   run, symbol, timeframe                 bar rows ``corrected``
``bars_partial_total``             counter   run, symbol, timeframe                 bar rows ``partial`` (not seen whole)
``ticks_quarantined_total``        counter   run, node, reason                      quarantine rows emitted
``signals_written_total``          counter   run, name                              signal rows a store wrote
``signals_write_failures_total``   counter   run, name                              rows a failed store lost
``signals_compute_duration_seconds`` histogram run, node                            one signal batch's compute
``watermark_lag_seconds``          gauge     run, node, shard                       wall clock - watermark
``edge_queue_depth``               gauge     run, node, shard, target               pending calls to ``target``
``node_rows_out_total``            counter   run, node, stream                      rows a node emits
================================== ========= ====================================== ==========================

``run`` is the graph run's id (``build_graph(run_id=...)``; the ``job_runs`` id of a replay
started by the service). The counters equal the run summary's counts
(``graph/summary.py``): per node and stream ``node_rows_out_total`` = ``rows_out``, summed
by reason ``ticks_quarantined_total`` = ``quarantined``, ``bars_confirmed_total`` =
``bars_confirmed``, ``signals_written_total`` summed = the store's ``rows_written.signals``.

``signals_written_total`` is exact per name: a ``sql_store`` flush writes every row
buffered before it started, so the rows it counts as written (``rows_written.signals`` in
its metrics, updated when a flush commits) are the oldest rows received; this module
keeps the received rows' names in arrival order and attributes each committed count to
them first-in first-out. When the store fails, the rows still unattributed are counted
in ``signals_write_failures_total``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["NodeTelemetry", "NULL_TELEMETRY", "for_host", "REPLAY_KINDS"]

#: Source kinds whose ticks are counted as replayed.
REPLAY_KINDS = frozenset({"replay", "file_replay"})
#: Histogram buckets of ``signals_compute_duration_seconds`` (seconds).
DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]

_SPECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "tick_replay_ticks_emitted_total": ("counter", "Ticks emitted by replay sources", ("run", "node", "provider", "symbol")),
    "tick_replay_lag_seconds": ("gauge", "Replay clock minus the newest tick emitted (s)", ("run", "node")),
    "tick_replay_errors_total": ("counter", "Replay source failures", ("run", "node")),
    "bars_confirmed_total": ("counter", "Bar rows emitted with status confirmed", ("run", "symbol", "timeframe")),
    "bars_corrected_total": ("counter", "Bar rows emitted with status corrected", ("run", "symbol", "timeframe")),
    "bars_partial_total": ("counter", "Bar rows emitted with status partial (open at a stop, or begun before the session)", ("run", "symbol", "timeframe")),
    "ticks_quarantined_total": ("counter", "Rows emitted on quarantine streams, by reason", ("run", "node", "reason")),
    "signals_written_total": ("counter", "Signal rows committed by sql_store nodes", ("run", "name")),
    "signals_write_failures_total": ("counter", "Signal rows a failed sql_store had not written", ("run", "name")),
    "signals_compute_duration_seconds": ("histogram", "Seconds a signal node spends on one batch", ("run", "node")),
    "watermark_lag_seconds": ("gauge", "Wall clock minus the node's watermark (s)", ("run", "node", "shard")),
    "edge_queue_depth": ("gauge", "Calls pending from a node shard to a downstream node", ("run", "node", "shard", "target")),
    "node_rows_out_total": ("counter", "Rows emitted by a node, per output stream", ("run", "node", "stream")),
}
_METRICS: dict[str, Any] = {}  # name -> ray.util.metrics object, one per process


def _metric(name: str) -> Any:
    found = _METRICS.get(name)
    if found is None:
        from ray.util import metrics  # only inside a Ray actor (see for_host)

        kind, description, tags = _SPECS[name]
        if kind == "counter":
            found = metrics.Counter(name, description=description, tag_keys=tags)
        elif kind == "gauge":
            found = metrics.Gauge(name, description=description, tag_keys=tags)
        else:
            found = metrics.Histogram(name, description=description, boundaries=DURATION_BUCKETS, tag_keys=tags)
        _METRICS[name] = found
    return found


class _NullTelemetry:
    """Hooks that do nothing (in-process runs)."""

    def received(self, stream: str, batch: pa.RecordBatch) -> None:
        """No-op."""

    def emitted(self, stream: str, batch: pa.RecordBatch) -> None:
        """No-op."""

    def after_step(self, host: Any) -> None:
        """No-op."""

    def failed(self, host: Any) -> None:
        """No-op."""


NULL_TELEMETRY = _NullTelemetry()


def _in_ray_actor() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def for_host(host: Any, operator_class: type) -> NodeTelemetry | _NullTelemetry:
    """The telemetry of ``host`` (a started NodeHost): active inside a Ray actor, else a no-op.

    Args:
        host: the NodeHost whose operator was just built (``host.op``).
        operator_class: the operator's class (source or operator).
    """
    if not _in_ray_actor():
        return NULL_TELEMETRY
    return NodeTelemetry(host, operator_class)


class NodeTelemetry:
    """Records one node shard's metrics (see the module docstring for names and labels).

    Args:
        host: the started NodeHost (config, operator).
        operator_class: the operator's class.
    """

    def __init__(self, host: Any, operator_class: type) -> None:
        from graph.operator import Source

        cfg = host.config
        self.node = cfg.node_id
        self.run = cfg.run_id or "-"
        self.shard = str(cfg.shard)
        self.is_replay = issubclass(operator_class, Source) and cfg.kind in REPLAY_KINDS
        self.computes_signals = "signals" in getattr(operator_class, "outputs", {})
        self._signal_fifo: deque[list] = deque()  # [name, rows] in arrival order, not yet written
        self._signals_written = 0
        self._last_watermark: int | None = None
        self._failed = False
        if self.computes_signals:
            self._time_batches(host)

    # -- hooks -----------------------------------------------------------------------------
    def received(self, stream: str, batch: pa.RecordBatch) -> None:
        """A batch arrived on input ``stream``: remember signal rows' names (stores only)."""
        if stream == "signals" and batch.num_rows:
            for name, rows in _counts(batch, ["name"]):
                if self._signal_fifo and self._signal_fifo[-1][0] == name[0]:
                    self._signal_fifo[-1][1] += rows
                else:
                    self._signal_fifo.append([name[0], rows])

    def emitted(self, stream: str, batch: pa.RecordBatch) -> None:
        """The node emitted ``batch`` on ``stream`` (non-empty)."""
        _metric("node_rows_out_total").inc(batch.num_rows, tags={"run": self.run, "node": self.node, "stream": stream})
        if stream == "quarantine":
            for (reason,), rows in _counts(batch, ["reason"]):
                _metric("ticks_quarantined_total").inc(rows, tags={"run": self.run, "node": self.node, "reason": reason})
        elif stream == "ticks" and self.is_replay:
            counter = _metric("tick_replay_ticks_emitted_total")
            for (provider, symbol), rows in _counts(batch, ["provider", "symbol"]):
                counter.inc(rows, tags={"run": self.run, "node": self.node, "provider": provider, "symbol": symbol})
        elif stream == "bars" and "status" in batch.schema.names:
            for status, name in (("confirmed", "bars_confirmed_total"), ("corrected", "bars_corrected_total"), ("partial", "bars_partial_total")):
                rows = batch.filter(pc.equal(batch.column("status"), status))
                for (symbol, timeframe), n in _counts(rows, ["symbol", "timeframe"]):
                    _metric(name).inc(n, tags={"run": self.run, "symbol": symbol, "timeframe": timeframe})

    def after_step(self, host: Any) -> None:
        """After a push or a pump: watermark lag, replay lag, queue depths, committed signal rows."""
        if host.watermark is not None and host.watermark != self._last_watermark:
            self._last_watermark = host.watermark
            lag = (time.time_ns() - host.watermark) / 1e9
            _metric("watermark_lag_seconds").set(lag, tags={"run": self.run, "node": self.node, "shard": self.shard})
        if self.is_replay:
            clock = getattr(host.op, "clock", None)
            newest = getattr(host.op, "_max_ts", None)
            if clock is not None and newest is not None:
                lag = max(0.0, (clock.now_ns() - newest) / 1e9)
                _metric("tick_replay_lag_seconds").set(lag, tags={"run": self.run, "node": self.node})
        for (target, shard), pending in getattr(host.transport, "in_flight", {}).items():
            _metric("edge_queue_depth").set(
                len(pending), tags={"run": self.run, "node": self.node, "shard": self.shard, "target": f"{target}#{shard}"}
            )
        if self._signal_fifo:
            self._attribute_written(host)

    def failed(self, host: Any) -> None:
        """The operator raised: count a replay error; a store's unwritten signal rows are failures."""
        if self._failed:
            return
        self._failed = True
        if self.is_replay:
            _metric("tick_replay_errors_total").inc(1, tags={"run": self.run, "node": self.node})
        if self._signal_fifo:
            self._attribute_written(host)
            for name, rows in self._signal_fifo:
                _metric("signals_write_failures_total").inc(rows, tags={"run": self.run, "name": name})
            self._signal_fifo.clear()

    # -- internals -------------------------------------------------------------------------
    def _attribute_written(self, host: Any) -> None:
        """Move newly committed signal rows (store metrics) from the FIFO to ``signals_written_total``."""
        try:
            written = int(host.op.metrics().get("rows_written", {}).get("signals", 0))
        except Exception:  # a broken operator: failed() reports what was not written
            return
        delta = written - self._signals_written
        self._signals_written = written
        counter = _metric("signals_written_total")
        while delta > 0 and self._signal_fifo:
            head = self._signal_fifo[0]
            take = min(delta, head[1])
            counter.inc(take, tags={"run": self.run, "name": head[0]})
            head[1] -= take
            delta -= take
            if head[1] == 0:
                self._signal_fifo.popleft()

    def _time_batches(self, host: Any) -> None:
        """Wrap the operator's ``on_batch`` to observe ``signals_compute_duration_seconds``."""
        on_batch = host.op.on_batch
        histogram = _metric("signals_compute_duration_seconds")
        tags = {"run": self.run, "node": self.node}

        def timed(stream: str, batch: pa.RecordBatch) -> Any:
            started = time.perf_counter()
            try:
                return on_batch(stream, batch)
            finally:
                histogram.observe(time.perf_counter() - started, tags=tags)

        host.op.on_batch = timed


def _counts(batch: pa.RecordBatch, columns: list[str]) -> list[tuple[tuple[str, ...], int]]:
    """Row counts per distinct value tuple of ``columns``: ``[((v1, v2), n), ...]``."""
    if batch.num_rows == 0:
        return []
    table = pa.Table.from_batches([batch.select(columns)])
    grouped = table.group_by(columns).aggregate([([], "count_all")]).to_pylist()
    return [(tuple(str(row[c]) for c in columns), int(row["count_all"])) for row in grouped]
