"""Checkpoint files: a state holding Arrow slices is written at the size of its rows, and
reads back equal (operators buffer slices of large batches; pyarrow's own pickling of a
slice carries its parent's whole buffers, which made checkpoints of a long replay grow
until the process ran out of memory)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from graph.checkpoints import CheckpointStore
from graph.schemas import TICK


def _ticks(rows: int) -> pa.RecordBatch:
    rng = np.random.default_rng(7)
    return pa.RecordBatch.from_pydict(
        {"symbol": ["AMZN"] * rows, "ts": np.arange(rows, dtype=np.int64) * 1_000, "price": rng.uniform(200, 230, rows),
         "size": rng.integers(1, 500, rows).astype(np.float64), "seq": np.arange(rows, dtype=np.int64)},
    )  # fmt: skip


def test_slices_are_stored_at_the_size_of_their_rows_and_read_back_equal(tmp_path):
    big = _ticks(500_000)  # ~20 MB of columns
    slices = [big.slice(1_000 * i, 7) for i in range(40)]  # 280 rows of it
    state = {"pending": slices, "table": pa.Table.from_batches([big.slice(5, 3)]), "column": big.column("price").slice(9, 2),
             "chunked": pa.chunked_array([big.column("ts").slice(0, 4)]), "plain": {"n": 3}}  # fmt: skip
    store = CheckpointStore(tmp_path)
    path = store.write(1, "parquet#0", state)
    assert path.stat().st_size < 400_000  # 40 full copies of the parent would be ~800 MB
    back = store.read(1, "parquet#0")
    assert [b.equals(s) for b, s in zip(back["pending"], slices)] == [True] * 40
    assert back["table"].equals(state["table"]) and back["column"].equals(state["column"])
    assert back["chunked"].equals(state["chunked"]) and back["plain"] == {"n": 3}


def test_an_empty_batch_of_the_tick_schema_round_trips(tmp_path):
    empty = TICK.empty_table().to_batches(max_chunksize=1) or [pa.RecordBatch.from_pylist([], schema=TICK)]
    store = CheckpointStore(tmp_path)
    store.write(2, "source#0", {"b": empty[0]})
    assert store.read(2, "source#0")["b"].schema == TICK
