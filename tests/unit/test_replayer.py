"""The ``replay`` source without Ray: params, speed-independent output, pacing on a fake
clock (no sleeping), step-through, pause/resume, filters vs pandas, the ``tick_data``
table, and ``job_runs`` rows for completed, failed and cancelled replays.

Expectations come from the raw fixture files read with pandas (``tests/unit/test_bars``
builds them without tickgraph code), or are worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from graph.registry import load_kind
from actors.file_replay import FileReplay
from actors.replayer import MAX_SLEEP_NS, REPLAY_RUN_ID_KEY, Replayer, parse_time_ns, replay_run_id
from db.jobs import read_job
from db.tables import metadata, tick_data
from graph.operator import IDLE, OperatorContext, Watermark
from graph.schemas import TICK
from tests.unit.test_bars import amzn_ticks, btc_ticks

from tests.conftest import BOOKS, FIXTURES, LOBSTER, MESSAGES, QUOTES, TRADES
S = 1_000_000_000
MS = 1_000_000


class FakeWall:
    """A wall clock that moves only when the replayer sleeps; records every sleep."""

    def __init__(self, now: int = 1_700_000_000 * S) -> None:
        self.start = self.now = now
        self.sleeps: list[int] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, ns: int) -> None:
        self.sleeps.append(ns)
        self.now += ns


def params(base_dir: Path = FIXTURES, **values) -> Replayer.Params:
    return Replayer.Params.model_validate(values, context={"base_dir": base_dir})


def replayer(p: Replayer.Params, wall: FakeWall | None = None, **ctx) -> Replayer:
    context = OperatorContext("replay", base_dir=FIXTURES, clock_ns=wall, **ctx)
    return Replayer(p, context, sleep_ns=wall.sleep if wall else None, block_bytes=256 << 10)


def pull(source, on_emit=None) -> list:
    """Every event but IDLE, in order; ``on_emit(event)`` is called as each one arrives."""
    log = []
    for event in source.events():
        if event is IDLE:
            continue
        if on_emit is not None:
            on_emit(event)
        log.append(event)
    return log


def ticks_of(log: list) -> pd.DataFrame:
    batches = [e[1] for e in log if isinstance(e, tuple) and e[0] == "ticks"]
    return pa.Table.from_batches(batches, schema=TICK).to_pandas()


def utc(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


# ----------------------------------------------------------------------------- params


def test_kind_replay_is_the_replayer():
    assert load_kind("replay") is Replayer


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_340_287_200_000_000_000, 1_340_287_200_000_000_000),
        ("1340287200000000000", 1_340_287_200_000_000_000),
        ("2012-06-21T14:00:00Z", utc("2012-06-21 14:00")),
        ("2012-06-21T10:00:00-04:00", utc("2012-06-21 14:00")),
        ("2012-06-21 10:00:00.000000001-0400", utc("2012-06-21 14:00") + 1),
        ("2012-06-21T14:00:00.123456789+00:00", utc("2012-06-21 14:00") + 123_456_789),
        (dt.datetime(2012, 6, 21, 14, tzinfo=dt.timezone.utc), utc("2012-06-21 14:00")),  # YAML's unquoted form
    ],
)
def test_times_are_int_ns_or_iso_8601_with_offset(value, expected):
    assert parse_time_ns(value) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"files": [LOBSTER], "start": "2012-06-21T10:00:00"}, r"start\n.*'2012-06-21T10:00:00' has no UTC offset"),
        ({"files": [LOBSTER], "end": dt.datetime(2012, 6, 21)}, r"end\n.*has no UTC offset"),  # noqa: DTZ001
        ({"files": [LOBSTER], "start": "yesterday"}, "'yesterday' is not a time"),
        ({"files": [LOBSTER], "start": 10, "end": 10}, r"end \(10 ns\) must be after start \(10 ns\)"),
        ({}, "a replay needs 'files', 'database_url' .* or both"),
        ({"files": [LOBSTER], "speed": -1}, r"speed\n.*greater than or equal to 0"),
        ({"files": [LOBSTER], "speed": float("inf")}, r"speed\n.*finite number"),
        ({"files": [LOBSTER], "symbols": []}, r"symbols\n.*at least one symbol"),
        ({"files": [{**LOBSTER, "message_file": "nope.csv"}]}, r"files\.0\.lobster\.message_file\n.*file not found"),
    ],
)
def test_bad_params_name_the_field(values, message):
    with pytest.raises(ValidationError, match=message):
        params(**values)


def test_paced_replay_needs_a_wall_clock():
    with pytest.raises(ValueError, match="replay 'replay': speed 2.0 needs a wall clock"):
        Replayer(params(files=[LOBSTER], speed=2.0), OperatorContext("replay"))


def test_database_urls_are_masked_in_repr():
    p = params(database_url="postgresql://u:hunter2@db/x", job_database_url="postgresql://u:hunter2@db/x")
    assert "hunter2" not in repr(p) and "***" in repr(p)


# ----------------------------------------------------------------------------- the stream


@pytest.fixture(scope="module")
def burst() -> list:
    """LOBSTER + Tardis trades + quotes, burst, 100 ms event-time cells."""
    return pull(replayer(params(files=[LOBSTER, TRADES, QUOTES], batch_interval_ms=100)))


def test_burst_replays_every_tick_in_the_file_replay_order(burst):
    reference = FileReplay(FileReplay.Params.model_validate({"files": [LOBSTER, TRADES, QUOTES]},
                           context={"base_dir": FIXTURES}), OperatorContext("f"))  # fmt: skip
    expected = ticks_of(list(reference.events()))
    got = ticks_of(burst)
    assert len(got) == 57_515 + 9_999 + 9_999
    pd.testing.assert_frame_equal(got, expected)
    assert set(got["origin"]) == {"replay"}


def test_batches_follow_event_time_cells_and_each_is_followed_by_its_watermark(burst):
    # every batch lies in one 100 ms cell of merge key; batches are in order; the watermark
    # after a batch is the largest ts emitted so far (exact replay: allowed lateness 0)
    top, previous_cell = None, None
    run_ids = set()
    for event, following in zip(burst, burst[1:] + [None]):
        if isinstance(event, Watermark) or event[0] != "ticks":
            continue
        batch = event[1]
        ts = batch.column("ts").to_numpy()
        keys = np.maximum.accumulate(ts)  # the fixtures are time-ordered per file
        cells = set(keys // (100 * MS))
        assert len(cells) == 1
        cell = cells.pop()
        assert previous_cell is None or cell > previous_cell
        previous_cell = cell
        top = int(ts.max()) if top is None else max(top, int(ts.max()))
        assert following == Watermark(top)
        run_ids.add(replay_run_id(batch))
    assert len(run_ids) == 1 and None not in run_ids


def test_allowed_lateness_lags_the_watermark():
    log = pull(replayer(params(files=[TRADES], batch_interval_ms=0, batch_rows=1_000), allowed_lateness_ns=2 * S))
    marks = [e.ts for e in log if isinstance(e, Watermark)]
    tops = [int(e[1].column("ts").to_numpy().max()) for e in log if isinstance(e, tuple)]
    assert marks == [t - 2 * S for t in np.maximum.accumulate(tops)]


def test_output_is_identical_at_every_speed():
    # 2 minutes of BTCUSDT (trades + quotes); speed 0 vs 20 vs 1000 on a fake clock
    window = {"start": "2020-02-22T00:00:00Z", "end": "2020-02-22T00:02:00Z", "batch_interval_ms": 100}
    runs = []
    for speed in (0.0, 20.0, 1000.0):
        wall = FakeWall()
        log = pull(replayer(params(files=[TRADES, QUOTES], speed=speed, **window), wall))
        runs.append([(e if isinstance(e, Watermark) else (e[0], e[1].replace_schema_metadata(None))) for e in log])
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other):
            assert a == b if isinstance(a, Watermark) else (a[0] == b[0] and a[1].equals(b[1]))


# ----------------------------------------------------------------------------- pacing (fake clock)


def test_speed_one_keeps_inter_arrival_times_without_spinning():
    # 10 s of BTCUSDT trades at speed 1 on a fake wall clock that moves only when the
    # replayer sleeps: batch k leaves exactly (due_k - first tick) of wall time after the
    # start; no single sleep exceeds 50 ms; IDLE hands control back while waiting.
    wall = FakeWall()
    p = params(files=[TRADES], speed=1.0, start="2020-02-22T00:00:02Z", end="2020-02-22T00:00:12Z")
    source = replayer(p, wall)
    emitted: list[tuple[int, int, int]] = []  # (wall offset, first ts, last ts) per batch
    idle = 0
    for event in source.events():
        if event is IDLE:
            idle += 1
        elif isinstance(event, tuple):
            ts = event[1].column("ts").to_numpy()
            emitted.append((wall.now - wall.start, int(ts[0]), int(ts.max())))
    first = emitted[0][1]
    for offset, _, due in emitted:
        assert offset == due - first  # released the moment its newest tick is due
    total = emitted[-1][0]
    trades = btc_ticks()[btc_ticks()["price"].notna()]
    window = trades[(trades["ts"] >= utc("2020-02-22 00:00:02")) & (trades["ts"] < utc("2020-02-22 00:00:12"))]
    assert total == window["ts"].max() - window["ts"].min() > 8 * S  # pandas: first to last trade
    assert max(wall.sleeps) <= MAX_SLEEP_NS and sum(wall.sleeps) == total
    # each sleep either reaches a batch's deadline or is followed by IDLE (the host's step ends)
    assert idle >= len(wall.sleeps) - len(emitted) > 100


def test_speed_ten_is_ten_times_faster():
    p = {"files": [TRADES], "start": "2020-02-22T00:00:02Z", "end": "2020-02-22T00:00:32Z"}
    elapsed = {}
    for speed in (1.0, 10.0):
        wall = FakeWall()
        pull(replayer(params(**p, speed=speed), wall))
        elapsed[speed] = wall.now - wall.start
    assert elapsed[10.0] == pytest.approx(elapsed[1.0] / 10, abs=2)  # ns rounding per batch


def test_step_through_a_paced_replay_on_a_frozen_clock():
    # The clock is frozen from the start: it moves only when the test steps it to the
    # deadline the replayer is waiting for, so each batch leaves exactly at its newest tick.
    wall = FakeWall()
    source = replayer(params(files=[TRADES], speed=1.0, end="2020-02-22T00:00:05Z"), wall)
    source.clock.freeze()
    events = source.events()
    released, steps = [], 0
    event = next(events)
    while event is not None:
        if event is IDLE:
            assert source.clock.step() == source.clock.now_ns()  # jump to the pending deadline
            steps += 1
        elif isinstance(event, tuple):
            ts = event[1].column("ts").to_numpy()
            assert int(ts.max()) == source.clock.now_ns()
            released.append(ts)
        else:
            assert event == Watermark(source.clock.now_ns())
        event = next(events, None)
    assert wall.now - wall.start == len(wall.sleeps) * MAX_SLEEP_NS  # frozen: each wait slept the cap
    reference = btc_ticks()
    trades = reference[reference["price"].notna() & (reference["ts"] < utc("2020-02-22 00:00:05"))]
    assert np.concatenate(released).tolist() == trades["ts"].tolist()
    # every batch needed one step, except the first if all its ticks share the first tick's time
    assert steps == len(released) - int(released[0].max() == released[0][0])


def test_pause_and_resume_freeze_the_replay_in_place():
    wall = FakeWall()
    source = replayer(params(files=[TRADES], speed=1.0, end="2020-02-22T00:00:10Z"), wall)
    events = source.events()
    got = []

    def take(count: int) -> None:
        while len(got) < count:
            event = next(events)
            if isinstance(event, tuple):
                got.append(event[1])

    take(3)
    assert isinstance(next(events), Watermark)  # the tail of the third batch
    clock_at_pause = source.clock.now_ns()
    source.pause()
    assert source.paused and source.control("status")["paused"]
    for _ in range(40):  # 40 x 50 ms of wall time pass: nothing is emitted
        assert next(events) is IDLE
    assert source.clock.now_ns() == clock_at_pause
    status = source.control("resume")
    assert status == {"paused": False, "ticks": sum(b.num_rows for b in got), "clock_ns": clock_at_pause}
    take(4)  # resumes where it stopped
    assert got[3].column("ts")[0].as_py() > got[2].column("ts")[0].as_py()
    with pytest.raises(ValueError, match="unknown control command 'stop'"):
        source.control("stop")


def test_pause_file_pauses_while_it_exists(tmp_path):
    flag = tmp_path / "replay.pause"
    source = replayer(params(files=[TRADES], batch_rows=100, pause_file=str(flag)))
    events = source.events()
    assert next(events)[0] == "ticks"
    flag.touch()
    assert [next(events) for _ in range(3)][1:] == [IDLE, IDLE]  # (the watermark of the batch already out)
    assert source.metrics()["paused"]
    flag.unlink()
    assert next(events)[0] == "ticks"


# ----------------------------------------------------------------------------- filters vs pandas


def test_symbols_start_end_filters_match_pandas():
    start, end = "2012-06-21T10:00:00-04:00", "2012-06-21T14:05:00Z"
    log = pull(replayer(params(files=[LOBSTER, TRADES, QUOTES], symbols=["AMZN"], start=start, end=end)))
    got = ticks_of(log)
    amzn = amzn_ticks()
    want = amzn[(amzn["ts"] >= utc("2012-06-21 14:00")) & (amzn["ts"] < utc("2012-06-21 14:05"))]
    assert len(got) == len(want) > 1_000
    np.testing.assert_array_equal(got["ts"], want["ts"])
    np.testing.assert_array_equal(got["seq"], want["seq"])
    np.testing.assert_array_equal(got["price"].fillna(-1), want["price"].fillna(-1))
    source = replayer(params(files=[LOBSTER, TRADES], symbols=["BTCUSDT"], end="2020-02-22T00:01:00Z"))
    got = ticks_of(pull(source))
    btc = btc_ticks()
    want = btc[btc["price"].notna() & (btc["ts"] < utc("2020-02-22 00:01"))]
    np.testing.assert_array_equal(got["ts"], want["ts"])
    np.testing.assert_array_equal(got["price"], want["price"])
    m = source.metrics()
    assert m["rows_read"] == 57_515 + 9_999 == m["ticks"] + m["filtered"] + m["quarantined"]


# ----------------------------------------------------------------------------- tick_data


def write_tick_data(url_path: Path, frame: pd.DataFrame) -> None:
    if "advances_watermark" not in frame:
        frame = frame.assign(advances_watermark=None)
    engine = sa.create_engine(f"sqlite:///{url_path}")
    metadata.create_all(engine, tables=[tick_data])
    rows = frame[TICK.names].astype(object).where(frame[TICK.names].notna(), None).to_dict("records")
    with engine.begin() as connection:
        connection.execute(tick_data.insert(), rows)
    engine.dispose()


def test_tick_data_table_replays_in_event_time_with_filters(tmp_path):
    # the store holds real BTCUSDT trades + quotes (recorded live) and 2 000 AMZN ticks
    btc = btc_ticks().assign(origin="live")
    amzn = amzn_ticks().iloc[:2_000]
    db = tmp_path / "ticks.db"
    write_tick_data(db, pd.concat([amzn, btc], ignore_index=True))
    url = f"sqlite:///{db}"
    start, end = utc("2020-02-22 00:00:30"), utc("2020-02-22 00:02:30")
    source = replayer(params(database_url=url, symbols=["BTCUSDT"], start=start, end=end, batch_rows=500))
    got = ticks_of(pull(source))
    want = btc[(btc["ts"] >= start) & (btc["ts"] < end)].sort_values(["ts", "provider", "symbol", "seq"], kind="stable")
    assert len(got) == len(want) > 1_000
    for column in ("ts", "seq"):
        np.testing.assert_array_equal(got[column], want[column])
    for column in ("price", "size", "bid", "ask"):
        np.testing.assert_array_equal(got[column].fillna(-1), want[column].fillna(-1))
    assert set(got["origin"]) == {"replay"}  # recorded live, replayed now
    assert source.metrics()["inputs"][f"tick_data@{url}"]["rows_read"] == len(want)


def test_tick_data_and_a_file_merge_in_event_time(tmp_path):
    db = tmp_path / "ticks.db"
    write_tick_data(db, btc_ticks()[btc_ticks()["price"].isna()])  # the quotes, from the store
    got = ticks_of(pull(replayer(params(files=[TRADES], database_url=f"sqlite:///{db}"))))
    assert len(got) == 19_998
    assert (np.diff(got["ts"].to_numpy()) >= 0).all()


def test_missing_tick_data_table_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(Exception, match=r"tick_data on sqlite:///.*empty\.db: OperationalError.*no such table"):
        pull(replayer(params(database_url=url)))


# ----------------------------------------------------------------------------- job_runs


def test_file_removed_mid_run_fails_the_replay(tmp_path):
    for name in (MESSAGES, BOOKS):
        shutil.copy(FIXTURES / name, tmp_path / Path(name).name)
    p = params(
        base_dir=tmp_path, batch_interval_ms=100,
        files=[{**LOBSTER, "message_file": Path(MESSAGES).name, "orderbook_file": Path(BOOKS).name}],
    )  # fmt: skip
    source = Replayer(p, OperatorContext("replay"), block_bytes=64 << 10)
    events = source.events()
    assert next(events)[0] == "ticks"
    (tmp_path / Path(MESSAGES).name).unlink()
    with pytest.raises(FileNotFoundError, match=r"input file .*message_1\.csv disappeared during the replay"):
        for _ in events:
            pass
    source.close()


@pytest.mark.parametrize("speed", [0.0, 50.0])
@pytest.mark.parametrize("cut", [1, 7, 40])
def test_a_restored_replay_continues_exactly_where_its_snapshot_was_taken(tmp_path, speed, cut):
    # A checkpoint is taken between two events; a new replayer restored from it emits the
    # rest: the two parts together are the uninterrupted stream, row for row (quarantine too).
    bad = tmp_path / "trades.csv"
    lines = (FIXTURES / TRADES["path"]).read_text().splitlines()
    lines.insert(300, "binance-futures,BTCUSDT,oops,1,2,buy,9682,0.1")  # one malformed row
    bad.write_text("\n".join(lines[:2_000]) + "\n")
    p = params(files=[{"format": "tardis_trades", "path": str(bad)}, QUOTES], batch_rows=97, speed=speed,
               end="2020-02-22T00:05:00Z")  # fmt: skip
    whole = pull(replayer(p, FakeWall()))
    first = replayer(p, FakeWall())
    events, head = first.events(), []
    while sum(1 for e in head if isinstance(e, tuple)) < cut:
        event = next(events)
        if event is not IDLE:
            head.append(event)
    state = first.snapshot()
    first.close()
    second = replayer(p, FakeWall())
    second.restore(state)
    tail = pull(second)

    def rows(log, stream):
        batches = [e[1] for e in log if isinstance(e, tuple) and e[0] == stream]
        return pa.Table.from_batches(batches).to_pylist() if batches else []

    for stream in ("ticks", "quarantine"):
        assert rows(head, stream) + rows(tail, stream) == rows(whole, stream), stream
    assert second.metrics()["ticks"] == first.metrics()["ticks"] + sum(
        e[1].num_rows for e in tail if isinstance(e, tuple) and e[0] == "ticks")  # fmt: skip
    assert second.metrics()["symbols_seen"] == ["BTCUSDT"]


def test_without_a_job_table_the_run_id_is_still_unique():
    a, b = (replayer(params(files=[TRADES], end="2020-02-22T00:00:03Z")) for _ in range(2))
    pull(a), pull(b)
    assert a.run_id and b.run_id and a.run_id != b.run_id
    assert REPLAY_RUN_ID_KEY == "tickgraph.replay_run_id"


def test_max_gap_skips_the_years_between_two_files():
    # AMZN (2012) then BTCUSDT (2020) at speed 100: without max_gap the replay would wait ~8 years / 100
    window = {"symbols": ["AMZN", "BTCUSDT"], "end": "2020-02-22T00:00:30Z", "start": "2012-06-21T19:59:30Z"}
    wall = FakeWall()
    got = ticks_of(pull(replayer(params(files=[LOBSTER, TRADES], speed=100.0, max_gap_ms=60_000, **window), wall)))
    amzn, btc = got[got["symbol"] == "AMZN"]["ts"], got[got["symbol"] == "BTCUSDT"]["ts"]
    spans = (amzn.max() - amzn.min()) + (btc.max() - btc.min())
    assert len(amzn) > 100 and len(btc) > 50
    assert wall.now - wall.start == pytest.approx(spans / 100, abs=1_000)  # the 8-year gap took no time


def test_a_burst_defaults_to_size_cut_batches_and_a_paced_replay_to_100_ms_cells():
    burst = [e for e in pull(replayer(params(files=[TRADES], batch_rows=4_096))) if not isinstance(e, Watermark)]
    assert [b.num_rows for _, b in burst][:2] == [4_096, 4_096]  # burst: by size only
    paced = Replayer.Params.model_validate({"files": [TRADES], "speed": 10}, context={"base_dir": FIXTURES})
    wall = FakeWall()
    events = [e for e in pull(replayer(paced, wall)) if not isinstance(e, Watermark)]
    for _, batch in events:  # every paced batch lies within one 100 ms cell of event time
        assert len(set(batch.column("ts").to_numpy() // (100 * MS))) == 1
