"""The replay driver: one Ray actor per service replay job, which drives the job's graph run.

Why an actor (and not ``subprocess.Popen(["python", "run.py", ...])``): the service's
replays must run on the Ray cluster, not in the HTTP process. A driver actor is scheduled
by Ray like the graph's own actors (on any node, with the packages the cluster already
has), starts in milliseconds instead of a new interpreter's seconds of ``import ray`` and
connect, is found again by its name ``tickgraph-replay-<job id>`` (so a restarted service
can still cancel it), and takes a cancel as a method call (no signals to deliver across
machines). It is *detached*: it outlives the service that started it, finishes its
run, records the outcome and exits.

The driver owns the job's ``job_runs`` row (the service inserted it ``running``; the
replay node only stamps batches with its id): progress while the graph runs
(``rows_written`` = ticks emitted so far, ``max_ts`` = the newest watermark,
``metadata.progress``), then, once the graph has drained, ``completed`` (with the run
summary's counts and parity hashes in ``metadata.summary``), ``cancelled`` (a cancel
stopped the source; forming bars were flushed) or ``failed`` (``error_message`` names
the node that failed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from db.engine import StoreError
from db.jobs import finish_job, update_job

__all__ = ["ReplayDriver", "driver_name", "compact_summary", "PROGRESS_INTERVAL_S"]

_log = logging.getLogger("tickgraph.service.driver")

#: Seconds between two progress writes to ``job_runs``.
PROGRESS_INTERVAL_S = 0.5


def driver_name(job_id: str) -> str:
    """The Ray actor name of a job's driver."""
    return f"tickgraph-replay-{job_id}"


def compact_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The run summary without per-shard operator details (what ``metadata.summary`` keeps)."""
    keep = ("graph", "ticks_read", "ticks_accepted", "quarantined", "quarantined_total", "bars_confirmed",
            "elapsed_s", "ticks_per_s", "stopped_early", "parity")  # fmt: skip
    out = {key: summary[key] for key in keep if key in summary}
    out["nodes"] = {
        node_id: {"kind": node["kind"], "rows_in": node["rows_in"], "rows_out": node["rows_out"]}
        for node_id, node in summary.get("nodes", {}).items()
    }
    store = [n for n in summary.get("nodes", {}).values() if n["kind"] == "sql_store"]
    out["rows_written"] = {}
    for node in store:
        for shard in node["shards"]:
            for table, rows in shard["operator"].get("rows_written", {}).items():
                out["rows_written"][table] = out["rows_written"].get(table, 0) + rows
    return out


class ReplayDriver:
    """Runs one service replay job's graph (wrapped by ``ray.remote`` in ``service/cluster.py``).

    Args:
        job_id: the job's ``job_runs`` id (also the graph run's id: the ``run`` label of
            its actors' metrics).
        store_url: the store holding ``job_runs``.
        graph: the replay graph file.
        overrides: ``--set`` strings for the job (``service/graphs.py: replay_overrides``).
        publish: ``(service URL, ingest key)`` to add the publisher node, or None.
        metadata: the job row's metadata at start (kept, extended at the end).
        start_ns, end_ns: the requested event-time range (for ``metadata.progress``).
    """

    def __init__(self, job_id: str, store_url: str, graph: str, overrides: list[str], publish: tuple[str, str] | None,
                 metadata: dict[str, Any], start_ns: int, end_ns: int) -> None:  # fmt: skip
        self.job_id = job_id
        self.store_url = store_url
        self.graph = graph
        self.overrides = list(overrides)
        self._publish = publish
        self.metadata = dict(metadata)
        self.start_ns, self.end_ns = start_ns, end_ns
        self._cancel = threading.Event()
        self._last_progress = 0.0
        self._rows = 0
        self._watermark: int | None = None

    def __repr__(self) -> str:  # the ingest key stays out of logs
        return f"ReplayDriver(job_id={self.job_id!r}, graph={self.graph!r})"

    def cancel(self) -> bool:
        """Ask the run to stop (its source ends cleanly at the next step). Returns True."""
        self._cancel.set()
        return True

    def progress(self) -> dict[str, Any]:
        """``{"rows": ticks emitted so far, "watermark": ns or None, "cancelling": bool}``."""
        return {"rows": self._rows, "watermark": self._watermark, "cancelling": self._cancel.is_set()}

    def run(self) -> str:
        """Build and drive the graph to the end; record the outcome. Returns the final status."""
        from graph.build import build_graph
        from graph.runtime import NodeFailure
        from graph.spec import GraphError, load_graph
        from graph.summary import build_summary
        from service.graphs import with_publisher

        status, error, summary = "failed", None, None
        try:
            loaded = load_graph(Path(self.graph), self.overrides)
            if self._publish is not None:
                loaded = with_publisher(loaded, *self._publish, run=self.job_id)
            if self._cancel.is_set():
                status = "cancelled"
            else:
                run = build_graph(loaded, backend="ray", run_id=self.job_id, record=False)  # this driver keeps the row
                result = run.run(on_progress=self._on_progress, should_stop=self._cancel.is_set)
                summary = build_summary(loaded, result)
                status = "cancelled" if result.stopped_early else "completed"
        except NodeFailure as failure:
            error = str(failure)
        except GraphError as exc:
            error = f"the replay graph is not valid: {exc}"
        except Exception as exc:  # recorded in job_runs: the job must never stay 'running'
            _log.exception("replay job %s failed", self.job_id)
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        try:
            self._record(status, error, summary)
        except Exception as exc:  # never leave the row 'running': record why the record failed
            _log.exception("replay job %s: recording the outcome failed", self.job_id)
            finish_job(self.store_url, self.job_id, "failed", error_message=f"recording the outcome failed: {exc}")
            return "failed"
        return status

    def _on_progress(self, rows: int, watermark: int | None) -> None:
        self._rows, self._watermark = rows, watermark
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        try:
            update_job(self.store_url, self.job_id, rows_written=rows, max_ts=watermark,
                       metadata_patch={"progress": self._fraction(watermark)})  # fmt: skip
        except StoreError as exc:  # progress is advisory; the final record is not
            _log.warning("replay job %s: progress not recorded: %s", self.job_id, exc)

    def _fraction(self, watermark: int | None) -> float:
        if watermark is None:
            return 0.0
        span = self.end_ns - self.start_ns
        return round(min(1.0, max(0.0, (watermark - self.start_ns) / span)), 4) if span > 0 else 0.0

    def _record(self, status: str, error: str | None, summary: dict[str, Any] | None) -> None:
        metadata = {**self.metadata, "progress": 1.0 if status == "completed" else self._fraction(self._watermark)}
        values: dict[str, Any] = {}
        if summary is not None:
            compact = compact_summary(summary)
            metadata["summary"] = compact
            source = next((n for n in summary["nodes"].values() if n["kind"] == "replay"), None)
            ticks = source["rows_out"].get("ticks", 0) if source else self._rows
            shard = source["shards"][0]["operator"] if source and source["shards"] else {}
            values = {"rows_written": ticks, "min_ts": shard.get("min_ts"), "max_ts": shard.get("max_ts"),
                      "symbols": sorted(compact.get("bars_confirmed", {})) or None}  # fmt: skip
        elif self._rows:
            values = {"rows_written": self._rows, "max_ts": self._watermark}
        # JSON-safe (the summary has non-string keys, e.g. shard numbers, and numpy scalars)
        metadata = json.loads(json.dumps(metadata, default=lambda value: getattr(value, "item", lambda: str(value))()))
        try:
            finish_job(self.store_url, self.job_id, status, error_message=error, metadata_json=metadata, **values)
        except StoreError as exc:
            _log.error("replay job %s: could not record status %s: %s", self.job_id, status, exc)
