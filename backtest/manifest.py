"""The artifacts directory: run manifests, the provenance chain, retention and verification.

Layout (default ``artifacts/backtests/`` under the current directory)::

    artifacts/backtests/
      chain.jsonl            one line per run, oldest first: {"manifest_hash", "run_hash"}
      <run_hash>/
        config.json metrics.json trades.parquet fills.parquet equity.parquet
        decisions.parquet validation.json report.html    <- hashed artifacts
        run_manifest.json                               <- name, size, sha256 of each
        events.jsonl                                    <- progress log (not hashed)

``run_manifest.json`` holds the run's identity (hash, tickgraph version, data and
strategy sections that the pre-paper runner reads), every hashed artifact's ``name``,
``size`` and ``sha256``, ``chain_prev`` (the previous run's ``manifest_hash``; null for
the first run) and ``manifest_hash`` = SHA-256 of the canonical JSON of the manifest
without ``manifest_hash``. Runs form a linear chain in ``chain.jsonl`` order; nothing
hashed holds a wall-clock time, so a rerun reproduces every byte.

Retention keeps the newest ``keep`` (default 100) run directories; older ones are
deleted but stay in ``chain.jsonl``, so the oldest kept run's ``chain_prev`` can
still be checked against its pruned predecessor's recorded hash.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtest.hashing import canonical_json, file_sha256, sha256_hex

__all__ = [
    "MANIFEST",
    "CHAIN",
    "HASHED",
    "DEFAULT_KEEP",
    "ChainEntry",
    "VerifyReport",
    "manifest_hash",
    "file_entries",
    "read_chain",
    "locked",
    "write_manifest",
    "commit_run",
    "load_manifest",
    "strategy_node_params",
    "verify_artifacts",
    "verify_run",
    "prune",
]

MANIFEST = "run_manifest.json"
CHAIN = "chain.jsonl"
#: The hashed artifacts of a run, in manifest order.
HASHED = (
    "config.json", "metrics.json", "trades.parquet", "fills.parquet", "equity.parquet",
    "decisions.parquet", "validation.json", "report.html",
)  # fmt: skip
DEFAULT_KEEP = 100


@dataclass(frozen=True)
class ChainEntry:
    """One line of ``chain.jsonl``."""

    run_hash: str
    manifest_hash: str


@dataclass
class VerifyReport:
    """What :func:`verify_artifacts` found.

    Attributes:
        runs: runs whose directory was checked.
        pruned: chain entries whose directory retention removed.
        first_broken: the first broken link (run hash), None if the chain is intact.
        problems: one sentence per problem, the first broken link first.
    """

    runs: int = 0
    pruned: int = 0
    first_broken: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is broken."""
        return not self.problems


def manifest_hash(manifest: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``manifest`` without its ``manifest_hash`` key."""
    return sha256_hex(canonical_json({k: v for k, v in manifest.items() if k != "manifest_hash"}))


def file_entries(run_dir: Path) -> list[dict[str, Any]]:
    """``[{"name", "size", "sha256"}]`` of the hashed artifacts present in ``run_dir``, in :data:`HASHED` order."""
    return [
        {"name": name, "size": (run_dir / name).stat().st_size, "sha256": file_sha256(run_dir / name)}
        for name in HASHED
        if (run_dir / name).is_file()
    ]


def read_chain(root: Path) -> list[ChainEntry]:
    """The chain, oldest first (empty when there is no ``chain.jsonl``)."""
    path = root / CHAIN
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            entries.append(ChainEntry(doc["run_hash"], doc["manifest_hash"]))
    return entries


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the artifacts directory (``.lock``; flock, one host)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_manifest(run_dir: Path, identity: dict[str, Any], chain_prev: str | None) -> dict[str, Any]:
    """Write ``run_dir/run_manifest.json`` from ``identity``, the artifacts present and ``chain_prev``; returns it."""
    manifest = {**identity, "files": file_entries(run_dir), "chain_prev": chain_prev}
    manifest["manifest_hash"] = manifest_hash(manifest)
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def commit_run(root: Path, staged: Path, run_hash: str, identity: dict[str, Any], keep: int = DEFAULT_KEEP) -> dict[str, Any]:
    """Move a staged run directory into place, write its manifest, append it to the chain, prune.

    Args:
        root: the artifacts directory.
        staged: a directory holding the run's hashed artifacts (moved, not copied).
        run_hash: the run's hash (its directory name).
        identity: the manifest's identity fields (``run_hash``, ``data``, ``strategy``, ...).
        keep: run directories to keep (retention), >= 1.

    Returns:
        The manifest written.

    Raises:
        FileExistsError: a run with this hash is already committed.
    """
    with locked(root):
        target = root / run_hash
        if target.exists():
            raise FileExistsError(f"run {run_hash} already exists in {root}")
        chain = read_chain(root)
        manifest = write_manifest(staged, identity, chain[-1].manifest_hash if chain else None)
        os.replace(staged, target)
        with open(root / CHAIN, "a", encoding="utf-8") as handle:
            handle.write(canonical_json({"manifest_hash": manifest["manifest_hash"], "run_hash": run_hash}))
        prune(root, keep)
    return manifest


def prune(root: Path, keep: int) -> list[str]:
    """Delete the run directories older than the newest ``keep`` in the chain; returns their hashes."""
    chain = read_chain(root)
    removed = []
    for entry in chain[: max(0, len(chain) - keep)]:
        path = root / entry.run_hash
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(entry.run_hash)
    return removed


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a ``run_manifest.json`` (or a run directory) and check its ``manifest_hash``.

    This is what the pre-paper runner reads: ``manifest["strategy"]`` (name, params,
    timeframe, warmup_bars) and ``manifest["data"]`` (symbols, timeframe, ...).

    Raises:
        ValueError: the file's content does not match its ``manifest_hash``.
        OSError: unreadable.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("manifest_hash") != manifest_hash(manifest):
        raise ValueError(f"{path}: manifest_hash does not match the manifest's content (edited or corrupt)")
    return manifest


def strategy_node_params(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``strategy`` node params that run a manifest's strategy on live bars (pre-paper).

    ``{"strategy", "params", "timeframe", "history_bars"}``; the history the runner must
    hold before the first decision is ``manifest["strategy"]["warmup_bars"]`` bars.
    """
    strategy = manifest["strategy"]
    return {
        "strategy": strategy["name"],
        "params": dict(strategy["params"]),
        "timeframe": strategy["timeframe"],
        "history_bars": int(strategy["warmup_bars"]),
    }


def verify_artifacts(root: Path) -> VerifyReport:
    """Re-hash every kept run and check the chain; the report names the first broken link.

    A link is broken when: the run's ``run_manifest.json`` is missing or does not match
    its ``manifest_hash``; an artifact is missing, has another size or SHA-256 than
    listed; the manifest's hash is not the one recorded in ``chain.jsonl``; or its
    ``chain_prev`` is not the previous entry's ``manifest_hash``. A directory missing
    after a kept run (not pruned by retention) is broken too.
    """
    report = VerifyReport()
    chain = read_chain(root)
    previous: str | None = None
    seen_kept = False
    for entry in chain:
        run_dir = root / entry.run_hash
        problems = []
        if not run_dir.is_dir():
            if seen_kept:
                problems.append(f"run {entry.run_hash}: directory missing, yet an older run is kept (retention only removes the oldest)")
            else:
                report.pruned += 1
                previous = entry.manifest_hash
                continue
        else:
            seen_kept = True
            report.runs += 1
            problems += _check_run(run_dir, entry, previous)
        if problems and report.first_broken is None:
            report.first_broken = entry.run_hash
        report.problems += problems
        previous = entry.manifest_hash
    return report


def verify_run(run_dir: Path) -> list[str]:
    """Re-hash one kept run and check its link in its artifacts directory's chain (reads only).

    The pre-paper runner refuses a manifest this finds a problem with: the run's
    ``run_manifest.json`` must match its ``manifest_hash``, every listed artifact its size
    and SHA-256, and ``chain.jsonl`` (in ``run_dir``'s parent) must record the run with
    that hash after the run its ``chain_prev`` names.

    Returns:
        One sentence per problem (empty: the run verifies).
    """
    root = run_dir.parent
    chain = read_chain(root)
    for i, entry in enumerate(chain):
        if entry.run_hash == run_dir.name:
            return _check_run(run_dir, entry, chain[i - 1].manifest_hash if i else None)
    return [f"run {run_dir.name}: not recorded in {root / CHAIN} (a run directory outside its artifacts chain)"]


def _check_run(run_dir: Path, entry: ChainEntry, previous: str | None) -> list[str]:
    name = entry.run_hash
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"run {name}: {MANIFEST} unreadable: {exc}"]
    problems = []
    if manifest.get("manifest_hash") != manifest_hash(manifest):
        problems.append(f"run {name}: {MANIFEST} content does not match its manifest_hash")
    if manifest.get("manifest_hash") != entry.manifest_hash:
        problems.append(f"run {name}: manifest_hash {manifest.get('manifest_hash')} is not the {entry.manifest_hash} recorded in {CHAIN}")
    if manifest.get("chain_prev") != previous:
        problems.append(f"run {name}: chain_prev {manifest.get('chain_prev')} is not the previous run's manifest_hash {previous}")
    for item in manifest.get("files", []):
        path = run_dir / item["name"]
        if not path.is_file():
            problems.append(f"run {name}: {item['name']} is missing")
        elif path.stat().st_size != item["size"] or file_sha256(path) != item["sha256"]:
            problems.append(f"run {name}: {item['name']} changed (size or sha256 differ from the manifest)")
    return problems
