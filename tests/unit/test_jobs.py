"""job_runs bookkeeping: a row per job from running to its final status."""

from __future__ import annotations

import pytest

from db.jobs import finish_job, read_job, start_job


def test_a_job_goes_from_running_to_completed(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    ticks = iter([1_000, 5_000])
    job = start_job(url, "replay", provider="lobster", symbols=["AMZN"], clock_ns=lambda: next(ticks))
    row = read_job(url, job)
    assert row["status"] == "running" and row["started_at"] == 1_000 and row["symbols"] == ["AMZN"]
    finish_job(url, job, "completed", rows_written=57_515, min_ts=10, max_ts=20, clock_ns=lambda: 5_000)
    row = read_job(url, job)
    assert (row["status"], row["rows_written"], row["min_ts"], row["max_ts"], row["completed_at"]) == (
        "completed", 57_515, 10, 20, 5_000,
    )  # fmt: skip


def test_failed_job_keeps_its_error_and_bad_status_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    job = start_job(url, "export")
    finish_job(url, job, "failed", error_message="file vanished: x.csv")
    assert read_job(url, job)["error_message"] == "file vanished: x.csv"
    with pytest.raises(ValueError, match="final job status"):
        finish_job(url, job, "running")
    with pytest.raises(Exception, match="no job with id 'nope'"):
        finish_job(url, "nope", "cancelled")
