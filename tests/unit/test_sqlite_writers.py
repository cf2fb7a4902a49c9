"""Several writers on one SQLite file (the store, the recorder and the job records of one
run share ``tickgraph.db``): they wait for each other's write lock instead of failing
with "database is locked", and every row of each lands.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pandas as pd

from db.jobs import read_job, start_job, update_job
from db.read import read_bars
from tests.unit.test_store import BAR_KEY, bar_stream, lobster_bars, sqlite_url, write


def test_a_flush_waits_for_a_writer_that_holds_the_lock_longer_than_sqlites_default(tmp_path):
    # Another writer (a large flush on a slow disk) holds the write lock for 6 s, longer
    # than the 5 s the sqlite3 module waits by default; the store's flush must wait it out.
    db = tmp_path / "shared.db"
    write(db, [])  # create the tables
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        connection = sqlite3.connect(db, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE other_writer (x INTEGER)")
            connection.execute("INSERT INTO other_writer VALUES (1)")
            locked.set()
            release.wait(6.0)
            connection.execute("COMMIT")
        finally:
            locked.set()
            connection.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(10)
    started = time.monotonic()
    try:
        metrics = write(db, [("bars", batch) for batch in bar_stream(lobster_bars())])
    finally:
        release.set()
        holder.join()
    assert time.monotonic() - started >= 5.5  # it really waited for the lock
    assert metrics["rows_written"]["bars_ohlcv"] == 465
    expected = lobster_bars().drop(columns="status").sort_values(BAR_KEY, ignore_index=True)
    pd.testing.assert_frame_equal(read_bars(sqlite_url(db)), expected, check_dtype=False, check_exact=True)
    assert sqlite3.connect(db).execute("select count(*) from other_writer").fetchone() == (1,)


def test_two_stores_and_job_heartbeats_write_one_file_at_once(tmp_path):
    # Two stores flush every 20 rows (many short transactions, interleaved) while the
    # driver's heartbeat updates its job row: no writer fails, nothing is lost.
    db = tmp_path / "shared.db"
    url = sqlite_url(db)
    write(db, [])
    job = start_job(url, "replay")
    bars = lobster_bars()
    halves = [bars[bars["timeframe"] == "1m"], bars[bars["timeframe"] == "5m"]]
    errors: list[BaseException] = []
    done = threading.Event()

    def store(part: pd.DataFrame) -> None:
        try:
            write(db, [("bars", batch) for batch in bar_stream(part, rows_per_batch=10)], batch_rows=20, flush_interval_ms=1)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    beats = 0

    def heartbeat() -> None:
        nonlocal beats
        while not done.is_set():
            try:
                update_job(url, job, rows_written=beats)
                beats += 1
            except BaseException as error:  # noqa: BLE001
                errors.append(error)
                return

    threads = [threading.Thread(target=store, args=(part,)) for part in halves] + [threading.Thread(target=heartbeat)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join()
    done.set()
    threads[2].join()
    assert errors == []
    expected = bars.drop(columns="status").sort_values(BAR_KEY, ignore_index=True)
    pd.testing.assert_frame_equal(read_bars(url), expected, check_dtype=False, check_exact=True)
    assert beats > 0 and read_job(url, job)["rows_written"] == beats - 1
