"""The manifest is the single source of truth: a bad manifest (missing, edited after signing, wrong
schema, artifacts or chain that do not verify) and strategy parameters in the YAML fail before
anything starts -- before any connection -- naming the file and the field."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from backtest.graphs import graph_document
from backtest.manifest import CHAIN, manifest_hash
from graph.spec import GraphError, load_graph
from pre_paper.manifest import ManifestError, load_promoted
from tests.conftest import CONFIG
from tests.live.graphs import run_cli
from tests.live.server import FrameServer, Hold
from tests.prepaper import copy_backtests, manifest_1m


@pytest.fixture
def root(tmp_path) -> Path:
    return copy_backtests(tmp_path / "backtests")


def one_manifest(root: Path) -> Path:
    return next(p for p in sorted(root.glob("*/run_manifest.json")) if json.loads(p.read_text())["strategy"]["timeframe"] == "1m")


def rewrite(path: Path, edit, sign: bool = False) -> dict:
    doc = json.loads(path.read_text())
    edit(doc)
    if sign:
        doc["manifest_hash"] = manifest_hash(doc)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def test_the_runner_takes_everything_from_the_manifest():
    run = load_promoted(manifest_1m())
    assert run.symbols == ("AMZN", "BTCUSDT") and run.timeframe == "1m" and run.warmup_bars == 31
    backtest_node = next(n for n in graph_document(run.config, Path("/tmp/x"))["nodes"] if n["id"] == "strategy")
    assert {k: run.strategy_params[k] for k in backtest_node["params"]} == backtest_node["params"]  # the backtest graph's own node
    assert (run.execution_params["risk"]["model"], run.execution_params["risk"]["fraction"]) == ("fixed_fraction", 0.95)  # the run config's risk
    assert run.execution_params["symbols"] == ["AMZN", "BTCUSDT"] and run.execution_params["initial_cash"] == 100_000.0


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(ManifestError, match=r"nowhere/run_manifest\.json: manifest not found"):
        load_promoted(tmp_path / "nowhere" / "run_manifest.json")


def test_a_manifest_edited_after_signing_is_refused(root):
    path = one_manifest(root)
    rewrite(path, lambda d: d["strategy"]["params"].update(fast=12))
    with pytest.raises(ManifestError, match=r"run_manifest\.json: manifest_hash: .* does not match the manifest's content \(edited after signing"):
        load_promoted(path)


def test_a_re_signed_manifest_is_not_the_one_in_the_chain(root):
    path = one_manifest(root)
    rewrite(path, lambda d: d["strategy"]["params"].update(fast=12), sign=True)
    with pytest.raises(ManifestError, match=rf"files/chain: run {path.parent.name}: manifest_hash .* is not the .* recorded in {CHAIN}"):
        load_promoted(path)


def test_a_changed_artifact_is_refused(root):
    path = one_manifest(root)
    with open(path.parent / "decisions.parquet", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ManifestError, match=r"files/chain: run .*: decisions\.parquet changed \(size or sha256"):
        load_promoted(path)


def test_a_manifest_of_the_wrong_schema_names_the_field(root):
    path = one_manifest(root)
    rewrite(path, lambda d: (d["strategy"].pop("warmup_bars"), d["data"].update(timeframe="7q")), sign=True)
    with pytest.raises(ManifestError) as info:
        load_promoted(path)
    assert f"{path}: data.timeframe: '7q' is not a timeframe" in str(info.value)
    assert f"{path}: strategy.warmup_bars: Field required" in str(info.value)


def test_invalid_json_names_line_and_column(root):
    path = one_manifest(root)
    path.write_text('{"run_hash": "abc",\n  "data": }\n')
    with pytest.raises(ManifestError, match=r"run_manifest\.json: line 2, column 11: invalid JSON"):
        load_promoted(path)


def graph_file(tmp_path: Path, manifest: Path, **pre_paper_params) -> Path:
    """config/pre_paper.yaml with its outputs in tmp_path and extra pre_paper params."""
    doc = yaml.safe_load((CONFIG / "pre_paper.yaml").read_text())
    nodes = {n["id"]: n for n in doc["nodes"]}
    nodes["pre_paper"]["params"].update({"manifest": str(manifest), "cache": str(tmp_path / "cache.db"), "providers": [], **pre_paper_params})
    nodes["audit"]["params"]["path"] = str(tmp_path / "audit")
    nodes["store"]["params"]["url"] = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = tmp_path / "pre_paper.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key-id")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")


@pytest.mark.parametrize(
    "extra, field",
    [({"strategy": "dual_sma"}, "strategy"), ({"params": {"fast": 5, "slow": 20}}, "params"), ({"timeframe": "5m"}, "timeframe"),
     ({"risk": {"model": "fixed_fraction"}}, "risk"), ({"symbols": ["AMZN"]}, "symbols")],
)  # fmt: skip
def test_strategy_params_in_the_yaml_are_an_error_naming_file_and_field(tmp_path, keys, extra, field):
    path = graph_file(tmp_path, manifest_1m(), **extra)
    with pytest.raises(GraphError) as info:
        load_graph(path, env={})
    assert f"pre_paper.yaml: nodes[3].params.{field}: '{field}' is not allowed here: a pre_paper node takes its strategy" in str(info.value)
    assert "single source of truth" in str(info.value)


def test_a_bad_manifest_in_the_yaml_names_the_yaml_path_the_manifest_and_its_field(tmp_path, keys, root):
    path = one_manifest(root)
    rewrite(path, lambda d: d["strategy"].pop("warmup_bars"), sign=True)
    with pytest.raises(GraphError) as info:
        load_graph(graph_file(tmp_path, path), env={})
    assert f"pre_paper.yaml: nodes[3].params.manifest: {path}: strategy.warmup_bars: Field required" in str(info.value)


def test_unknown_calendar_and_missing_provider_keys_fail_at_validation(tmp_path, keys, monkeypatch):
    with pytest.raises(GraphError, match=r"nodes\[3\]\.params\.calendars: .*unknown trading calendar 'NYSEX'"):
        load_graph(graph_file(tmp_path, manifest_1m(), calendars={"default": "NYSEX"}), env={})
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    with pytest.raises(GraphError, match=r"nodes\[3\]\.params: .*finnhub needs the API key variable FINNHUB_API_KEY"):
        load_graph(graph_file(tmp_path, manifest_1m(), providers=[{"kind": "finnhub"}]), env={})


def test_the_command_line_fails_before_any_connection(tmp_path, root):
    """The live graph pointed at a local server: a bad manifest exits 2 naming file and field,
    and the server never saw a connection (run.py --graph, and run.py pre-paper)."""
    path = one_manifest(root)
    rewrite(path, lambda d: d["strategy"]["params"].update(slow=31))  # edited, not re-signed
    env = {**os.environ, "APCA_API_KEY_ID": "test-key-id", "APCA_API_SECRET_KEY": "test-secret"}
    with FrameServer() as server:
        server.route("/v2/iex", [Hold()])
        graph = graph_file(tmp_path, path)
        url = server.url("/v2/iex")
        done = run_cli("--graph", str(graph), "--backend", "local", "--no-progress", "--set", f"source.params.url={url}", env=env)
        assert done.returncode == 2, done.stderr
        assert f"nodes[3].params.manifest: {path}: manifest_hash:" in done.stderr and "edited after signing" in done.stderr
        done = run_cli("pre-paper", "--manifest", str(path), "--graph", str(graph), "--backend", "local", "--set", f"source.params.url={url}", env=env)
        assert done.returncode == 2 and f"{path}: manifest_hash:" in done.stderr
        assert server.connections("/v2/iex") == []
        assert "test-secret" not in done.stderr + done.stdout
