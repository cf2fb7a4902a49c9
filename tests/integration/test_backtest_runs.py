"""Backtest runs end to end in this process (backend ``local``; the Ray runs are in
test_backtest_ray.py): idempotent submission, --force byte-identity, the manifest chain
and retention, the report, sweeps writing the same artifacts as single runs, and bars
read from the main job's store equal to bars replayed from its tick files."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from backtest.config import parse_run_config
from actors.strategy import StrategyNode, StrategyNodeParams
from backtest.manifest import CHAIN, HASHED, MANIFEST, load_manifest, read_chain, strategy_node_params, verify_artifacts
from graph.operator import OperatorContext
from backtest.runner import run_backtest
from backtest.sweep import parse_grid, sweep
from tests.backtests import artifacts_equal, config, config_doc
from tests.conftest import run_main_job


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An artifacts directory holding one computed run (dual_sma on both symbols, with validation)."""
    root = tmp_path_factory.mktemp("artifacts")
    doc = config_doc(validation={"permutation": {"trials": 19}, "bootstrap": {"samples": 50}, "monte_carlo": {"samples": 50},
                                 "walk_forward": {"grid": {"fast": [5, 10]}, "in_sample_bars": 200, "out_of_sample_bars": 100}})  # fmt: skip
    outcome = run_backtest(parse_run_config(doc), root=root)
    assert outcome.status == "computed"
    return root


def only_run(root):
    (entry,) = read_chain(root)[:1]
    return root / entry.run_hash


def test_a_second_submission_returns_the_existing_run(root):
    run_dir = only_run(root)
    stamp = (run_dir / "equity.parquet").stat().st_mtime_ns
    doc = config_doc(validation={"permutation": {"trials": 19}, "bootstrap": {"samples": 50}, "monte_carlo": {"samples": 50},
                                 "walk_forward": {"grid": {"fast": [5, 10]}, "in_sample_bars": 200, "out_of_sample_bars": 100}})  # fmt: skip
    again = run_backtest(parse_run_config(json.loads(json.dumps(doc))), root=root)
    assert again.status == "existing" and again.run_dir == run_dir
    assert [e["step"] for e in again.events] == ["startup", "startup", "dataload", "done"]  # no backtest step
    assert (run_dir / "equity.parquet").stat().st_mtime_ns == stamp


def test_force_recomputes_byte_identical_artifacts_at_any_parallelism(root):
    run_dir = only_run(root)
    doc = config_doc(validation={"permutation": {"trials": 19}, "bootstrap": {"samples": 50}, "monte_carlo": {"samples": 50},
                                 "walk_forward": {"grid": {"fast": [5, 10]}, "in_sample_bars": 200, "out_of_sample_bars": 100}})  # fmt: skip
    forced = run_backtest(parse_run_config(doc), root=root, force=True, parallelism=4)
    assert forced.status == "recomputed" and forced.identical and forced.differing == []
    assert "backtest" in [e["step"] for e in forced.events]
    assert verify_artifacts(root).ok


def test_the_manifest_lists_every_artifact_and_what_pre_paper_needs(root):
    manifest = load_manifest(only_run(root))
    assert [f["name"] for f in manifest["files"]] == list(HASHED)
    assert manifest["chain_prev"] is None
    assert manifest["strategy"] == {"name": "dual_sma", "params": {"fast": 10, "slow": 30, "allow_short": True},
                                    "timeframe": "1m", "warmup_bars": 31}  # fmt: skip
    assert manifest["data"]["symbols"] == ["AMZN", "BTCUSDT"]
    assert {i["file"] for i in manifest["data"]["inputs"]} >= {"trades.csv"}
    # the pre-paper runner builds its strategy node from the manifest alone
    node = StrategyNode(StrategyNodeParams.model_validate(strategy_node_params(manifest)), OperatorContext("pre_paper"))
    assert node.metrics()["strategy"] == "dual_sma" and node._warmup == 31
    text = (only_run(root) / MANIFEST).read_text() + "".join((only_run(root) / n).read_text() for n in ("config.json", "metrics.json", "validation.json"))
    assert not re.search(r"20(2[5-9]|3\d)-\d\d-\d\d", text)  # no wall-clock date of today in any hashed JSON


def test_validation_results_are_present(root):
    validation = json.loads((only_run(root) / "validation.json").read_text())
    assert set(validation) == {"permutation", "bootstrap", "monte_carlo", "walk_forward"}
    assert 0 < validation["permutation"]["p_value"] <= 1
    assert validation["walk_forward"]["out_of_sample"]["bars"] == 300


def test_the_report_is_self_contained(root):
    page = (only_run(root) / "report.html").read_text()
    assert page.count("<svg") == 4  # equity, drawdown, AMZN, BTCUSDT
    assert not re.search(r"(src|href)=|https?://(?!www\.w3\.org/2000/svg)", page)
    trades = pq.read_table(only_run(root) / "trades.parquet")
    assert f"Trades ({trades.num_rows})" in page


@pytest.fixture()
def chain(tmp_path):
    """Three runs (seeds 1, 2, 3) in a fresh artifacts directory."""
    for seed in (1, 2, 3):
        run_backtest(config(["BTCUSDT"], seed=seed), root=tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", HASHED)
def test_verify_detects_a_one_byte_change_in_any_artifact(chain, name):
    assert verify_artifacts(chain).ok
    middle = read_chain(chain)[1].run_hash
    path = chain / middle / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_artifacts(chain)
    assert report.first_broken == middle
    assert f"run {middle}: {name} changed" in report.problems[0]


def test_verify_detects_an_edited_manifest_and_a_broken_link(chain):
    entries = read_chain(chain)
    last = chain / entries[2].run_hash / MANIFEST
    manifest = json.loads(last.read_text())
    manifest["chain_prev"] = entries[0].manifest_hash
    last.write_text(json.dumps(manifest))
    report = verify_artifacts(chain)
    assert report.first_broken == entries[2].run_hash
    assert any("does not match its manifest_hash" in p for p in report.problems)


def test_retention_keeps_the_newest_runs_and_the_chain_still_verifies(chain):
    run_backtest(config(["BTCUSDT"], seed=4), root=chain, keep=2)
    entries = read_chain(chain)
    assert len(entries) == 4
    kept = [e.run_hash for e in entries if (chain / e.run_hash).is_dir()]
    assert kept == [entries[2].run_hash, entries[3].run_hash]
    report = verify_artifacts(chain)
    assert report.ok and report.runs == 2 and report.pruned == 2
    assert (chain / CHAIN).read_text().count("\n") == 4


def test_a_sweep_writes_the_artifacts_a_single_run_would(tmp_path):
    base = config_doc(["AMZN", "BTCUSDT"])
    result = sweep(base, parse_grid(["strategy.params.fast=5,10", "strategy.params.slow=10,30"]), root=tmp_path / "sweep", base_dir=tmp_path)
    assert len(result.plan.combos) == 3 and len(result.plan.skipped) == 1  # fast 10, slow 10 is rejected
    summary = pq.read_table(result.summary_path)
    assert summary.num_rows == 3 and summary.column("status").to_pylist() == ["computed"] * 3
    assert verify_artifacts(tmp_path / "sweep").ok
    single = run_backtest(config(["AMZN", "BTCUSDT"], strategy={"name": "dual_sma", "params": {"fast": 10, "slow": 30}}), root=tmp_path / "one")
    swept = tmp_path / "sweep" / single.run_hash
    assert swept.is_dir()
    assert artifacts_equal(swept, single.run_dir, HASHED) == []
    again = sweep(base, parse_grid(["strategy.params.fast=5,10", "strategy.params.slow=10,30"]), root=tmp_path / "sweep", base_dir=tmp_path)
    assert again.summary.column("status").to_pylist() == ["existing"] * 3


def test_stored_bars_of_the_main_job_equal_its_replayed_ticks(tmp_path):
    url, _ = run_main_job(tmp_path, "local")
    from_store = run_backtest(config(data={"source": "store", "url": url}), root=tmp_path / "a")
    from_ticks = run_backtest(config(), root=tmp_path / "b")
    a = pq.read_table(from_store.run_dir / "decisions.parquet")
    b = pq.read_table(from_ticks.run_dir / "decisions.parquet")
    assert a.num_rows == 387 + 126
    # OHLC, times and decisions exactly; volume is a float sum whose last bits depend on how the
    # bar engine's input was batched (actors/bars.py), and the main job batches ticks with quotes
    left, right = a.to_pandas(), b.to_pandas()
    pd.testing.assert_frame_equal(left.drop(columns="volume"), right.drop(columns="volume"), check_exact=True)
    pd.testing.assert_series_equal(left.volume, right.volume, rtol=1e-12)
    assert artifacts_equal(from_store.run_dir, from_ticks.run_dir, ("trades.parquet", "fills.parquet", "equity.parquet", "metrics.json")) == []
    amzn = a.filter(pc.equal(a.column("symbol"), "AMZN"))
    assert amzn.num_rows == 387
