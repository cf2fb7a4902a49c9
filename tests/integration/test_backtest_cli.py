"""``python run.py backtest run|sweep|verify``: exit codes, field-path errors before any work,
relative data paths against the config file, verify naming the first broken link."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.backtests import config_doc
from tests.conftest import ROOT


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "backtest", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def write(path, doc) -> str:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def test_a_bad_config_exits_2_naming_every_field(tmp_path):
    doc = config_doc()
    doc["strategy"] = {"name": "dual_sma", "params": {"fast": 50, "slow": 20}}
    proc = cli("run", write(tmp_path / "bad.json", doc), "--backend", "local", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.json: strategy.params.slow: slow (20) must be greater than fast (50)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "artifacts").exists()
    doc = {**config_doc(["AMZN", "TSLA"])}
    proc = cli("run", write(tmp_path / "sym.json", doc), "--backend", "local", cwd=tmp_path)
    assert proc.returncode == 2 and "symbols[1]: unknown symbol 'TSLA'" in proc.stderr
    proc = cli("sweep", write(tmp_path / "ok.json", config_doc()), "--grid", "symbols=[AMZN]", "--backend", "local", cwd=tmp_path)
    assert proc.returncode == 2 and "--grid symbols: a sweep runs every combination on the same data" in proc.stderr


def test_run_then_verify_then_a_corrupt_artifact(tmp_path):
    doc = config_doc(["BTCUSDT"])
    doc["data"]["files"] = [{"format": "tardis_trades", "path": "trades.csv"}]  # relative to the config file
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "trades.csv").write_bytes((ROOT / "fixtures/tardis_binance_futures_btcusdt/trades.csv").read_bytes())
    config = write(tmp_path / "cfg" / "run.json", doc)
    proc = cli("run", config, "--backend", "local", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("backtest computed: ")
    run_hash = proc.stdout.split()[2]
    again = cli("run", config, "--backend", "local", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"backtest existing: {run_hash}")
    assert cli("verify", cwd=tmp_path).returncode == 0
    metrics = tmp_path / "artifacts" / "backtests" / run_hash / "metrics.json"
    metrics.write_text(metrics.read_text().replace("1", "2", 1))
    proc = cli("verify", cwd=tmp_path)
    assert proc.returncode == 1
    assert f"first broken link at run {run_hash}" in proc.stderr and "metrics.json changed" in proc.stderr
