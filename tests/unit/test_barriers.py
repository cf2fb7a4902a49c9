"""Checkpoint barriers in the host (no Ray): alignment, snapshots, restore (graph/host.py).

Timelines (channels a and b feed one host; B1 = barrier 1)::

    a:  d1  B1  d3 ............ d4  EOS
    b:  d2 .............. B1 ...... EOS
    host sees: d1 d2 | snapshot(1) | d3 d4 ...      (d3 waits behind a's B1 until b's B1)
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pytest

from graph import registry
from graph.checkpoints import CheckpointStore
from graph.host import HostConfig, NodeHost
from graph.messages import END_OF_STREAM, Barrier, Data, Watermark
from graph.operator import Operator
from graph.schemas import TICK
from graph.transport import LocalTransport

T0 = 1_340_285_400_000_000_000


class Counter(Operator):
    """Counts rows per symbol; its snapshot is the counts; logs what it saw."""

    outputs: ClassVar[dict[str, pa.Schema]] = {}
    log: ClassVar[list[tuple]] = []

    def __init__(self, params, ctx) -> None:
        super().__init__(params, ctx)
        self.counts: dict[str, int] = {}

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list:
        for symbol in batch.column("symbol").to_pylist():
            self.counts[symbol] = self.counts.get(symbol, 0) + 1
        Counter.log.append(("batch", tuple(batch.column("symbol").to_pylist())))
        return []

    def on_eof(self) -> list:
        Counter.log.append(("eof", dict(self.counts)))
        return []

    def snapshot(self) -> dict[str, int]:
        Counter.log.append(("snapshot", dict(self.counts)))
        return dict(self.counts)

    def restore(self, state: dict[str, int]) -> None:
        self.counts = dict(state)


def ticks(*symbols: str) -> pa.RecordBatch:
    rows = [{"symbol": s, "ts": T0 + i, "price": 1.0, "size": 1.0, "provider": "t", "seq": i, "origin": "replay"}
            for i, s in enumerate(symbols)]  # fmt: skip
    return pa.RecordBatch.from_pylist(rows, schema=TICK)


@pytest.fixture
def counter(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.KINDS, "counter", "tests.unit.test_barriers:Counter")
    Counter.log = []

    def make(restore: int | None = None) -> NodeHost:
        config = HostConfig(node_id="count", kind="counter", params={}, inputs=["a#0", "b#0"],
                            checkpoint_dir=str(tmp_path / "ckpt"), restore=restore)  # fmt: skip
        host = NodeHost(config)
        host.start()
        host.connect([], LocalTransport({}))
        return host

    return make


def test_a_barrier_holds_its_channel_until_every_channel_has_delivered_it(counter, tmp_path):
    host = counter()
    host.push("a#0", [Data("ticks", ticks("A")), Barrier(1), Data("ticks", ticks("C"))])
    assert Counter.log == [("batch", ("A",))]  # C waits behind a's barrier
    host.push("b#0", [Data("ticks", ticks("B"))])
    assert Counter.log[-1] == ("batch", ("B",))  # b is not blocked
    host.push("b#0", [Barrier(1), Data("ticks", ticks("D"))])
    assert Counter.log[-3:] == [("snapshot", {"A": 1, "B": 1}), ("batch", ("C",)), ("batch", ("D",))]
    state = CheckpointStore(tmp_path / "ckpt").read(1, "count#0")
    assert state["operator"] == {"A": 1, "B": 1} and state["host"]["rows_in"] == 2
    assert host.metrics()["checkpoint"] == 1


def test_an_ended_channel_does_not_block_the_barrier(counter, tmp_path):
    host = counter()
    host.push("a#0", [Data("ticks", ticks("A")), Barrier(1), Data("ticks", ticks("C")), END_OF_STREAM])
    host.push("b#0", [Data("ticks", ticks("B")), END_OF_STREAM])  # b ends without the barrier
    assert ("snapshot", {"A": 1, "B": 1}) in Counter.log
    assert Counter.log[-1] == ("eof", {"A": 1, "B": 1, "C": 1}) and host.finished


def test_a_restored_host_continues_as_the_uninterrupted_one(counter, tmp_path):
    # uninterrupted: everything; interrupted: up to the barrier, then a new host restored
    # from checkpoint 1 gets only what came after it
    before = [("a#0", [Data("ticks", ticks("A", "A")), Watermark(T0 + 5), Barrier(1)]),
              ("b#0", [Data("ticks", ticks("B")), Watermark(T0 + 7), Barrier(1)])]  # fmt: skip
    after = [("a#0", [Data("ticks", ticks("C")), END_OF_STREAM]), ("b#0", [Data("ticks", ticks("B", "C")), END_OF_STREAM])]
    whole = counter()
    for channel, messages in before + after:
        whole.push(channel, messages)
    expected = Counter.log[-1]
    first = counter()
    for channel, messages in before:
        first.push(channel, messages)
    Counter.log = []
    second = counter(restore=1)
    assert second.watermark == T0 + 5 and second.metrics()["rows_in"] == 3
    for channel, messages in after:
        second.push(channel, messages)
    assert Counter.log[-1] == expected == ("eof", {"A": 2, "B": 2, "C": 2})
    assert second.metrics()["rows_in"] == whole.metrics()["rows_in"] == 6


def test_an_old_barrier_after_a_restore_is_ignored(counter):
    host = counter()
    host.push("a#0", [Barrier(1)])
    host.push("b#0", [Barrier(1)])
    snapshots = [e for e in Counter.log if e[0] == "snapshot"]
    host.push("a#0", [Barrier(1)])  # a duplicate: not a new checkpoint, does not block a
    host.push("a#0", [Data("ticks", ticks("A"))])
    assert [e for e in Counter.log if e[0] == "snapshot"] == snapshots
    assert Counter.log[-1] == ("batch", ("A",))


def test_a_source_injects_its_barrier_after_what_it_emitted(tmp_path, monkeypatch):
    # a real replay source feeding the counter: pump(checkpoint=1) writes the source's offset
    # and sends Barrier(1) downstream right after the events already emitted
    from tests.conftest import FIXTURES, TRADES

    monkeypatch.setitem(registry.KINDS, "counter", "tests.unit.test_barriers:Counter")
    Counter.log = []
    directory = str(tmp_path / "ckpt")
    source = NodeHost(HostConfig(node_id="src", kind="replay", params={"files": [TRADES], "batch_rows": 1000},
                                 base_dir=str(FIXTURES), checkpoint_dir=directory))  # fmt: skip
    sink = NodeHost(HostConfig(node_id="count", kind="counter", params={}, inputs=["src#0"], checkpoint_dir=directory))
    transport = LocalTransport({("count", 0): sink})
    from graph.partition import Route

    source.start(), sink.start()
    source.connect([Route("count", frozenset({"ticks"}), None, 1)], transport)
    sink.connect([], transport)
    source.pump(max_events=4)  # 2 batches of 1,000 ticks, each with its watermark
    source.pump(max_events=4, checkpoint=1)
    store = CheckpointStore(directory)
    assert store.read(1, "src#0")["operator"]["emitted"] == 2_000
    assert store.read(1, "count#0")["operator"] == {"BTCUSDT": 2_000}
    assert store.is_complete(1, ["src#0", "count#0"])
