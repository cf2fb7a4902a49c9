"""Checkpoints of the tick catalog's writers (no Ray): a restore after a barrier stores every row once.

The catalog sink and the recorder are fed real ticks (LOBSTER AMZN and Tardis BTCUSDT,
read in-process by ``file_replay``). One run is uninterrupted; the other takes a snapshot
at a barrier, keeps going (files are written after the barrier), is rolled back as on a
restart (``discard`` + ``close``, as the host does), and a new operator restored from the
pickled snapshot is sent the rest of the stream again. The catalog read back with
pyarrow's own hive dataset must hold the source's ticks exactly once each.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from actors.catalog_sink import CatalogParams, CatalogSink
from actors.file_replay import FileReplay
from actors.recorder import Recorder, RecorderParams
from graph.operator import OperatorContext, Watermark
from tests.conftest import FIXTURES, LOBSTER, TRADES

SPAN_S = 900  # 15-minute files: the AMZN day is ~26 files, so a barrier falls between files
KEY = ["symbol", "provider", "ts", "seq", "price"]


@pytest.fixture(scope="module")
def events() -> list:
    """The replay's ticks and watermarks, in stream order."""
    params = FileReplay.Params.model_validate({"files": [LOBSTER, TRADES], "batch_rows": 4096}, context={"base_dir": FIXTURES})
    source = FileReplay(params, OperatorContext("replay", base_dir=FIXTURES))
    out = [e if isinstance(e, Watermark) else e[1] for e in source.events() if isinstance(e, Watermark) or e[0] == "ticks"]
    source.close()
    return out


def catalog_sink(root: Path):
    return CatalogSink(CatalogParams(path=root, file_span_s=SPAN_S), OperatorContext("catalog"))


def recorder(root: Path):
    params = RecorderParams.model_validate({"path": str(root), "file_span_s": SPAN_S, "origins": ["replay"]})
    return Recorder(params, OperatorContext("recorder"))


def feed(op, events: list) -> None:
    for event in events:
        if isinstance(event, Watermark):
            op.on_watermark(event.ts)
        else:
            op.on_batch("ticks", event)


def stored(root: Path) -> pa.Table:
    """The catalog's ticks as pyarrow's hive dataset reads them, in KEY order."""
    table = ds.dataset(root / "ticks", format="parquet", partitioning="hive").to_table()
    table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
    return table.select([*KEY, "size", "origin"]).sort_by([(k, "ascending") for k in KEY])


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def file_count(root: Path) -> int:
    return len(list(root.rglob("*.parquet")))


@pytest.mark.parametrize("make", [catalog_sink, recorder], ids=["catalog", "recorder"])
def test_a_restore_after_a_barrier_stores_each_tick_once(tmp_path, events, make: Callable):
    expected = pa.Table.from_batches([e for e in events if not isinstance(e, Watermark)])
    whole = make(tmp_path / "whole")
    feed(whole, events)
    whole.on_eof(), whole.close()

    barrier, crash = len(events) // 3, 2 * len(events) // 3
    first = make(tmp_path / "restarted")
    feed(first, events[:barrier])
    state = pickle.dumps(first.snapshot())  # what the host writes to the checkpoint store
    files_at_barrier = file_count(tmp_path / "restarted")
    feed(first, events[barrier:crash])
    assert 0 < files_at_barrier < file_count(tmp_path / "restarted"), "files are written after the barrier too"
    first.discard(), first.close()  # a restart: the rolled-back attempt writes nothing more

    second = make(tmp_path / "restarted")
    second.restore(pickle.loads(state))
    feed(second, events[barrier:])
    second.on_eof(), second.close()

    got = stored(tmp_path / "restarted")
    assert got.num_rows == expected.num_rows  # no duplicate, none missing
    want = expected.select(got.column_names).sort_by([(k, "ascending") for k in KEY]).cast(got.schema)
    assert got.equals(want)
    # without late rows a restart changes nothing on disk: same file names, same bytes
    assert digests(tmp_path / "restarted") == digests(tmp_path / "whole")


@pytest.mark.parametrize("shift_ns", [0, -1], ids=["same-file-name", "new-file-name"])
def test_a_late_tick_merged_after_the_barrier_is_stored_once_after_a_restore(tmp_path, events, shift_ns: int):
    """Under amend a late tick replaces its span's file with a merged one. If that happens
    after the barrier and the run is rolled back, the checkpoint names a file that now holds
    the late tick (same name) or is gone (the tick is the span's first: a new name); the
    restored sink must neither fail on it nor store the late tick twice."""
    batches = [e for e in events if not isinstance(e, Watermark)]
    barrier = len(events) // 2
    early = batches[0].slice(0, 1)  # AMZN's first trade: its span's file is written long before the barrier
    seq = early.schema.get_field_index("seq")
    ts = early.schema.get_field_index("ts")
    columns = [pc.add(c, 10**9) if i == seq else pc.add(c, shift_ns) if i == ts else c for i, c in enumerate(early.columns)]
    late = pa.RecordBatch.from_arrays(columns, schema=early.schema)  # a trade of its own, not a resend
    resend = [*events[barrier:barrier + 2], late, *events[barrier + 2:]]  # fmt: skip

    first = catalog_sink(tmp_path)
    feed(first, events[:barrier])
    state = pickle.dumps(first.snapshot())
    before = set(digests(tmp_path).items())
    feed(first, resend[:20])
    assert first.writer.files_replaced == 1 and not before <= set(digests(tmp_path).items()), "the late tick replaced a file"
    first.discard(), first.close()

    second = catalog_sink(tmp_path)
    second.restore(pickle.loads(state))
    feed(second, resend)
    second.on_eof(), second.close()

    got = stored(tmp_path)
    want = pa.Table.from_batches([*batches, late]).select(got.column_names).sort_by([(k, "ascending") for k in KEY]).cast(got.schema)
    assert got.num_rows == want.num_rows and got.equals(want)


def test_a_snapshot_of_another_version_is_refused(tmp_path):
    sink = catalog_sink(tmp_path)
    state = sink.snapshot() | {"version": 99}
    with pytest.raises(ValueError, match="catalog snapshot version 99"):
        catalog_sink(tmp_path).restore(state)
