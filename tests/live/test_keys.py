"""API keys: from the environment or keys.env, a clear error naming a missing variable before
any connection, and never a key in any output (stdout, stderr, summary, quarantine, repr)."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap

import pytest

from actors.live.alpaca import AlpacaSource
from actors.live.finnhub import FinnhubSource
from actors.live.keys import MissingKeyError, Secret, read_keys_file, redact
from graph.spec import GraphError, load_graph
from tests.live.conftest import context, drain, frames
from tests.live.graphs import derived_graph, run_cli
from tests.live.server import Expect, Feed, Hold, Play, Reject

FAKE_KEY = "fk-Zq9xL2-never-print-me"


def _finnhub_node(url: str, **extra) -> dict:
    return {"kind": "finnhub", "params": {"url": url, "symbols": ["TSLA", "AAPL", "BINANCE:BTCUSDT"], **extra}}


def _env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def test_missing_finnhub_key_is_reported_at_load_before_any_connection(server, tmp_path, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    server.route("/finnhub", [Expect(1), Hold()])
    graph = derived_graph(tmp_path / "g.yaml", source=_finnhub_node(server.url("/finnhub")), outputs=tmp_path)
    with pytest.raises(GraphError, match="nodes\\[0\\].params: finnhub needs the API key variable FINNHUB_API_KEY, which is not set in the environment"):
        load_graph(graph)
    assert server.connections("/finnhub") == []


def test_missing_alpaca_keys_name_both_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    graph = derived_graph(tmp_path / "g.yaml", source={"kind": "alpaca", "params": {"symbols": ["AAPL"], "feed": "sip"}})
    with pytest.raises(GraphError) as info:
        load_graph(graph)
    assert "APCA_API_KEY_ID" in str(info.value) and "APCA_API_SECRET_KEY" in str(info.value)


def test_cli_missing_key_exits_2_without_connecting(server, tmp_path):
    server.route("/finnhub", [Expect(1), Hold()])
    graph = derived_graph(tmp_path / "g.yaml", source=_finnhub_node(server.url("/finnhub")), outputs=tmp_path)
    proc = run_cli("--graph", str(graph), "--backend", "local", "--no-progress", "--duration", "1", env=_env_without("FINNHUB_API_KEY"))
    assert proc.returncode == 2
    assert "FINNHUB_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert server.connections("/finnhub") == []


def test_key_is_checked_again_at_operator_start(monkeypatch):
    monkeypatch.setenv("FINNHUB_API_KEY", FAKE_KEY)
    params = FinnhubSource.Params.model_validate({"url": "ws://127.0.0.1:9/x", "symbols": ["AAPL"]})
    monkeypatch.delenv("FINNHUB_API_KEY")  # e.g. a Ray worker without the variable
    with pytest.raises(MissingKeyError, match="FINNHUB_API_KEY"):
        FinnhubSource(params, context())


def test_keys_file_is_read_when_the_environment_lacks_the_key(server, tmp_path, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    keys = tmp_path / "keys.env"
    keys.write_text(f"# keys\nexport OTHER=1\nFINNHUB_API_KEY = '{FAKE_KEY}'\n")
    lines = frames("finnhub_trades")
    feed = Feed(lines)
    server.route("/finnhub", [Expect(3), Play(feed), Hold()])
    params = FinnhubSource.Params.model_validate(
        {"url": server.url("/finnhub"), "symbols": ["TSLA", "AAPL", "BINANCE:BTCUSDT"], "keys_file": "keys.env", "jitter_seed": 1},
        context={"base_dir": tmp_path},
    )
    source = FinnhubSource(params, context())
    out = drain(source, lambda d: sum(b.num_rows for b in d.ticks) >= 10)
    assert sum(b.num_rows for b in out.ticks) == 10
    assert server.connections("/finnhub")[0].query == {"token": FAKE_KEY}
    assert FAKE_KEY not in repr(source) and FAKE_KEY not in repr(params) and FAKE_KEY not in json.dumps(source.metrics())


def test_read_keys_file_dotenv_style(tmp_path):
    path = tmp_path / "keys.env"
    path.write_text(textwrap.dedent("""\
        # comment
        FINNHUB_API_KEY=abc123   # inline comment
        export APCA_API_KEY_ID="id with spaces"
        APCA_API_SECRET_KEY='s#cret'
        not an assignment
        EMPTY=
    """))
    assert read_keys_file(path) == {
        "FINNHUB_API_KEY": "abc123",
        "APCA_API_KEY_ID": "id with spaces",
        "APCA_API_SECRET_KEY": "s#cret",
        "EMPTY": "",
    }


def test_secret_never_shows_itself():
    secret = Secret("p@ss word/+")
    assert repr(secret) == "Secret('***')" and str(secret) == "***" and f"{secret}" == "***"
    assert redact("token=p%40ss%20word%2F%2B and p@ss word/+ and p%40ss+word%2F%2B", [secret]) == "token=*** and *** and ***"


def test_alpaca_source_repr_and_metrics_hide_keys(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "AKID-" + FAKE_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", "SECRET-" + FAKE_KEY)
    source = AlpacaSource(AlpacaSource.Params.model_validate({"symbols": ["AAPL"]}), context())
    assert FAKE_KEY not in repr(source) and FAKE_KEY not in repr(source.params) and FAKE_KEY not in json.dumps(source.metrics())
    assert source.params.url == "wss://stream.data.alpaca.markets/v2/iex"


def test_fake_key_appears_nowhere_in_cli_output_summary_or_quarantine(server, tmp_path):
    lines = frames("finnhub_trades")
    broken = json.loads(lines[2])
    broken["data"][0]["v"] = "not-a-size"  # one malformed item -> a quarantine row
    feed = Feed([lines[0], lines[1], json.dumps(broken), lines[3]])
    server.route("/finnhub", [Expect(3), Play(feed), Hold()])
    graph = derived_graph(tmp_path / "g.yaml", source=_finnhub_node(server.url("/finnhub")), symbols=["TSLA", "AAPL", "BINANCE:BTCUSDT"], outputs=tmp_path)
    summary = tmp_path / "summary.json"
    env = {**_env_without("FINNHUB_API_KEY"), "FINNHUB_API_KEY": FAKE_KEY}
    proc = run_cli("--graph", str(graph), "--backend", "local", "--no-progress", "--verbose", "--duration", "3", "--summary-json", str(summary), env=env)
    assert proc.returncode == 0, proc.stderr
    assert server.connections("/finnhub")[0].query == {"token": FAKE_KEY}  # the key was used...
    quarantine = sqlite3.connect(tmp_path / "db.sqlite").execute("select * from quarantine").fetchall()
    reasons = sqlite3.connect(tmp_path / "db.sqlite").execute("select reason from quarantine").fetchall()
    assert reasons == [("bad_number",)]
    ticks = sqlite3.connect(tmp_path / "db.sqlite").execute("select * from tick_data").fetchall()
    assert len(ticks) == 9
    texts = {"stdout": proc.stdout, "stderr": proc.stderr, "summary": summary.read_text(), "quarantine": repr(quarantine), "ticks": repr(ticks)}
    for name, text in texts.items():  # ...and shown nowhere
        assert FAKE_KEY not in text, name


def test_refused_key_fails_with_the_variable_name_and_without_the_key(server, tmp_path):
    server.route("/finnhub", [Reject(401)])
    graph = derived_graph(tmp_path / "g.yaml", source=_finnhub_node(server.url("/finnhub")), outputs=tmp_path)
    env = {**_env_without("FINNHUB_API_KEY"), "FINNHUB_API_KEY": FAKE_KEY}
    proc = run_cli("--graph", str(graph), "--backend", "local", "--no-progress", "--verbose", "--duration", "10", env=env)
    assert proc.returncode == 1
    assert "refused the websocket handshake with HTTP 401: check the API key in FINNHUB_API_KEY" in proc.stderr
    assert FAKE_KEY not in proc.stderr + proc.stdout
    assert len(server.connections("/finnhub")) == 1


def _echoing_feed() -> Feed:
    """Finnhub frames with an error message that echoes the key back (as providers do)."""
    lines = frames("finnhub_trades")
    echo = json.dumps({"type": "error", "msg": f"Invalid API key {FAKE_KEY}"})
    return Feed([lines[0], echo, lines[1]])


def test_a_key_echoed_by_the_provider_is_redacted_from_the_log(server, tmp_path):
    # the provider's error text is logged by the source (stderr): redacted there, like
    # everywhere else (it used to print 'Invalid API key <key>' verbatim)
    server.route("/finnhub", [Expect(3), Play(_echoing_feed()), Hold()])
    graph = derived_graph(tmp_path / "g.yaml", source=_finnhub_node(server.url("/finnhub")), outputs=tmp_path)
    env = {**_env_without("FINNHUB_API_KEY"), "FINNHUB_API_KEY": FAKE_KEY}
    proc = run_cli("--graph", str(graph), "--backend", "local", "--no-progress", "--verbose", "--duration", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "finnhub: error message: Invalid API key ***" in proc.stderr
    assert FAKE_KEY not in proc.stderr + proc.stdout


def test_a_key_echoed_by_the_provider_is_not_in_rays_worker_logs(ray_session, server, tmp_path):
    from graph.build import build_graph

    keys = tmp_path / "keys.env"
    keys.write_text(f"FINNHUB_API_KEY={FAKE_KEY}\n")  # Ray workers do not see this test's environment
    feed = _echoing_feed()
    server.route("/finnhub", [Expect(3), Play(feed), Hold()])
    node = _finnhub_node(server.url("/finnhub"), keys_file=str(keys))
    graph = derived_graph(tmp_path / "g.yaml", source=node, outputs=tmp_path)
    run = build_graph(load_graph(graph, env=_env_without("FINNHUB_API_KEY")), backend="ray")
    run.run(should_stop=lambda: feed.done and len(server.connections("/finnhub")) == 1, duration_s=30)
    session_logs = ray_session._private.worker.global_worker.node.get_logs_dir_path()
    texts = [path.read_text(errors="replace") for path in __import__("pathlib").Path(session_logs).glob("*")
             if path.is_file()]  # fmt: skip
    assert any("Invalid API key ***" in text for text in texts)  # the line was logged, redacted
    assert not any(FAKE_KEY in text for text in texts)
