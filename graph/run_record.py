"""The driver's ``job_runs`` row of a graph run: honest from start to end, with a heartbeat.

Every graph run whose graph names a job database (``runtime.job_database_url``, or a
source's ``job_database_url`` param) is one ``job_runs`` row, owned by the driver
(``graph/driver.py``), never by a node:

* ``running`` when the run starts (``metadata``: graph, run id, heartbeat, restarts, the
  last complete checkpoint), its heartbeat renewed every :data:`HEARTBEAT_S` seconds;
* ``completed`` only after the whole graph has drained; ``failed`` with the error text of
  the node that failed; ``cancelled`` on Ctrl-C or ``--duration``;
* ``abandoned`` when its driver is gone: a run that starts first marks every ``running``
  row whose heartbeat is older than :data:`ABANDONED_AFTER_S` (a killed driver leaves no
  other trace); ``--resume`` takes such a row back to ``running``.

``rows_written``, ``min_ts``/``max_ts``, ``provider`` and ``symbols`` describe the ticks
the run's sources emitted (from their metrics).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from db.engine import StoreError
from db.jobs import finish_job, mark_abandoned, read_job, reopen_job, start_job, update_job

__all__ = ["RunRecord", "HEARTBEAT_S", "ABANDONED_AFTER_S", "job_database_url"]

_log = logging.getLogger("tickgraph.run_record")
#: Seconds between two heartbeats of a running driver.
HEARTBEAT_S = 5.0
#: A ``running`` row whose heartbeat is older than this many seconds has lost its driver.
ABANDONED_AFTER_S = 60.0


def job_database_url(loaded: Any) -> str | None:
    """Where a graph's run is recorded: ``runtime.job_database_url``, else the first
    source's ``job_database_url`` param, else None (no row)."""
    spec = loaded.spec
    if spec.runtime.job_database_url:
        return spec.runtime.job_database_url
    for node in spec.nodes:
        url = node.params.get("job_database_url") if isinstance(node.params, dict) else None
        if url:
            return url
    return None


class RunRecord:
    """One run's ``job_runs`` row (a no-op without a job database).

    Args:
        url: the store of ``job_runs`` (None: record nothing).
        run_id: the row's id (the graph run's id).
        job_name: ``replay`` for graphs with a replay source, else ``graph``.
        metadata: the row's metadata at start (graph name and file, ...).
    """

    def __init__(self, url: str | None, run_id: str, job_name: str, metadata: dict[str, Any]) -> None:
        self.url, self.run_id, self.job_name = url, run_id, job_name
        self.metadata = dict(metadata)
        self._last_beat = 0.0
        self.open = False

    def start(self, resumed_from: int | None = None) -> None:
        """Insert the ``running`` row (after marking abandoned runs); on a resume, reopen it.

        Raises:
            StoreError: the database refused.
        """
        if self.url is None:
            return
        now = time.time_ns()
        count = mark_abandoned(self.url, stale_before_ns=now - int(ABANDONED_AFTER_S * 1e9), keep=self.run_id)
        if count:
            _log.warning("job_runs: marked %d run(s) without a heartbeat for %g s as abandoned", count, ABANDONED_AFTER_S)
        self.metadata["heartbeat_ns"] = now
        if resumed_from is not None or read_job(self.url, self.run_id) is not None:
            self.metadata["resumed_from_checkpoint"] = resumed_from
            reopen_job(self.url, self.run_id, self.metadata)
        else:
            start_job(self.url, self.job_name, metadata_json=self.metadata, job_id=self.run_id)
        self.open = True

    def beat(self, rows: int | None = None, force: bool = False, **metadata: Any) -> None:
        """Renew the heartbeat (at most every :data:`HEARTBEAT_S`, or now with ``force``);
        ``rows`` (ticks emitted so far) and ``metadata`` keys are recorded with it."""
        if not self.open or (not force and time.monotonic() - self._last_beat < HEARTBEAT_S):
            return
        self._last_beat = time.monotonic()
        self.metadata.update(metadata, heartbeat_ns=time.time_ns())
        try:
            update_job(self.url, self.run_id, rows_written=rows, metadata_patch=self.metadata)
        except StoreError as exc:  # a missed heartbeat is not a failed run
            _log.warning("job_runs: heartbeat of %s not recorded: %s", self.run_id, exc)

    def finish(self, status: str, error: str | None = None, sources: list[dict[str, Any]] | None = None) -> None:
        """Close the row once: ``completed``, ``failed`` (``error``) or ``cancelled``.

        Args:
            sources: the source shards' operator metrics (``ticks``, ``min_ts``/``max_ts``,
                ``providers_seen``, ``symbols_seen``) for the row's counters.
        """
        if not self.open:
            return
        self.open = False
        values = _source_values(sources or [])
        self.metadata["heartbeat_ns"] = time.time_ns()
        try:
            finish_job(self.url, self.run_id, status, error_message=error, metadata_json=self.metadata, **values)
        except StoreError as exc:
            if status == "completed":
                raise
            _log.warning("job_runs: could not mark run %s %s: %s", self.run_id, status, exc)


def _source_values(sources: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sum(int(m.get("ticks", 0) or 0) for m in sources)
    lows = [m["min_ts"] for m in sources if m.get("min_ts") is not None]
    highs = [m["max_ts"] for m in sources if m.get("max_ts") is not None]
    symbols = sorted({s for m in sources for s in m.get("symbols_seen", [])})
    providers = sorted({p for m in sources for p in m.get("providers_seen", [])})
    values: dict[str, Any] = {"rows_written": rows, "min_ts": min(lows) if lows else None, "max_ts": max(highs) if highs else None}
    if symbols:
        values["symbols"] = symbols
    if providers:
        values["provider"] = ",".join(providers)
    return values
