"""``python run.py``: exit codes, clear user errors without tracebacks, the summary, bad input end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from db.read import read_bars, read_table
from tests.conftest import ROOT, TARDIS_QUOTES, TARDIS_TRADES
from tests.reference import assert_bars_match, reference_bars, tardis_trades


def cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_yaml_error_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - id: source\n    kind: a: b\n    params: {}\n")
    proc = cli("--graph", str(bad), "--backend", "local")
    assert proc.returncode == 2
    assert "bad.yaml: line 3, column 12: invalid YAML: mapping values are not allowed here" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unknown_kind_and_missing_file_are_reported_together(tmp_path):
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent("""
        nodes:
          - id: source
            kind: file_replay
            params: {files: [{format: tardis_trades, path: missing.csv}]}
          - id: bars
            kind: barz
            inputs: [source]
    """))
    proc = cli("--graph", str(graph), "--backend", "local")
    assert proc.returncode == 2
    assert "nodes[0].params.files[0]" in proc.stderr and "file not found" in proc.stderr
    assert "nodes[1].kind: unknown kind 'barz'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_graph_file_names_where_it_looked():
    proc = cli("--graph", "nope.yaml", "--backend", "local")
    assert proc.returncode == 2 and "graph file not found" in proc.stderr and "config" in proc.stderr


def _main_job_locally(tmp_path, parquet):
    """``run.py --graph replay.yaml`` in-process, its store under ``tmp_path``, Parquet to ``parquet``."""
    return cli(
        "--graph", "replay.yaml", "--backend", "local", "--no-progress",
        "--set", f"store.url=sqlite:///{tmp_path / 'a.db'}", "--set", f"parquet.path={parquet}",
        "--set", f"source.job_database_url=sqlite:///{tmp_path / 'a.db'}", "--set", f"catalog.path={tmp_path / 'catalog'}",
    )  # fmt: skip


def test_failing_node_exits_1_and_names_the_node(tmp_path):
    # the Parquet directory is fine when the graph is validated; its bars/ folder is a file,
    # which only writing finds out
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "bars").write_text("x")
    proc = _main_job_locally(tmp_path, parquet=tmp_path / "pq")
    assert proc.returncode == 1
    assert "node 'parquet' (shard 0) failed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unusable_output_path_exits_2_before_anything_starts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _main_job_locally(tmp_path, parquet=blocker)
    assert proc.returncode == 2
    assert f"nodes[10].params.path: {blocker} exists and is not a directory" in proc.stderr
    assert not (tmp_path / "a.db").exists() and "Traceback" not in proc.stderr


def test_main_job_on_ray_writes_the_summary(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = cli(
        "--graph", "replay.yaml", "--num-cpus", "2", "--no-dashboard", "--no-progress",
        "--set", f"store.url=sqlite:///{tmp_path / 'bars.db'}", "--set", f"parquet.path={tmp_path / 'pq'}",
        "--set", f"source.job_database_url=sqlite:///{tmp_path / 'bars.db'}", "--set", f"catalog.path={tmp_path / 'catalog'}",
        "--summary-json", str(summary_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["ticks_read"] == 67_514 == summary["ticks_accepted"] + summary["quarantined_total"]
    assert summary["bars_confirmed"]["AMZN"]["1d"] == 1
    assert "ticks read" in proc.stdout and "bars confirmed" in proc.stdout
    assert summary["ticks_per_s"] > 0


def test_bad_ticks_are_quarantined_and_good_ones_all_kept(tmp_path):
    """Real Tardis trades + quotes as canonical CSV, with corrupted rows injected.

    Injected: a malformed row (price 'abc'), a NaN price, a negative size, a crossed
    quote. Each must land in `quarantine` with its reason; the bars must equal the
    bars of the clean real trades (nothing accepted is lost).
    """
    trades = pd.read_csv(TARDIS_TRADES)
    canonical = pd.DataFrame({
        "symbol": trades["symbol"], "ts": trades["timestamp"] * 1000, "price": trades["price"].astype(str),
        "size": trades["amount"], "side": trades["side"], "provider": "tardis", "seq": trades["id"],
    })  # fmt: skip
    lines = canonical.to_csv(index=False).splitlines()
    header, rows = lines[0], lines[1:]
    first = canonical.iloc[100]
    bad = [
        f"BTCUSDT,{first.ts},abc,1.0,buy,tardis,1",  # malformed: price not a number
        f"BTCUSDT,{first.ts},nan,1.0,buy,tardis,2",  # NaN price
        f"BTCUSDT,{first.ts},9682.0,-3.5,buy,tardis,3",  # negative size
    ]
    path = tmp_path / "ticks.csv"
    path.write_text("\n".join([header, *rows[:101], *bad, *rows[101:]]) + "\n")
    quotes = pd.read_csv(TARDIS_QUOTES).head(50)
    quote_rows = pd.DataFrame({
        "symbol": quotes["symbol"], "ts": quotes["timestamp"] * 1000, "bid": quotes["bid_price"],
        "ask": quotes["ask_price"], "provider": "tardis-quotes", "seq": range(len(quotes)),
    })  # fmt: skip
    quote_rows.loc[10, ["bid", "ask"]] = [9700.0, 9690.0]  # crossed
    quote_path = tmp_path / "quotes.csv"
    quote_rows.to_csv(quote_path, index=False)
    graph = tmp_path / "bad_input.yaml"
    graph.write_text(textwrap.dedent(f"""
        name: bad_input
        nodes:
          - id: source
            kind: file_replay
            params:
              files:
                - {{format: canonical, path: {path}}}
                - {{format: canonical, path: {quote_path}}}
          - id: normalizer
            kind: normalizer
            inputs: [source]
            params: {{symbols: [BTCUSDT]}}
          - id: bars
            kind: bars
            inputs: [normalizer]
            params: {{timeframes: [1m, 1h]}}
          - id: store
            kind: sql_store
            inputs: [bars, source.quarantine, normalizer.quarantine, bars.quarantine]
            params: {{url: "sqlite:///{tmp_path / 'bad.db'}"}}
    """))
    summary_path = tmp_path / "summary.json"
    proc = cli("--graph", str(graph), "--backend", "local", "--no-progress", "--summary-json", str(summary_path))
    assert proc.returncode == 0, proc.stderr
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    quarantine = read_table(url, "quarantine").to_pandas()
    reasons = sorted(quarantine["reason"])
    assert reasons == sorted(["malformed_row", "bad_price", "bad_size", "crossed_quote"])
    malformed = quarantine[quarantine["reason"] == "malformed_row"].iloc[0]
    assert malformed["source"].endswith("ticks.csv") and malformed["row"] == 101 and "price" in malformed["detail"]
    summary = json.loads(summary_path.read_text())
    assert summary["ticks_read"] == 9_999 + 3 + 50
    assert summary["ticks_read"] == summary["ticks_accepted"] + summary["quarantined_total"]
    clean = tardis_trades()
    for timeframe in ("1m", "1h"):
        assert_bars_match(read_bars(url, symbol="BTCUSDT", timeframe=timeframe), reference_bars(clean, timeframe), timeframe)


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_the_options(flag):
    proc = cli(flag)
    assert proc.returncode == 0
    for option in ("--graph", "--set", "--address", "--summary-json"):
        assert option in proc.stdout
