"""The recorder: live ticks into the tick catalog's layout, replayable by the ``replay`` kind; opt-in ``tick_data``."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.recorder import Recorder, recorded_files, replay_params
from actors.replayer import Replayer
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


def _feed(recorder: Recorder, table: pa.Table, chunk: int = 17, watermarks: bool = False) -> None:
    for start in range(0, table.num_rows, chunk):
        part = table.slice(start, chunk)
        recorder.on_batch("ticks", part.to_batches()[0])
        recorder.on_watermark(max(part.column("ts").to_pylist()) if watermarks else 0)


def _catalog_order(table: pa.Table) -> pd.DataFrame:
    """The rows as the catalog stores them, by pandas: per symbol (sorted), by (ts, seq), ties in arrival order."""
    frame = table.to_pandas()
    return frame.sort_values(["symbol", "ts", "seq"], kind="stable", ignore_index=True)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_records_the_catalog_layout_and_the_replay_kind_reads_it_back(tmp_path):
    table = _live_ticks()
    recorder = _recorder(tmp_path)
    _feed(recorder, table)
    recorder.on_eof()
    recorder.close()
    files = recorded_files(tmp_path / "rec")
    symbols = sorted(set(table.column("symbol").to_pylist()))
    assert sorted({f.parent.parent.name for f in files}) == [f"symbol={s}" for s in symbols]
    assert {f.parent.name for f in files} == {"date=2021-04-17"}
    stored = pd.concat([pq.read_table(f).to_pandas().assign(symbol=f.parent.parent.name[7:]) for f in files], ignore_index=True)
    expected = _catalog_order(table)
    assert len(stored) == 214 and recorder.metrics()["recorded"] == 214 and recorder.metrics()["rows_written"] == 214
    for column in [c for c in TICK.names if c != "ts"]:
        pd.testing.assert_series_equal(stored[column], expected[column], check_names=False)
    assert (stored["ts"].astype("int64") == expected["ts"]).all()
    assert str(stored["ts"].dtype) == "datetime64[ns, UTC]"
    # the replay kind reads the recording back: every tick, every column, origin replay
    replayer = Replayer(Replayer.Params.model_validate(replay_params(tmp_path / "rec")), OperatorContext(node_id="replay"))
    batches = [e[1] for e in replayer.events() if not isinstance(e, Watermark) and e[0] == "ticks"]
    replayed = pa.Table.from_batches(batches).to_pandas()
    assert set(replayed["origin"]) == {"replay"}
    key = ["symbol", "ts", "seq"]
    back = replayed.sort_values(key, kind="stable", ignore_index=True).drop(columns="origin")
    pd.testing.assert_frame_equal(back, expected.drop(columns="origin"))
    assert (replayed["ts"].diff().dropna() >= 0).all()  # merged in event time across the symbols


def test_spans_are_written_as_the_watermark_passes_them(tmp_path):
    table = _live_ticks().slice(0, 107)  # the trades, in arrival order
    recorder = _recorder(tmp_path, file_span_s=5, url=None)
    _feed(recorder, table, watermarks=True)
    written_before_the_end = recorder.metrics()["catalog"]["files_written"]
    recorder.close()  # a stop without end-of-stream still writes what is buffered
    files = recorded_files(tmp_path / "rec")
    assert written_before_the_end > 3 and len(files) > written_before_the_end
    rows = 0
    for path in files:
        ts = pq.read_table(path).column("ts").cast(pa.int64()).to_pylist()
        rows += len(ts)
        assert ts == sorted(ts) and len({t // 5_000_000_000 for t in ts}) == 1  # one 5 s span per file
        assert path.name == f"part-{ts[0]}-{ts[-1]}.parquet"
    assert rows == 107


def test_recording_the_same_session_twice_writes_nothing_new(tmp_path):
    table = _live_ticks()
    recorder = _recorder(tmp_path, sql_batch_rows=40)
    _feed(recorder, table)
    recorder.on_eof()
    recorder.close()
    first = _digest(tmp_path / "rec")
    again = _recorder(tmp_path, sql_batch_rows=40)
    _feed(again, table, chunk=50)
    again.on_eof()
    again.close()
    assert _digest(tmp_path / "rec") == first  # same names, same bytes
    assert again.metrics()["catalog"]["rows_already_stored"] == {"ticks": 214}
    rows = sqlite3.connect(tmp_path / "db.sqlite").execute(f"select {', '.join(TICK.names)} from tick_data").fetchall()
    assert len(rows) == 214  # tick_data upserts are idempotent too
    assert set(rows) == {tuple(r[c] for c in TICK.names) for r in table.to_pylist()}


def test_only_configured_origins_are_recorded(tmp_path):
    recorder = _recorder(tmp_path)
    recorder.on_batch("ticks", _live_ticks("replay").to_batches()[0])
    recorder.on_eof()
    recorder.close()
    metrics = recorder.metrics()
    assert (metrics["recorded"], metrics["skipped"], metrics["rows_written"]) == (0, 214, 0)
    assert recorded_files(tmp_path / "rec") == []


def test_unknown_stream_is_an_error(tmp_path):
    recorder = _recorder(tmp_path, url=None)
    with pytest.raises(ValueError, match="unknown input stream 'bars'; expected 'ticks'"):
        recorder.on_batch("bars", _live_ticks().to_batches()[0])
    recorder.close()
