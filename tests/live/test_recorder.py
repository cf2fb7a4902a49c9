"""The recorder: rolling Parquet files readable by ``file_replay`` (canonical), ``tick_data`` upserts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.file_replay import FileReplay
from actors.recorder import Recorder, recorded_files, replay_files
from graph.operator import OperatorContext, Watermark
from graph.schemas import TICK
from tests.live.conftest import frames
from tests.live.expected import coinbase_ticks


def _live_ticks(origin: str = "live") -> pa.Table:
    """The Coinbase capture's ticks (trades, then quotes) as TICK rows, built independently."""
    trades, quotes = coinbase_ticks(frames("coinbase_exchange_capture_2021-04-17"))
    rows = [
        {**t, "bid": None, "ask": None, "bid_size": None, "ask_size": None, "provider": "coinbase", "origin": origin}
        for t in trades
    ] + [{**q, "price": None, "size": None, "side": None, "provider": "coinbase", "origin": origin} for q in quotes]
    return pa.Table.from_pylist(rows, schema=TICK)


def _recorder(tmp_path: Path, **params) -> Recorder:
    model = Recorder.Params.model_validate({"path": str(tmp_path / "rec"), "url": f"sqlite:///{tmp_path / 'db.sqlite'}", **params})
    return Recorder(model, OperatorContext(node_id="recorder", clock_ns=lambda: 1_700_000_000_000_000_000))


def _feed(recorder: Recorder, table: pa.Table, chunk: int = 17) -> None:
    for start in range(0, table.num_rows, chunk):
        recorder.on_batch("ticks", table.slice(start, chunk).to_batches()[0])
        recorder.on_watermark(0)


def test_rolls_every_n_rows_and_replays_through_file_replay(tmp_path):
    table = _live_ticks()
    recorder = _recorder(tmp_path, rows_per_file=50, seconds_per_file=3600)
    _feed(recorder, table)
    recorder.on_eof()
    recorder.close()
    files = recorded_files(tmp_path / "rec")
    assert [f.name for f in files] == [f"ticks-1700000000000000000-{n:06d}.parquet" for n in range(5)]
    assert [pq.read_metadata(f).num_rows for f in files] == [50, 50, 50, 50, 14]
    written = pa.concat_tables([pq.read_table(f) for f in files])
    assert written.schema == TICK and written.equals(table)  # arrival order, every column
    assert recorder.metrics()["recorded"] == 214 and recorder.metrics()["rows_written"] == 214
    # the canonical replay format reads the files as they are
    params = FileReplay.Params.model_validate({"files": replay_files(tmp_path / "rec")})
    replayed = [e[1] for e in FileReplay(params, OperatorContext(node_id="replay")).events() if not isinstance(e, Watermark) and e[0] == "ticks"]
    got = pa.Table.from_batches(replayed)
    columns = [c for c in TICK.names if c != "origin"]
    key = [("symbol", "ascending"), ("seq", "ascending"), ("price", "ascending")]
    assert got.select(columns).sort_by(key).equals(table.select(columns).sort_by(key))
    assert set(got.column("origin").to_pylist()) == {"replay"}


def test_rolls_on_event_time(tmp_path):
    table = _live_ticks().slice(0, 107)  # the trades, in arrival order
    recorder = _recorder(tmp_path, rows_per_file=10_000, seconds_per_file=5, url=None)
    _feed(recorder, table)
    recorder.close()  # a stop without end-of-stream still writes the open file
    files = [pq.read_table(f) for f in recorded_files(tmp_path / "rec")]
    assert sum(f.num_rows for f in files) == 107 and len(files) > 3
    assert pa.concat_tables(files).equals(table)
    for previous, current in zip(files, files[1:]):
        first = previous.column("ts")[0].as_py()
        assert max(previous.column("ts").to_pylist()) < first + 5_000_000_000
        assert current.column("ts")[0].as_py() >= first + 5_000_000_000


def test_tick_data_upserts_are_idempotent(tmp_path):
    table = _live_ticks()
    for _ in range(2):  # the same session recorded twice: same rows
        recorder = _recorder(tmp_path, sql_batch_rows=40)
        _feed(recorder, table)
        recorder.on_eof()
        recorder.close()
    rows = sqlite3.connect(tmp_path / "db.sqlite").execute(
        f"select {', '.join(TICK.names)} from tick_data"
    ).fetchall()
    assert len(rows) == 214
    expected = {tuple(r[c] for c in TICK.names) for r in table.to_pylist()}
    assert set(rows) == expected


def test_only_configured_origins_are_recorded(tmp_path):
    recorder = _recorder(tmp_path)
    recorder.on_batch("ticks", _live_ticks("replay").to_batches()[0])
    recorder.on_eof()
    recorder.close()
    assert recorder.metrics() == {"recorded": 0, "skipped": 214, "files": [], "rows_written": 0}
    assert recorded_files(tmp_path / "rec") == []


def test_unknown_stream_is_an_error(tmp_path):
    recorder = _recorder(tmp_path, url=None)
    with pytest.raises(ValueError, match="unknown input stream 'bars'; expected 'ticks'"):
        recorder.on_batch("bars", _live_ticks().to_batches()[0])
    recorder.close()
