"""The runtime without Ray: routing, keyed partitioning, watermark alignment, end-of-stream, failures.

Timeline of the two-input watermark test (channels a#0 and b#0 into one host):

    a#0:  wm 10 ------------ wm 30 ----------- eof
    b#0:  -------- wm 20 ----------- wm 25 ---------- wm 40, eof
    host: (none)   10        20      25        (25)   40, on_eof
"""

from __future__ import annotations

import zlib

import pyarrow as pa
import pytest

from graph import registry
from graph.operator import Operator, Params
from graph.runtime import END_OF_STREAM, Data, Watermark, HostConfig, LocalTransport, NodeFailure, NodeHost, Route, partition_batch, shard_of
from graph.schemas import TICK


class Recorder(Operator):
    """Records every call; emits its input unchanged on 'out'."""

    outputs = {"out": TICK}
    log: list = []

    def on_batch(self, stream, batch):
        Recorder.log.append((self.ctx.node_id, self.ctx.shard, "batch", batch.column("symbol").to_pylist()))
        if self.ctx.node_id == "down" and batch.column("symbol").to_pylist() == ["BOOM"]:
            raise ValueError("price column exploded")
        return [("out", batch)]

    def on_watermark(self, ts):
        Recorder.log.append((self.ctx.node_id, self.ctx.shard, "wm", ts))
        return []

    def on_eof(self):
        Recorder.log.append((self.ctx.node_id, self.ctx.shard, "eof", None))
        return []

    def control(self, command):
        if command != "pause":
            raise ValueError(f"unknown command {command!r}")
        Recorder.log.append((self.ctx.node_id, self.ctx.shard, "control", command))
        return {"paused": True}


@pytest.fixture(autouse=True)
def recorder_kind(monkeypatch):
    monkeypatch.setitem(registry.KINDS, "recorder", "tests.unit.test_runtime:Recorder")
    Recorder.log = []


def ticks(symbols: list[str]) -> pa.RecordBatch:
    n = len(symbols)
    return pa.RecordBatch.from_pydict(
        {
            "symbol": symbols,
            "ts": list(range(n)),
            "price": [1.0] * n,
            "size": [1.0] * n,
            "side": [None] * n,
            "bid": [None] * n,
            "ask": [None] * n,
            "bid_size": [None] * n,
            "ask_size": [None] * n,
            "provider": ["test"] * n,
            "seq": list(range(n)),
            "origin": ["replay"] * n,
            "advances_watermark": [None] * n,
        },
        schema=TICK,
    )


def host(node_id: str, inputs: list[str], shard: int = 0, num_shards: int = 1) -> NodeHost:
    h = NodeHost(HostConfig(node_id=node_id, kind="recorder", params={}, shard=shard, num_shards=num_shards, inputs=inputs))
    h.start()
    return h


def test_watermark_is_the_minimum_over_input_channels():
    sink = host("sink", ["a#0", "b#0"])
    sink.connect([], LocalTransport({}))
    sink.push("a#0", [Watermark(10)])
    sink.push("b#0", [Watermark(20)])
    sink.push("a#0", [Watermark(30)])
    sink.push("b#0", [Watermark(25)])
    sink.push("a#0", [END_OF_STREAM])
    assert [e[3] for e in Recorder.log if e[2] == "wm"] == [10, 20, 25]
    sink.push("b#0", [Watermark(40), END_OF_STREAM])
    kinds = [e[2] for e in Recorder.log]
    assert kinds == ["wm", "wm", "wm", "wm", "eof"]
    assert [e[3] for e in Recorder.log if e[2] == "wm"] == [10, 20, 25, 40]
    assert sink.finished


def test_eof_waits_for_every_channel():
    sink = host("sink", ["a#0", "b#0"])
    sink.connect([], LocalTransport({}))
    sink.push("a#0", [END_OF_STREAM])
    assert not sink.finished and not any(e[2] == "eof" for e in Recorder.log)
    sink.push("b#0", [END_OF_STREAM])
    assert sink.finished and Recorder.log[-1][2] == "eof"


def test_keyed_route_sends_each_symbol_to_one_stable_shard():
    symbols = ["AMZN", "BTCUSDT", "AAPL", "MSFT", "AMZN", "ETHUSDT", "AAPL"] * 3
    parts = partition_batch(ticks(symbols), "symbol", 3)
    seen: dict[str, int] = {}
    total = 0
    for shard, part in parts:
        for symbol in part.column("symbol").to_pylist():
            assert seen.setdefault(symbol, shard) == shard
            # independent definition of the stable hash
            assert shard == zlib.crc32(symbol.encode()) % 3
        total += part.num_rows
    assert total == len(symbols)
    assert shard_of("AMZN", 3) == zlib.crc32(b"AMZN") % 3


def test_partition_keeps_row_order_within_a_shard():
    symbols = ["A", "B", "A", "C", "A"]
    batch = ticks(symbols)
    for shard, part in partition_batch(batch, "symbol", 2):
        seqs = part.column("seq").to_pylist()
        assert seqs == sorted(seqs)


def test_data_watermark_eof_flow_through_a_keyed_two_shard_node():
    hosts = {
        ("up", 0): host("up", ["src#0"]),
        ("down", 0): host("down", ["up#0"], 0, 2),
        ("down", 1): host("down", ["up#0"], 1, 2),
    }
    transport = LocalTransport(hosts)
    hosts[("up", 0)].connect([Route("down", frozenset({"out"}), "symbol", 2)], transport)
    hosts[("down", 0)].connect([], transport)
    hosts[("down", 1)].connect([], transport)
    symbols = ["AMZN", "BTCUSDT", "AAPL", "MSFT"]
    hosts[("up", 0)].push("src#0", [Data("ticks", ticks(symbols)), Watermark(5), END_OF_STREAM])
    down = [e for e in Recorder.log if e[0] == "down"]
    received = sorted(s for e in down if e[2] == "batch" for s in e[3])
    assert received == sorted(symbols)
    for shard in (0, 1):
        events = [e[2] for e in down if e[1] == shard]
        assert events[-2:] == ["wm", "eof"]  # every shard gets the watermark, then eof
    assert all(h.finished for h in hosts.values())


def test_operator_error_names_the_node_and_stops_the_upstream():
    hosts = {("up", 0): host("up", ["src#0"]), ("down", 0): host("down", ["up#0"])}
    transport = LocalTransport(hosts)
    hosts[("up", 0)].connect([Route("down", frozenset({"out"}), None, 1)], transport)
    hosts[("down", 0)].connect([], transport)
    with pytest.raises(NodeFailure, match=r"node 'down' \(shard 0\) failed: ValueError: price column exploded") as info:
        hosts[("up", 0)].push("src#0", [Data("ticks", ticks(["BOOM"]))])
    assert info.value.node_id == "down"
    assert "Traceback" in info.value.details
    # a failed host refuses further work with the same error
    with pytest.raises(NodeFailure, match="node 'down'"):
        hosts[("up", 0)].push("src#0", [Data("ticks", ticks(["AMZN"]))])


def test_route_streams_filter_what_a_target_receives():
    hosts = {("up", 0): host("up", ["src#0"]), ("down", 0): host("down", ["up#0"])}
    transport = LocalTransport(hosts)
    hosts[("up", 0)].connect([Route("down", frozenset({"other"}), None, 1)], transport)
    hosts[("down", 0)].connect([], transport)
    hosts[("up", 0)].push("src#0", [Data("ticks", ticks(["AMZN"])), END_OF_STREAM])
    assert [e[2] for e in Recorder.log if e[0] == "down"] == ["eof"]
    assert hosts[("up", 0)].metrics()["rows_out"] == {"out": 1}


def test_unknown_params_fail_at_start():
    h = NodeHost(HostConfig(node_id="x", kind="recorder", params={"nope": 1}, inputs=[]))
    with pytest.raises(Exception, match="nope"):
        h.start()


def test_params_base_forbids_extra_keys():
    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        Params.model_validate({"unexpected": 1})


def test_control_commands_reach_the_operator_and_errors_name_the_node():
    h = host("src", [])
    assert h.control("pause") == {"paused": True}
    assert Recorder.log[-1] == ("src", 0, "control", "pause")
    with pytest.raises(NodeFailure, match=r"node 'src' \(shard 0\) failed: ValueError: unknown command 'jump'"):
        h.control("jump")
