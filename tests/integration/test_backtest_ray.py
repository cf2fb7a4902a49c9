"""Backtests on Ray: the same config gives byte-identical artifacts with strategy/execution
parallelism 4 on Ray and 1 in-process; a sweep's Ray tasks write what in-process does.
(``--force`` byte-identity and the other parallelism checks run without Ray in
test_backtest_runs.py, to keep the Ray time small.)"""

from __future__ import annotations

import pytest

from backtest.manifest import HASHED, MANIFEST, verify_artifacts
from backtest.runner import run_backtest
from backtest.sweep import parse_grid, sweep
from tests.backtests import artifacts_equal, config, config_doc

pytestmark = pytest.mark.ray


def test_parallelism_4_on_ray_and_1_in_process_give_the_same_bytes(ray_session, tmp_path):
    cfg = config(validation={"permutation": {"trials": 19}, "bootstrap": {"samples": 50}})
    on_ray = run_backtest(cfg, root=tmp_path / "ray", backend="ray", parallelism=4)
    local = run_backtest(cfg, root=tmp_path / "local", backend="local", parallelism=1)
    assert on_ray.run_hash == local.run_hash
    assert artifacts_equal(on_ray.run_dir, local.run_dir, (*HASHED, MANIFEST)) == []


def test_a_sweep_on_ray_tasks_equals_the_in_process_sweep(ray_session, tmp_path):
    grid = parse_grid(["strategy.params.fast=5,10", "strategy.params.slow=20,30"])
    doc = config_doc(["BTCUSDT"])
    on_ray = sweep(doc, grid, root=tmp_path / "ray", base_dir=tmp_path, backend="ray", chunk_size=2, parallelism=1)
    local = sweep(doc, grid, root=tmp_path / "local", base_dir=tmp_path, backend="local", mode="tasks")
    assert on_ray.summary.equals(local.summary)
    for run_hash in on_ray.summary.column("run_hash").to_pylist():
        assert artifacts_equal(tmp_path / "ray" / run_hash, tmp_path / "local" / run_hash, (*HASHED, MANIFEST)) == []
    assert verify_artifacts(tmp_path / "ray").runs == 4 and verify_artifacts(tmp_path / "ray").ok
