"""Configuration and operation (hostile-input cases 8-11): clear errors, bounded waits, no payloads."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import pytest

import run as cli
from graph.build import build_graph, count_actors
from graph.cluster import ACTOR_MEMORY_BYTES, memory_warning
from graph.runtime import NodeFailure
from graph.spec import GraphError, load_graph
from tests.hostile.cuts import run_graph, table, tardis_cut, tardis_spec, write_graph

# -- 8. graph files ------------------------------------------------------------------------------


def test_a_graph_file_that_is_not_utf8_is_exit_2_with_its_line(tmp_path, capsys):
    graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
    text = graph.read_bytes().replace(b"name: hostile", b"name: hostile\n# caf\xe9 (latin-1)")
    graph.write_bytes(text)
    assert cli.main(["--graph", str(graph), "--backend", "local", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "graph.yaml: line 2, column 6: not UTF-8 text (byte 0xe9); save the file as UTF-8" in err
    assert "Traceback" not in err


def test_a_key_repeated_in_a_mapping_is_exit_2_naming_line_and_key(tmp_path, capsys):
    graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
    lines = graph.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "kind: normalizer")
    lines.insert(at + 1, lines[at].replace("normalizer", "bars"))  # kind: twice; the last used to win
    graph.write_text("\n".join(lines) + "\n")
    with pytest.raises(GraphError, match=rf"line {at + 2}, column \d+: invalid YAML: duplicate key 'kind' \(first at line {at + 1}\)"):
        load_graph(str(graph), env={})
    assert cli.main(["--graph", str(graph), "--backend", "local", "--no-progress"]) == 2
    assert "duplicate key 'kind'" in capsys.readouterr().err


# -- 9. a database server that never answers -------------------------------------------------------


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word (a hung PostgreSQL)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


@pytest.mark.parametrize("how", ["param", "url"])
def test_a_silent_database_fails_within_its_connect_timeout_naming_host_and_seconds(tmp_path, how, caplog):
    server = SilentServer()
    try:
        url = f"postgresql://tick:s3cret-pw@127.0.0.1:{server.port}/ticks"
        overrides = [f"store.url={url}?connect_timeout=2" if how == "url" else f"store.url={url}"]
        if how == "param":
            overrides.append("store.connect_timeout_s=2")
        graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
        overrides.append(f"source.job_database_url=sqlite:///{tmp_path / 'jobs.db'}")
        started = time.monotonic()
        with pytest.raises(NodeFailure) as failure:
            build_graph(load_graph(str(graph), overrides, env={}), backend="local")
        waited = time.monotonic() - started
    finally:
        server.close()
    assert 1.5 < waited < 10
    message = str(failure.value)
    assert f"the database at 127.0.0.1:{server.port}" in message and "did not answer within 2 s" in message
    assert "s3cret-pw" not in message and "***" in message
    assert any(f"waiting for the database at 127.0.0.1:{server.port} to answer (gives up after 2 s)" in r.getMessage()
               for r in caplog.records)  # fmt: skip


# -- 10. a failed SQL write ----------------------------------------------------------------------------


def test_a_failed_write_names_table_and_rows_not_the_statement(tmp_path):
    # a tick_data table of another layout (an extra NOT NULL column): every insert fails
    db = sqlite3.connect(tmp_path / "store.db")
    db.execute(
        "create table tick_data (symbol text, ts integer, price real, size real, side text, bid real, ask real, "
        "bid_size real, ask_size real, provider text, seq integer, origin text, advances_watermark boolean, "
        "venue text not null, "
        "primary key (provider, symbol, ts, seq))"
    )
    db.commit()
    db.close()
    graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
    with pytest.raises(NodeFailure) as failure:
        run_graph(graph)
    message = str(failure.value)
    assert message.startswith("node 'store' (shard 0) failed: StoreError: sql_store 'store': upserting ")
    assert "tick_data 500" in message and "(writing tick_data)" in message
    assert "IntegrityError: NOT NULL constraint failed: tick_data.venue" in message
    assert len(message) < 600 and "INSERT" not in message and "9682" not in message
    assert table(tmp_path, "job_runs")["status"].tolist() == ["failed"]


# -- 11. memory -----------------------------------------------------------------------------------------


def test_a_graph_whose_actors_do_not_fit_gets_a_warning(tmp_path):
    graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
    loaded = load_graph(str(graph), ["bars.parallelism=32", "bars.key=symbol"], env={})
    # source+normalizer chain in one actor, 32 bar shards, the store fed by several nodes
    assert count_actors(loaded) == 1 + 32 + 1
    warning = memory_warning(count_actors(loaded), available_bytes=4 * 1024**3)
    assert warning == (
        f"warning: this graph starts 34 Ray actors, about {34 * ACTOR_MEMORY_BYTES / 1024**3:.1f} GiB at ~210 MB "
        "each, and 4.0 GiB of memory is available: lower the nodes' parallelism (a shard per symbol is rarely "
        "needed; shards share symbols)"
    )
    assert memory_warning(3, available_bytes=4 * 1024**3) is None
