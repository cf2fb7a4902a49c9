"""Parameter sweeps: every combination of a grid, each a run with its own hash and artifacts.

``python run.py backtest sweep CONFIG.json --grid strategy.params.fast=5,10,20 --grid
strategy.params.slow=50,100,200`` validates every combination first (a combination its
strategy rejects, e.g. slow <= fast, is listed as skipped; grid keys may not change
the data, symbols, timeframe, range or strategy name), loads the bars once (the first
pending combination's graph run: its decision rows hold every symbol's bars, signal
and spread), then evaluates the pending combinations in chunks, on Ray tasks or in
this process, each chunk writing its runs' artifacts into staging directories. The
driver commits them to the chain in grid order (so the chain does not depend on which
task finished first) and prints the top N by Sharpe; the summary is also Parquet.

Two ways to evaluate a chunk (``--mode``; ``bench/backtest_sweep.py`` measures both):

* ``tasks``: per combination, the strategy's ``decide`` over each symbol's history,
  then the sleeves: many combinations per Ray task.
* ``vectorised``: the chunk's parameter sets in one pass of the strategy class's
  ``decide_grid`` (``dual_sma``: each distinct SMA window computed once for the
  chunk), then the sleeves per combination. Falls back to ``tasks`` for strategies
  without ``decide_grid``. This is the default (``auto``): it was faster in the bench.

Both give the same targets as ``backtest run`` (the same functions, element-wise),
and the sleeves are the execution node's: a sweep's run has the artifacts a ``backtest
run`` of that combination would write.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from backtest.config import ConfigError, RunConfig, parse_run_config
from backtest.engine import Series, execution_params, simulate, simulate_metrics, strategy_targets
from backtest.hashing import canonical_json, run_hash, sha256_hex
from backtest.metrics import bar_returns, run_metrics
from backtest.validation import run_validation
from graph.schemas import DECISION
from strategies.base import strategy_class

__all__ = ["SweepPlan", "SweepResult", "parse_grid", "plan_sweep", "decision_table", "evaluate_chunk", "run_sweep", "summary_table", "format_summary", "sweep"]

_FIXED = ("data", "symbols", "timeframe", "start", "end", "strategy.name", "indicators")


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["strategy.params.fast=5,10,20", ...]`` -> ``{"strategy.params.fast": [5, 10, 20]}`` (YAML scalars).

    Raises:
        ConfigError: not ``PATH=V1,V2,...``, a repeated path, or a path that would change the data.
    """
    grid: dict[str, list[Any]] = {}
    problems = []
    for item in items:
        path, sep, values = item.partition("=")
        path = path.strip()
        if not sep or not path or not values.strip():
            problems.append(f"--grid {item!r}: expected PATH=V1,V2,... (e.g. strategy.params.fast=5,10,20)")
            continue
        if path in grid:
            problems.append(f"--grid {path}: given twice")
        if any(path == f or path.startswith(f + ".") for f in _FIXED):
            problems.append(f"--grid {path}: a sweep runs every combination on the same data and strategy; {path} cannot vary")
        grid[path] = [yaml.safe_load(v) for v in values.split(",")]
    if problems:
        raise ConfigError("sweep", problems)
    return grid


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        doc = doc.setdefault(key, {})
    doc[keys[-1]] = value


@dataclass
class SweepPlan:
    """Every combination of a grid, validated.

    Attributes:
        grid: path -> values.
        combos: (values by path, RunConfig) of the valid combinations, grid order.
        skipped: (values by path, the problem) of the combinations the config rejects.
    """

    grid: dict[str, list[Any]]
    combos: list[tuple[dict[str, Any], RunConfig]] = field(default_factory=list)
    skipped: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def plan_sweep(base_doc: dict[str, Any], grid: dict[str, list[Any]], source: str = "sweep") -> SweepPlan:
    """Validate every combination of ``grid`` applied to the run config ``base_doc``.

    Raises:
        ConfigError: the base config is invalid, or no combination is valid.
    """
    parse_run_config(base_doc, source)
    plan = SweepPlan(grid)
    paths = list(grid)
    for values in itertools.product(*(grid[p] for p in paths)):
        doc = json.loads(json.dumps(base_doc))
        combo = dict(zip(paths, values))
        for path, value in combo.items():
            _set(doc, path, value)
        try:
            plan.combos.append((combo, parse_run_config(doc, source)))
        except ConfigError as exc:
            plan.skipped.append((combo, "; ".join(exc.problems)))
    if not plan.combos:
        raise ConfigError(source, ["--grid: no valid combination", *(f"{c}: {p}" for c, p in plan.skipped[:5])])
    return plan


def decision_table(series: Mapping[str, Series], targets: Mapping[str, np.ndarray], timeframe: str) -> pa.Table:
    """The DECISION rows (canonical order: symbol, ts) of ``targets`` on ``series``."""
    batches = []
    for symbol in sorted(series):
        h, n = series[symbol].history, len(series[symbol].history)
        batches.append(pa.RecordBatch.from_arrays([
            pa.array([symbol] * n, pa.string()), pa.array([timeframe] * n, pa.string()), pa.array(h.ts, pa.int64()),
            pa.array(h.open), pa.array(h.high), pa.array(h.low), pa.array(h.close), pa.array(h.volume),
            pa.array(targets[symbol], pa.float64()), pa.array(series[symbol].spread_bps), pa.array(h.signal),
        ], schema=DECISION))  # fmt: skip
    return pa.Table.from_batches(batches, schema=DECISION)


def _grid_targets(configs: Sequence[RunConfig], series: Mapping[str, Series], mode: str) -> list[dict[str, np.ndarray]]:
    cls = strategy_class(configs[0].strategy.name)
    grid_pass = getattr(cls, "decide_grid", None)
    if mode == "tasks" or grid_pass is None:
        return [strategy_targets(c.strategy.name, c.strategy.params, series) for c in configs]
    params = [cls.Params.model_validate(c.strategy.params) for c in configs]
    per_symbol = {symbol: grid_pass(s.history, params) for symbol, s in series.items()}
    return [{symbol: per_symbol[symbol][k] for symbol in series} for k in range(len(configs))]


def evaluate_chunk(
    series: Mapping[str, Series],
    configs: Sequence[RunConfig],
    hashes: Sequence[str],
    mode: str = "vectorised",
    staging: str | None = None,
) -> list[dict[str, Any]]:
    """Backtest ``configs`` (one strategy, same data) on ``series``; write each run's artifacts.

    Args:
        series: every symbol's bars (from a run's decision rows).
        configs: the combinations to evaluate.
        hashes: their run hashes (directory names under ``staging``).
        mode: ``vectorised`` or ``tasks`` (see the module docstring).
        staging: directory to write ``<hash>/`` run files into; None: compute only (benchmarks).

    Returns:
        Per config, its ``metrics.json`` content.
    """
    from backtest.artifacts import write_run_files
    from backtest.runner import canonical_config

    out = []
    for config, targets, h in zip(configs, _grid_targets(configs, series, mode), hashes):
        if staging is None:  # metrics only: no tables
            out.append(simulate_metrics(series, targets, execution_params(config)))
            continue
        result = simulate(series, targets, execution_params(config))
        metrics = run_metrics(result.equity, result.trades, list(config.symbols), config.initial_cash, config.bars_per_year)
        out.append(metrics)
        book = result.book().column("equity").to_numpy()
        closed = result.trades.filter(pc.is_valid(result.trades.column("exit_ts"))).sort_by([("exit_ts", "ascending"), ("symbol", "ascending")])
        validation = run_validation(config, series, bar_returns(book, config.initial_cash), closed.column("pnl").to_numpy() if closed.num_rows else np.empty(0))
        tables = {"equity": result.equity, "fills": result.fills, "trades": result.trades,
                  "decisions": decision_table(series, targets, config.timeframe)}  # fmt: skip
        write_run_files(Path(staging) / h, h, canonical_config(config), tables, metrics, validation)
    return out


_SUMMARY_METRICS = ("sharpe", "total_return", "cagr", "sortino", "max_drawdown", "trades", "win_rate", "profit_factor", "exposure", "final_equity")


def summary_table(plan: SweepPlan, hashes: Sequence[str], metrics: Sequence[dict[str, Any]], statuses: Sequence[str]) -> pa.Table:
    """One row per valid combination: its grid values, run hash, status and book metrics (grid order)."""
    rows = []
    for (combo, _), h, m, status in zip(plan.combos, hashes, metrics, statuses):
        row = {path: json.dumps(value) for path, value in combo.items()}
        row.update(run_hash=h, status=status, **{k: m["book"].get(k) for k in _SUMMARY_METRICS})
        rows.append(row)
    return pa.Table.from_pylist(rows)


def format_summary(table: pa.Table, top: int, paths: Sequence[str]) -> str:
    """The top ``top`` rows by Sharpe (undefined last) as a text table."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["sharpe"] is None, -(r["sharpe"] or 0.0)))[:top]
    columns = [*paths, "sharpe", "total_return", "max_drawdown", "trades", "win_rate", "run_hash"]
    width = {c: max(len(c.split(".")[-1]), 10) for c in columns}
    width["run_hash"] = 12

    def cell(column: str, value: Any) -> str:
        if column == "run_hash":
            return str(value)[:12]
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    lines = ["  ".join(c.split(".")[-1].rjust(width[c]) for c in columns)]
    lines += ["  ".join(cell(c, r[c]).rjust(width[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def sweep_id(base_doc: dict[str, Any], grid: dict[str, list[Any]]) -> str:
    """A stable id of a sweep (its base config and grid): names its summary file."""
    return sha256_hex(canonical_json({"config": base_doc, "grid": grid}))[:16]


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in consecutive chunks of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_sweep(
    plan: SweepPlan,
    prepared_hashes: Sequence[str],
    series: Mapping[str, Series],
    pending: Sequence[int],
    staging: Path,
    mode: str,
    backend: str,
    chunk_size: int,
    on_done: Callable[[int], None],
) -> dict[int, dict[str, Any]]:
    """Evaluate the ``pending`` combination indexes in chunks (Ray tasks or in-process).

    Returns:
        combination index -> its metrics; each run's files are under ``staging/<hash>/``.
    """
    chunks = chunked(list(pending), chunk_size)
    results: dict[int, dict[str, Any]] = {}
    if backend == "local":
        for chunk in chunks:
            metrics = evaluate_chunk(series, [plan.combos[i][1] for i in chunk], [prepared_hashes[i] for i in chunk], mode, str(staging))
            results.update(zip(chunk, metrics))
            on_done(len(chunk))
        return results
    import ray

    task = ray.remote(evaluate_chunk)
    series_ref = ray.put(dict(series))
    refs = {
        task.remote(series_ref, [plan.combos[i][1] for i in chunk], [prepared_hashes[i] for i in chunk], mode, str(staging)): chunk
        for chunk in chunks
    }
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        chunk = refs.pop(ready[0])
        results.update(zip(chunk, ray.get(ready[0])))
        on_done(len(chunk))
    return results


def discard(path: Path) -> None:
    """Remove a staging directory (ignore a missing one)."""
    shutil.rmtree(path, ignore_errors=True)


def combo_hashes(plan: SweepPlan, data_hash: str) -> list[str]:
    """The run hash of every valid combination (same data for all)."""
    from backtest.runner import canonical_config

    return [run_hash(canonical_json(canonical_config(c)), data_hash) for _, c in plan.combos]


@dataclass
class SweepResult:
    """A finished sweep: the plan, the summary table (grid order) and where it was written."""

    plan: SweepPlan
    summary: pa.Table
    summary_path: Path


def sweep(
    base_doc: dict[str, Any],
    grid: dict[str, list[Any]],
    *,
    root: Path,
    base_dir: Path,
    backend: str = "local",
    mode: str = "auto",
    chunk_size: int = 25,
    parallelism: int = 2,
    keep: int = 100,
    summary_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Run every combination of ``grid`` over ``base_doc`` (see the module docstring).

    Args:
        base_doc: the run config document (parsed JSON).
        grid: from :func:`parse_grid`.
        root: the artifacts directory.
        base_dir: where relative data paths resolve.
        backend: ``ray`` (tasks; ``ray.init`` done) or ``local``.
        mode: ``auto`` (vectorised when the strategy has ``decide_grid``), ``vectorised`` or ``tasks``.
        chunk_size: combinations per task.
        parallelism: shards of the graph run that loads the bars.
        keep: retention.
        summary_path: the summary Parquet (default ``root/sweeps/<sweep id>.parquet``).
        progress: called with (combinations done, total).

    Raises:
        ConfigError: bad base config, grid, or symbols (before any work).
    """
    from backtest.manifest import commit_run
    from backtest.runner import Prepared, canonical_config, prepare, run_backtest, run_identity

    root, base_dir = Path(root).resolve(), Path(base_dir).resolve()
    plan = plan_sweep(base_doc, grid)
    first = plan.combos[0][1]
    prepared = prepare(first, base_dir)
    hashes = combo_hashes(plan, prepared.data["content_sha256"])
    total = len(hashes)
    done = {i for i, h in enumerate(hashes) if (root / h / "run_manifest.json").is_file()}
    statuses = ["existing" if i in done else "computed" for i in range(total)]
    count = len(done)
    if progress:
        progress(count, total)
    pending = [i for i in range(total) if i not in done]
    metrics: dict[int, dict[str, Any]] = {}
    if pending:
        source = next(iter(sorted(done)), None)
        if source is None:  # no run yet on this data: the first pending one runs as a graph
            source = pending.pop(0)
            run_backtest(plan.combos[source][1], root=root, base_dir=base_dir, backend=backend, parallelism=parallelism, keep=keep)
            count += 1
            if progress:
                progress(count, total)
        series = _series_of(root / hashes[source])
        staging = root / ".staging" / f"sweep-{sweep_id(base_doc, grid)}"
        discard(staging)
        chosen = "tasks" if mode == "tasks" else "vectorised"

        def advanced(k: int) -> None:
            nonlocal count
            count += k
            if progress:
                progress(count, total)

        try:
            metrics = run_sweep(plan, hashes, series, pending, staging, chosen, backend, chunk_size, advanced)
            for i in pending:  # grid order: the chain does not depend on task timing
                config = plan.combos[i][1]
                if not (root / hashes[i]).exists():
                    identity = run_identity(Prepared(config, canonical_config(config), prepared.data, hashes[i]))
                    commit_run(root, staging / hashes[i], hashes[i], identity, keep)
        finally:
            discard(staging)
    all_metrics = [metrics.get(i) or json.loads((root / h / "metrics.json").read_text(encoding="utf-8")) for i, h in enumerate(hashes)]
    table = summary_table(plan, hashes, all_metrics, statuses)
    path = summary_path or root / "sweeps" / f"{sweep_id(base_doc, grid)}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    from actors.portfolio import write_parquet

    write_parquet(table, path)
    return SweepResult(plan, table, path)


def _series_of(run_dir: Path) -> dict[str, Series]:
    import pyarrow.parquet as pq

    from backtest.engine import series_from_decisions

    return series_from_decisions(pq.read_table(run_dir / "decisions.parquet"))
