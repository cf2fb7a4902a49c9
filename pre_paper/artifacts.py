"""The audit artifacts of a pre-paper run: ``artifacts/pre_paper/<run_id>/``.

::

    artifacts/pre_paper/<run_id>/
      pre_paper_manifest.json     identity, the backtest atom (its manifest hash), runtime
                                  config, history status at start and end, execution summary
      pre_paper.log               one line per event, in arrival order
      history_check_results.json  every recorded history check (HistoryCheckResult.to_dict()
                                  plus symbol, trigger), in order
      signals/decisions-NNNNN.parquet   the DECISION rows the runner emitted (one file per flush)
      paper/{fills,equity,trades}-NNNNN.parquet   paper fills, when the runner simulates them

:class:`AuditWriter` builds them from the runner's PRE_PAPER_EVENT rows and outputs; the
``pre_paper_audit`` sink (``actors/pre_paper_audit.py``) feeds it. The JSON files are
rewritten whole (to a temporary file, then renamed) at every flush, so a reader never
sees half a file and a crashed run leaves its audit up to the last flush.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa

from actors.portfolio import write_parquet
from backtest.hashing import tickgraph_version
from graph.times import iso_ns

__all__ = ["MANIFEST", "LOG", "CHECKS", "AuditWriter", "commit_hash"]

MANIFEST = "pre_paper_manifest.json"
LOG = "pre_paper.log"
CHECKS = "history_check_results.json"


def commit_hash(root: Path | None = None) -> str | None:
    """The git commit of the code running (``git rev-parse HEAD``), None outside a checkout."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


class AuditWriter:
    """Writes one run's audit directory (see the module docstring).

    Args:
        run_dir: ``artifacts/pre_paper/<run_id>`` (created).
        run_id: the run's id.
        started_ns: the wall clock when the run started (int ns UTC).
    """

    def __init__(self, run_dir: Path, run_id: str, started_ns: int) -> None:
        self.run_dir = Path(run_dir)
        (self.run_dir / "signals").mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.started_ns = started_ns
        self.commit = commit_hash()
        self.checks: list[dict[str, Any]] = []
        self.symbols: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, list[pa.RecordBatch]] = {}
        self.parts: dict[str, int] = {}
        self.files: list[str] = []
        self.state = "running"
        self._log = open(self.run_dir / LOG, "a", encoding="utf-8")

    def _symbol(self, symbol: str) -> dict[str, Any]:
        return self.symbols.setdefault(symbol, {"identity": None, "initial_check": None, "final_check": None,
                                                "summary": None, "status": None, "transitions": 0})  # fmt: skip

    def add_events(self, batch: pa.RecordBatch) -> None:
        """PRE_PAPER_EVENT rows, in order: log lines, checks, the per-symbol summary."""
        for row in batch.to_pylist():
            detail = json.loads(row["detail"]) if row["detail"] else {}
            state = self._symbol(row["symbol"])
            kind = row["kind"]
            text = f"{iso_ns(row['clock_ns'])} {row['symbol']} {kind}"
            if row["status"]:
                text += f" {row['status']}"
            if kind == "no_signals":
                text += f" NO-SIGNALS {detail.get('period')}"
                if detail.get("period") == "end":
                    text += f" ({detail.get('bars_suppressed')} bars suppressed)"
            if row["ts"] is not None:
                text += f" bar {iso_ns(row['ts'])}"
            if row["reason"]:
                text += f": {row['reason']}"
            self._log.write(text + "\n")
            if kind == "start":
                state["identity"] = detail
            elif kind == "check":
                self.checks.append({"symbol": row["symbol"], **detail})
                state["initial_check"] = state["initial_check"] or detail
                if detail.get("status") != "loading":
                    state["final_check"] = detail
            elif kind == "status":
                state["status"] = row["status"]
                state["transitions"] += 1
            elif kind == "end":
                state["summary"] = detail
        self._log.flush()

    def add_output(self, stream: str, batch: pa.RecordBatch) -> None:
        """DECISION rows (``decisions``) or paper ``fills``/``equity``/``trades``, kept until the next flush."""
        self.outputs.setdefault(stream, []).append(batch)

    def flush(self) -> None:
        """Write the buffered Parquet parts and rewrite the JSON files."""
        for stream, batches in self.outputs.items():
            if not batches:
                continue
            folder = "signals" if stream == "decisions" else "paper"
            part = self.parts.get(stream, 0)
            path = self.run_dir / folder / f"{stream}-{part:05d}.parquet"
            table = pa.Table.from_batches(batches)
            time = "ts" if "ts" in table.schema.names else "entry_ts"  # TRADE rows: by entry time
            table = table.sort_by([("symbol", "ascending"), (time, "ascending")])
            write_parquet(table, path)
            self.parts[stream] = part + 1
            self.files.append(str(path.relative_to(self.run_dir)))
            self.outputs[stream] = []
        _write_json(self.run_dir / CHECKS, self.checks)
        _write_json(self.run_dir / MANIFEST, self.manifest())

    def finish(self, outcome: str) -> None:
        """The last flush, with the run's outcome (``completed`` / ``failed`` / ``cancelled``)."""
        self.state = outcome
        self.flush()
        self._log.close()

    def checkpoint(self) -> dict[str, Any]:
        """Flush, then the writer's state (picklable): what :meth:`resume` needs to continue exactly."""
        self.flush()
        self._log.flush()
        return {
            "checks": copy.deepcopy(self.checks), "symbols": copy.deepcopy(self.symbols), "parts": dict(self.parts),
            "files": list(self.files), "started_ns": self.started_ns, "log_bytes": self._log.tell(),
        }  # fmt: skip

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` of the same run directory after a restart.

        What was written after the checkpoint is taken back (it will be received again):
        the log is cut to its length then, Parquet parts written since are deleted, and the
        JSON files are rewritten from the checkpoint's state.
        """
        self.checks, self.symbols = copy.deepcopy(state["checks"]), copy.deepcopy(state["symbols"])
        self.parts, self.files, self.started_ns = dict(state["parts"]), list(state["files"]), state["started_ns"]
        self._log.flush()
        self._log.truncate(state["log_bytes"])
        self._log.seek(0, os.SEEK_END)
        kept = set(self.files)
        for folder in ("signals", "paper"):
            for path in sorted((self.run_dir / folder).glob("*.parquet")):
                if str(path.relative_to(self.run_dir)) not in kept:
                    path.unlink()
        self.outputs = {}
        self.flush()

    def manifest(self) -> dict[str, Any]:
        """``pre_paper_manifest.json``: identity, backtest atom, runtime config, history status, summary."""
        identities = {s: v["identity"] for s, v in self.symbols.items() if v["identity"]}
        first = next(iter(identities.values()), {})
        runtime = {s: i["runtime_config"] for s, i in identities.items()}
        summaries = {s: v["summary"] for s, v in self.symbols.items() if v["summary"]}
        total = {key: sum(s.get(key, 0) for s in summaries.values())
                 for key in ("signals", "decisions", "bars", "suppressed_bars", "no_signals_periods", "degraded_periods", "fetches")}  # fmt: skip
        one = next(iter(runtime.values()), {})
        return {
            "identity": {
                "run_id": self.run_id, "timestamp_utc": iso_ns(self.started_ns), "commit_hash": self.commit,
                "tickgraph_version": tickgraph_version(), "market_tz": {s: r["market_tz"] for s, r in runtime.items()},
                "state": self.state,
            },
            "backtest_atom": first.get("backtest_atom"),
            "runtime_config": {
                "symbols": sorted(self.symbols), "base_tf_used": one.get("base_tf_used"), "required_bars": one.get("required_bars"),
                "auto_backfill_enabled": one.get("auto_backfill_enabled"), "providers": one.get("providers"),
                "clock": one.get("clock"), "staleness_grace_s": one.get("staleness_grace_s"),
                "paper_fills": one.get("paper_fills"), "calendars": {s: r["calendar"] for s, r in runtime.items()},
            },
            "history_status": {
                "initial_check": {s: _brief(v["initial_check"]) for s, v in sorted(self.symbols.items())},
                "final_check": {s: _brief(v["final_check"]) for s, v in sorted(self.symbols.items())},
                "current": {s: v["status"] for s, v in sorted(self.symbols.items())},
            },
            "execution_summary": {
                "signals_emitted": total["signals"], "decisions": total["decisions"], "bars": total["bars"],
                "no_signals_periods": total["no_signals_periods"], "no_signals_bars": total["suppressed_bars"],
                "degraded_periods": total["degraded_periods"], "fetches": total["fetches"], "per_symbol": summaries,
            },
            "artifacts": {"log": LOG, "history_check_results": CHECKS, "files": list(self.files)},
        }  # fmt: skip


def _brief(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return {k: check.get(k) for k in ("status", "gaps", "reason", "checked_at", "bars_in_window", "required_bars")}
