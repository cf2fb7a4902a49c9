"""One backtest run: validate, hash, (re)use or compute, write artifacts, commit to the chain.

Steps (each reported as an event ``{"step", "progress", "detail"}``, progress 0..1):

``startup``
    the config is valid (``backtest/config.py``) and its symbols exist in the data:
    nothing has run yet when a bad config fails.
``dataload``
    the input's content hash, hence the run hash. An existing run with that hash is
    returned as is (idempotent); ``force`` recomputes it.
``backtest``
    the run's graph (``backtest/graphs.py``) on Ray or in-process, writing its tables.
``validation``
    metrics, then each configured suite (``backtest/validation.py``).
``done``
    artifacts written, manifest committed to the chain (``backtest/manifest.py``).

A forced rerun keeps the run's place in the chain (same ``chain_prev``) and must
reproduce every artifact byte for byte: if it does, the run is left as it was
(``recomputed``, ``identical``); if not, the new files are kept beside it in
``<run_hash>.rerun/`` and the outcome names the files that differ.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from backtest.artifacts import copy_tree, identity, write_run_files
from backtest.config import RunConfig, StoreData
from backtest.data import check_symbols, data_identity
from backtest.engine import series_from_decisions
from backtest.graphs import load_run_graph, read_outputs, run_graph
from backtest.hashing import canonical_json, run_hash, tickgraph_version
from backtest.manifest import DEFAULT_KEEP, HASHED, MANIFEST, commit_run, write_manifest
from backtest.metrics import bar_returns, run_metrics
from backtest.validation import run_validation
from strategies.base import make_strategy

__all__ = ["DEFAULT_ROOT", "Prepared", "RunOutcome", "canonical_config", "prepare", "run_backtest", "run_identity"]

#: Default artifacts directory, relative to the current directory.
DEFAULT_ROOT = Path("artifacts") / "backtests"
EventSink = Callable[[str, float, str], None]


@dataclass(frozen=True)
class Prepared:
    """A validated run before any computation: its canonical config, data identity and hash."""

    config: RunConfig
    config_doc: dict[str, Any]
    data: dict[str, Any]
    run_hash: str


@dataclass
class RunOutcome:
    """What :func:`run_backtest` did.

    Attributes:
        run_hash: the run's hash (its artifacts directory name).
        status: ``existing`` (found, nothing computed), ``computed`` or ``recomputed`` (--force).
        run_dir: the run's artifacts directory.
        identical: recomputed only: every artifact byte-identical to the existing run.
        differing: recomputed only: the artifact names that differ.
        metrics: the run's ``metrics.json`` content.
        events: the events of this call.
    """

    run_hash: str
    status: str
    run_dir: Path
    identical: bool | None = None
    differing: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def canonical_config(config: RunConfig) -> dict[str, Any]:
    """The config as the JSON object that is hashed: every default filled; a store URL's password masked."""
    doc = config.model_dump(mode="json")
    if isinstance(config.data, StoreData):
        from db.engine import mask_url

        doc["data"]["url"] = mask_url(config.data.url)
    return doc


def prepare(config: RunConfig, base_dir: Path) -> Prepared:
    """Check the symbols against the data and compute the run hash.

    Raises:
        ConfigError: an unknown symbol, a missing store or unreadable tick file.
    """
    check_symbols(config, base_dir)
    doc = canonical_config(config)
    data = data_identity(config, base_dir)
    return Prepared(config, doc, data, run_hash(canonical_json(doc), data["content_sha256"]))


def _differing(a: Path, b: Path) -> list[str]:
    return [name for name in (*HASHED, MANIFEST) if not (a / name).is_file() or (a / name).read_bytes() != (b / name).read_bytes()]


def run_backtest(
    config: RunConfig,
    *,
    root: Path = DEFAULT_ROOT,
    base_dir: Path | None = None,
    force: bool = False,
    backend: str = "local",
    parallelism: int = 2,
    keep: int = DEFAULT_KEEP,
    on_event: EventSink | None = None,
) -> RunOutcome:
    """Run ``config`` (or return its existing run); see the module docstring.

    Args:
        config: a validated run config.
        root: the artifacts directory.
        base_dir: where relative data paths resolve (the config file's directory; default cwd).
        force: recompute an existing run and check that it reproduces byte for byte.
        backend: ``ray`` (``ray.init`` done by the caller) or ``local``.
        parallelism: shards of the keyed nodes.
        keep: retention, run directories kept.
        on_event: called with (step, progress 0..1, detail) for every event.

    Returns:
        :class:`RunOutcome`.

    Raises:
        ConfigError: bad symbols or data (before any work).
        graph.runtime.NodeFailure: a node failed while running.
    """
    root, base_dir = Path(root).resolve(), Path(base_dir or Path.cwd()).resolve()
    events: list[dict[str, Any]] = []

    def emit(step: str, progress: float, detail: str = "") -> None:
        events.append({"step": step, "progress": round(float(progress), 6), "detail": detail})
        if on_event is not None:
            on_event(step, progress, detail)

    emit("startup", 0.0, "validating the config and its symbols")
    prepared = prepare(config, base_dir)
    emit("startup", 1.0, f"run {prepared.run_hash}")
    emit("dataload", 1.0, f"input content sha256 {prepared.data['content_sha256']}")
    run_dir = root / prepared.run_hash
    exists = (run_dir / MANIFEST).is_file()
    if exists and not force:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        emit("done", 1.0, "existing run: nothing recomputed")
        return RunOutcome(prepared.run_hash, "existing", run_dir, metrics=metrics, events=events)
    staging = root / ".staging" / f"{prepared.run_hash}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        metrics = _compute(prepared, staging, base_dir, backend, parallelism, emit)
        staged = staging / "run"
        if exists:
            outcome = _compare_rerun(root, run_dir, staged, prepared, metrics, events)
        else:
            (staged / "events.jsonl").write_text("".join(canonical_json(e) for e in events), encoding="utf-8")
            commit_run(root, staged, prepared.run_hash, run_identity(prepared), keep)
            outcome = RunOutcome(prepared.run_hash, "computed", run_dir, metrics=metrics, events=events)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    emit("done", 1.0, outcome.status)
    if outcome.status == "computed":
        with open(run_dir / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(canonical_json(events[-1]))
    return outcome


def run_identity(prepared: Prepared) -> dict[str, Any]:
    """The manifest identity of a prepared run (``backtest.artifacts.identity`` with its strategy's warm-up)."""
    warmup = int(make_strategy(prepared.config.strategy.name, prepared.config.strategy.params).warmup_bars)
    return identity(prepared.run_hash, prepared.config_doc, prepared.data, warmup, tickgraph_version())


def _compute(prepared: Prepared, staging: Path, base_dir: Path, backend: str, parallelism: int, emit: EventSink) -> dict[str, Any]:
    config = prepared.config
    emit("backtest", 0.0, f"graph on {backend}, parallelism {parallelism}")
    loaded = load_run_graph(config, staging / "graph", parallelism, base_dir)
    run_graph(loaded, backend, on_progress=lambda rows, wm: None)
    tables = read_outputs(staging / "graph")
    emit("backtest", 1.0, f"{tables['decisions'].num_rows} bars, {tables['fills'].num_rows} fills")
    emit("validation", 0.0, "metrics")
    metrics = run_metrics(tables["equity"], tables["trades"], list(config.symbols), config.initial_cash, config.bars_per_year)
    book = tables["equity"].filter(pc.equal(tables["equity"].column("symbol"), "*"))
    returns = bar_returns(book.column("equity").to_numpy(), config.initial_cash)
    closed = tables["trades"].filter(pc.is_valid(tables["trades"].column("exit_ts"))).sort_by([("exit_ts", "ascending"), ("symbol", "ascending")])
    pnl = closed.column("pnl").to_numpy() if closed.num_rows else np.empty(0)
    validation = run_validation(
        config, series_from_decisions(tables["decisions"]), returns, pnl,
        progress=lambda suite, f: emit("validation", f, suite),
    )  # fmt: skip
    emit("validation", 1.0, ", ".join(validation) or "no suites configured")
    write_run_files(staging / "run", prepared.run_hash, prepared.config_doc, tables, metrics, validation)
    return metrics


def _compare_rerun(root: Path, run_dir: Path, staged: Path, prepared: Prepared, metrics: dict, events: list) -> RunOutcome:
    """Manifest the rerun at the existing run's chain position and compare every byte."""
    existing = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    write_manifest(staged, run_identity(prepared), existing.get("chain_prev"))
    differing = _differing(run_dir, staged)
    if differing:
        copy_tree(staged, root / f"{prepared.run_hash}.rerun")
    return RunOutcome(prepared.run_hash, "recomputed", run_dir, identical=not differing, differing=differing, metrics=metrics, events=events)
