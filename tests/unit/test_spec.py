"""The YAML graph spec: validation before any actor starts, errors by YAML path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from graph.spec import GraphError, load_graph, parse_override, resolve_graph_path, yaml_path
from tests.conftest import CONFIG, LOBSTER_MESSAGES, LOBSTER_ORDERBOOK, TARDIS_TRADES


def write(tmp_path: Path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


SOURCE = f"""
  - id: source
    kind: file_replay
    params:
      files:
        - {{format: tardis_trades, path: {TARDIS_TRADES}}}
"""


def graph_with(tmp_path: Path, tail: str) -> Path:
    return write(tmp_path, "nodes:\n" + SOURCE + textwrap.indent(textwrap.dedent(tail), "  "))


def test_shipped_replay_graph_validates():
    loaded = load_graph("replay.yaml", env={})
    assert loaded.order[0] == "source"
    ids = [n.id for n in loaded.spec.nodes]
    # the ids every shipped graph shares, then signals_<name> nodes and the parity tracker
    assert ids[:3] == ["source", "normalizer", "bars"] and {"store", "parquet", "parity"} <= set(ids)
    assert sorted(i for i in ids if i.startswith("signals_")) == [
        "signals_bollinger_pctb", "signals_rsi", "signals_spread_bps", "signals_tick_rate_zscore",
        "signals_vwap_deviation_bps",
    ]  # fmt: skip
    assert loaded.spec.node("store").params["url"] == f"sqlite:///{Path.cwd() / 'tickgraph.db'}"
    # default stream of a bare input is the upstream's first output
    assert ("normalizer", "ticks") in loaded.edges["bars"]
    assert ("normalizer", "quarantine") in loaded.edges["store"]


def test_bare_name_is_looked_up_in_config():
    assert resolve_graph_path("replay") == (CONFIG / "replay.yaml").resolve()
    assert resolve_graph_path("replay.yaml") == (CONFIG / "replay.yaml").resolve()
    with pytest.raises(GraphError, match="graph file not found"):
        resolve_graph_path("no_such_graph.yaml")


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, "nodes:\n  - id: source\n    kind: [unclosed\n")
    with pytest.raises(GraphError, match=r"g\.yaml: line \d+, column \d+: invalid YAML"):
        load_graph(path)


def test_unknown_kind_names_yaml_path(tmp_path):
    path = graph_with(tmp_path, """
      - id: n
        kind: normaliser
        inputs: [source]
    """)
    with pytest.raises(GraphError, match=r"nodes\[1\]\.kind: unknown kind 'normaliser' \(known: .*normalizer"):
        load_graph(path)


def test_unknown_input_node_and_stream(tmp_path):
    path = graph_with(tmp_path, """
      - id: n
        kind: normalizer
        inputs: [sauce]
      - id: m
        kind: normalizer
        inputs: [source.trades]
    """)
    with pytest.raises(GraphError) as info:
        load_graph(path)
    text = str(info.value)
    assert "nodes[1].inputs[0]: unknown input node 'sauce'" in text
    assert "nodes[2].inputs[0]: node 'source' has no output stream 'trades' (has: ticks, quarantine)" in text


def test_cycle_is_reported(tmp_path):
    path = graph_with(tmp_path, """
      - id: a
        kind: normalizer
        inputs: [source, b]
      - id: b
        kind: normalizer
        inputs: [a]
    """)
    with pytest.raises(GraphError, match="cycle through a, b"):
        load_graph(path)


def test_bad_timeframe_names_the_list_index(tmp_path):
    path = graph_with(tmp_path, """
      - id: bars
        kind: bars
        inputs: [source]
        params: {timeframes: [1m, 7q]}
    """)
    with pytest.raises(GraphError, match=r"nodes\[1\]\.params\.timeframes\[1\]: '7q' is not a timeframe \(1s, 1m, 5m, 15m, 1h, 1d\)"):
        load_graph(path)


def test_missing_file_is_caught_before_anything_runs(tmp_path):
    path = write(tmp_path, """
    nodes:
      - id: source
        kind: file_replay
        params:
          files:
            - {format: tardis_trades, path: does/not/exist.csv}
    """)
    with pytest.raises(GraphError, match=r"nodes\[0\]\.params\.files\[0\].*path: .*file not found: .*does/not/exist\.csv"):
        load_graph(path)


def test_relative_paths_resolve_against_the_graph_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trades.csv").write_bytes(TARDIS_TRADES.read_bytes())
    path = write(tmp_path, """
    nodes:
      - id: source
        kind: file_replay
        params:
          files:
            - {format: tardis_trades, path: data/trades.csv}
    """)
    loaded = load_graph(path)
    assert loaded.spec.node("source").params["files"][0]["path"] == str((data / "trades.csv").resolve())


def test_env_interpolation_with_default_and_missing(tmp_path):
    path = graph_with(tmp_path, """
      - id: store
        kind: sql_store
        inputs: [source.quarantine]
        params: {url: "${DB_URL:-sqlite:///default.db}"}
    """)
    assert load_graph(path, env={}).spec.node("store").params["url"].endswith("/default.db")
    assert load_graph(path, env={"DB_URL": "sqlite:////tmp/x.db"}).spec.node("store").params["url"] == "sqlite:////tmp/x.db"
    required = graph_with(tmp_path, """
      - id: store
        kind: sql_store
        inputs: [source.quarantine]
        params: {url: "${DB_URL}"}
    """)
    with pytest.raises(GraphError, match=r"nodes\[1\]\.params\.url: environment variable DB_URL is not set"):
        load_graph(required, env={})


def test_env_values_are_not_parsed_as_yaml(tmp_path):
    path = graph_with(tmp_path, """
      - id: store
        kind: sql_store
        inputs: [source.quarantine]
        params: {url: "${DB_URL}"}
    """)
    injected = "sqlite:////a.db\n  evil: [1"
    assert load_graph(path, env={"DB_URL": injected}).spec.node("store").params["url"] == injected


def test_overrides_set_node_fields_and_params(tmp_path):
    assert parse_override("bars.parallelism=4") == ("bars", ["parallelism"], 4)
    assert parse_override("source.params.url=ws://127.0.0.1:9/x") == ("source", ["params", "url"], "ws://127.0.0.1:9/x")
    assert parse_override("bars.timeframes=[1m, 5m]") == ("bars", ["params", "timeframes"], ["1m", "5m"])
    loaded = load_graph("replay.yaml", ["bars.parallelism=4", "store.url=sqlite:////tmp/other.db"], env={})
    assert loaded.spec.node("bars").parallelism == 4
    assert loaded.spec.node("store").params["url"] == "sqlite:////tmp/other.db"


def test_bad_overrides_are_user_errors():
    with pytest.raises(GraphError, match="no node with id 'bar'"):
        load_graph("replay.yaml", ["bar.parallelism=2"], env={})
    with pytest.raises(GraphError, match="expected NODE.KEY=VALUE"):
        load_graph("replay.yaml", ["parallelism=2"], env={})
    with pytest.raises(GraphError, match=r"nodes\[2\]\.parallelism: Input should be greater than or equal to 1"):
        load_graph("replay.yaml", ["bars.parallelism=0"], env={})


def test_keyed_node_needs_a_key_column_that_exists(tmp_path):
    path = graph_with(tmp_path, """
      - id: bars
        kind: bars
        inputs: [source]
        parallelism: 2
        key: ticker
    """)
    with pytest.raises(GraphError, match=r"nodes\[1\]\.key: 'ticker' is not a column of source\.ticks"):
        load_graph(path)
    unkeyed = graph_with(tmp_path, """
      - id: bars
        kind: bars
        inputs: [source]
        parallelism: 2
    """)
    with pytest.raises(GraphError, match=r"nodes\[1\]\.key: a bars node with parallelism > 1 needs a key"):
        load_graph(unkeyed)


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, """
    nodes:
      - id: source
        kind: file_replay
        params: {files: [{format: lobster, message_file: nope.csv, orderbook_file: nope2.csv, symbol: AMZN, date: "2012-06-21"}]}
      - id: source
        kind: bogus
    """)
    with pytest.raises(GraphError) as info:
        load_graph(path)
    assert len(info.value.problems) >= 4  # two missing files, a duplicate id, an unknown kind


def test_yaml_path_rendering():
    assert yaml_path(("nodes", 2, "params", "timeframes", 0)) == "nodes[2].params.timeframes[0]"
    assert yaml_path(()) == "<root>"


def test_lobster_params_in_the_shipped_graph_point_at_the_fixtures():
    loaded = load_graph("replay.yaml", env={})
    spec = loaded.spec.node("source").params["files"][0]
    assert Path(spec["message_file"]) == LOBSTER_MESSAGES.resolve()
    assert Path(spec["orderbook_file"]) == LOBSTER_ORDERBOOK.resolve()
