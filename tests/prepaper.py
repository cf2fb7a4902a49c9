"""Shared helpers of the pre-paper tests: real backtest manifests, SYNTHETIC bars, a fake clock.

The manifests are real backtest runs (``backtest.runner.run_backtest``) on the fixtures'
ticks, computed once per test process. Bars called *synthetic* here are generated (a
seeded random walk on the slots of a trading calendar) for calendar, gap and staleness
tests; nothing here computes an expected value.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from backtest.config import parse_run_config
from backtest.runner import run_backtest
from graph.operator import OperatorContext
from graph.schemas import BAR
from tests.backtests import config_doc

NS = 1_000_000_000
MINUTE = 60 * NS


def stamp(text: str) -> int:
    """int64 ns UTC of an ISO time with offset (``2012-07-02T10:00:00-04:00``)."""
    return int(pd.Timestamp(text).value)


@lru_cache(maxsize=None)
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="tickgraph-prepaper-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@lru_cache(maxsize=None)
def backtests() -> Path:
    """An artifacts directory with two real runs on the fixtures' ticks (chained in this order):

    * dual_sma 10/30 on AMZN and BTCUSDT 1m bars (the backtest tests' standard config);
    * dual_sma 5/20 on BTCUSDT 1s bars;
    * dual_sma 10/30 on AMZN 1m bars alone.
    """
    root = _root() / "backtests"
    run_backtest(parse_run_config(config_doc()), root=root)
    run_backtest(parse_run_config(config_doc(["BTCUSDT"], timeframe="1s", strategy={"name": "dual_sma", "params": {"fast": 5, "slow": 20}})), root=root)
    run_backtest(parse_run_config(config_doc(["AMZN"])), root=root)
    return root


def manifest_1m() -> Path:
    """The 1m run's ``run_manifest.json``."""
    return _manifest(backtests(), "1m")


def manifest_1s() -> Path:
    """The 1s run's ``run_manifest.json``."""
    return _manifest(backtests(), "1s", ["BTCUSDT"])


def manifest_amzn() -> Path:
    """The AMZN-only 1m run's ``run_manifest.json``."""
    return _manifest(backtests(), "1m", ["AMZN"])


def _manifest(root: Path, timeframe: str, symbols: list[str] | None = None) -> Path:
    import json

    for path in sorted(root.glob("*/run_manifest.json")):
        doc = json.loads(path.read_text())
        if doc["strategy"]["timeframe"] == timeframe and (symbols is None and len(doc["data"]["symbols"]) > 1 or doc["data"]["symbols"] == symbols):
            return path
    raise FileNotFoundError(f"no {timeframe} run of {symbols} in {root}")


def copy_backtests(target: Path) -> Path:
    """A copy of :func:`backtests` (to edit or make read-only)."""
    shutil.copytree(backtests(), target)
    return target


def tree_digest(root: Path) -> dict[str, tuple[int, str, int]]:
    """``relative path -> (size, sha256, mtime ns)`` of every file under ``root``, and every directory."""
    out: dict[str, tuple[int, str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel + "/"] = (0, "", path.stat().st_mtime_ns)
        else:
            out[rel] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """Make ``path`` truly read-only for this process while the block runs; yields how.

    Not root: ``chmod`` (dirs 0555, files 0444). Root (which ``chmod`` does not stop): a
    read-only bind mount of ``path`` onto itself. Either way the block starts only after
    a write into ``path`` was seen to fail.

    Raises:
        RuntimeError: neither way works here (the caller cannot check read-only access).
    """
    how = "chmod"
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    if os.geteuid() != 0:
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
    else:
        how = "bind mount"
        done = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
        if done.returncode != 0 or subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode != 0:
            if done.returncode == 0:
                subprocess.run(["umount", str(path)], capture_output=True)
            raise RuntimeError(f"cannot make {path} read-only as root: {done.stderr.decode(errors='replace').strip()}")
    try:
        probe = path / ".write-probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            probe.unlink()
            raise RuntimeError(f"{path} is still writable after {how}")
        yield how
    finally:
        if how == "chmod":
            for p, mode in modes.items():
                p.chmod(mode)
        else:
            subprocess.run(["umount", str(path)], capture_output=True)


class FakeClock:
    """A clock for ``OperatorContext.clock_ns`` that moves only when told (int ns UTC)."""

    def __init__(self, start_ns: int) -> None:
        self.now = int(start_ns)

    def __call__(self) -> int:
        return self.now

    def set(self, ns: int) -> None:
        """Move to ``ns`` (never backwards)."""
        self.now = max(self.now, int(ns))


def synthetic_bars(calendar: Any, timeframe: str, start: int, end: int, seed: int = 7, price: float = 100.0) -> dict[str, np.ndarray]:
    """SYNTHETIC bars on every slot of ``calendar`` in ``[start, end)``: a seeded random walk.

    Returns ``{"ts", "open", "high", "low", "close", "volume", "vwap"}`` arrays.
    """
    ts = calendar.slots_between(timeframe, start, end)
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.001, len(ts))))
    open_ = np.r_[price, close[:-1]]
    spread = np.abs(rng.normal(0, 0.0005, len(ts))) * close
    return {
        "ts": ts, "open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
        "close": close, "volume": rng.integers(100, 1000, len(ts)).astype(float), "vwap": (open_ + close) / 2,
    }  # fmt: skip


def take(bars: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``keep`` (mask or indices) of a bar dict."""
    return {name: values[keep] for name, values in bars.items()}


def bar_batch(bars: dict[str, np.ndarray], symbol: str, timeframe: str, status: str = "confirmed") -> pa.RecordBatch:
    """A BAR batch of a bar dict."""
    n = len(bars["ts"])
    columns = {
        "symbol": pa.array([symbol] * n), "timeframe": pa.array([timeframe] * n), "trade_count": pa.array(np.ones(n, np.int64)),
        "status": pa.array([status] * n), **{k: pa.array(np.asarray(bars[k]), BAR.field(k).type) for k in ("ts", "open", "high", "low", "close", "volume", "vwap")},
    }  # fmt: skip
    return pa.RecordBatch.from_arrays([columns[f.name] for f in BAR], schema=BAR)


def make_pre_paper(manifest: Path, tmp: Path, clock_ns: Any = None, shard: int = 0, num_shards: int = 1, **params: Any):
    """A ``pre_paper`` operator (validated params; cache under ``tmp`` unless given)."""
    from actors.pre_paper import PrePaper, PrePaperParams

    doc = {"manifest": str(manifest), "cache": str(tmp / "cache.db"), **params}
    model = PrePaperParams.model_validate(doc, context={"base_dir": tmp})
    ctx = OperatorContext(node_id="pre_paper", shard=shard, num_shards=num_shards, base_dir=tmp, clock_ns=clock_ns, run_id="test-run")
    return PrePaper(model, ctx)


def events_of(emits: list, kind: str | None = None) -> list[dict]:
    """The PRE_PAPER_EVENT rows (dicts) in ``emits`` (of ``kind``)."""
    rows = [row for stream, batch in emits if stream == "events" for row in batch.to_pylist()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def decisions_of(emits: list) -> pa.Table | None:
    """The DECISION rows in ``emits`` as a table (None: none)."""
    batches = [batch for stream, batch in emits if stream == "decisions"]
    return pa.Table.from_batches(batches) if batches else None
