"""Trading calendars and gaps: a weekend and an exchange holiday are no gaps, a missing hour on a
trading day is one with its exact range. Expected values are hand-worked from the NYSE
calendar of 2012 (July 4 holiday, July 3 early close at 13:00 ET) and the issue's rule
(2 x timeframe + 5 minutes), not from the code. The bars are SYNTHETIC (tests/prepaper.py).

    Fri 06-29     Sat Sun    Mon 07-02       Tue 07-03     Wed 07-04   Thu 07-05
    09:30-16:00   (weekend)  09:30-16:00     09:30-13:00   (holiday)   09:30-16:00
                             14:00-15:00 ET
                             missing (test 2)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pre_paper.cache import HistoryCache
from pre_paper.calendars import trading_calendar
from pre_paper.history import HistoryStatus, assess
from pre_paper.loader import ensure_history
from tests.prepaper import MINUTE, stamp, synthetic_bars, take

NY = "America/New_York"


@pytest.fixture(scope="module")
def xnys():
    return trading_calendar("XNYS")


def week(xnys) -> dict[str, np.ndarray]:
    return synthetic_bars(xnys, "1m", stamp("2012-06-29T00:00:00-04:00"), stamp("2012-07-06T00:00:00-04:00"))


def cached(tmp_path, bars, symbol="AMZN", tz=NY) -> HistoryCache:
    cache = HistoryCache(tmp_path / "cache.db")
    cache.append(symbol, "1m", tz, bars, "historical", 0)
    return cache


def test_nyse_slots_follow_the_sessions(xnys):
    ts = week(xnys)["ts"]
    per_day = pd.Series(1, index=pd.to_datetime(ts, utc=True).tz_convert(NY).date).groupby(level=0).sum()
    assert {str(d): int(n) for d, n in per_day.items()} == {
        "2012-06-29": 390, "2012-07-02": 390, "2012-07-03": 210, "2012-07-05": 390,  # 13:00 early close; July 4 absent
    }  # fmt: skip
    # DST: the session opens at 13:30 UTC in June, 14:30 UTC in January
    assert xnys.slots_between("1m", stamp("2012-01-03T00:00:00Z"), stamp("2012-01-04T00:00:00Z"))[0] == stamp("2012-01-03T14:30:00Z")
    # 1h bars are epoch-aligned: 13:00 UTC holds 13:30-14:00; seven a day (13:00 .. 19:00 UTC)
    hours = xnys.slots_between("1h", stamp("2012-07-02T00:00:00Z"), stamp("2012-07-03T00:00:00Z"))
    assert [pd.Timestamp(t, tz="UTC").hour for t in hours] == [13, 14, 15, 16, 17, 18, 19]
    # 1d bars are the sessions' opens
    days = xnys.slots_between("1d", stamp("2012-06-29T00:00:00Z"), stamp("2012-07-06T00:00:00Z"))
    assert [pd.Timestamp(t, tz="UTC").isoformat() for t in days] == [
        "2012-06-29T13:30:00+00:00", "2012-07-02T13:30:00+00:00", "2012-07-03T13:30:00+00:00", "2012-07-05T13:30:00+00:00",
    ]  # fmt: skip


def test_a_weekend_and_an_exchange_holiday_are_not_gaps(tmp_path, xnys):
    bars = week(xnys)
    cache = cached(tmp_path, bars)
    result = ensure_history("AMZN", "1m", "1m", pd.Timestamp("2012-06-29T09:30:00-04:00"), pd.Timestamp("2012-07-05T16:00:00-04:00"),
                            None, calendar="XNYS", cache=cache)  # fmt: skip
    assert result.status is HistoryStatus.SUFFICIENT and result.gaps == [] and result.reason is None
    assert result.bars_in_window == 390 * 3 + 210
    # the N most recent bars across the holiday and the early close: Thursday's first 30
    # minutes, then Tuesday's last bars (12:49 .. 12:59 ET), no gap between them
    result = ensure_history("AMZN", "1m", "1m", None, pd.Timestamp("2012-07-05T10:00:00-04:00"), None, calendar="XNYS",
                            cache=cache, required_bars=41)  # fmt: skip
    assert result.status is HistoryStatus.SUFFICIENT
    assert result.required_start_ts == pd.Timestamp("2012-07-03T12:49:00-04:00")
    assert result.cached_end_ts == pd.Timestamp("2012-07-05T09:59:00-04:00")


def test_a_missing_hour_on_a_trading_day_is_a_gap_with_its_exact_range(tmp_path, xnys):
    bars = week(xnys)
    hole = (bars["ts"] >= stamp("2012-07-02T14:00:00-04:00")) & (bars["ts"] < stamp("2012-07-02T15:00:00-04:00"))
    assert hole.sum() == 60
    cache = cached(tmp_path, take(bars, ~hole))
    result = ensure_history("AMZN", "1m", "1m", pd.Timestamp("2012-06-29T09:30:00-04:00"), pd.Timestamp("2012-07-05T16:00:00-04:00"),
                            None, calendar="XNYS", cache=cache)  # fmt: skip
    assert result.status is HistoryStatus.DEGRADED
    assert [g.to_dict() for g in result.gaps] == [{"start": "2012-07-02T14:00:00-04:00", "end": "2012-07-02T15:00:00-04:00"}]
    assert result.to_dict()["gaps"] == [{"start": "2012-07-02T14:00:00-04:00", "end": "2012-07-02T15:00:00-04:00"}]
    assert result.reason.startswith("insufficient history") and "auto_backfill is off" in result.reason


def test_the_tolerance_separates_quiet_minutes_from_gaps(xnys):
    # 2 x 1m + 300 s = 420 s: bars 10:00 and 10:07 ET (6 quiet minutes) are 420 s apart, no
    # gap; 10:00 and 10:08 (7 missing) are 480 s apart, a gap of exactly 10:01 .. 10:08.
    minutes = stamp("2012-07-02T09:30:00-04:00") + MINUTE * np.arange(60)
    quiet = np.r_[minutes[:31], minutes[37:]]  # 10:01 .. 10:06 missing
    gap = np.r_[minutes[:31], minutes[38:]]  # 10:01 .. 10:07 missing
    now = stamp("2012-07-02T10:30:00-04:00")
    start = stamp("2012-07-02T09:30:00-04:00")
    assert assess(quiet, xnys, "1m", now, start=start).status is HistoryStatus.SUFFICIENT
    found = assess(gap, xnys, "1m", now, start=start)
    assert found.gaps == [(stamp("2012-07-02T10:01:00-04:00"), stamp("2012-07-02T10:08:00-04:00"))]


def test_outdated_is_trading_time_not_wall_time(xnys):
    bars = stamp("2012-07-02T09:30:00-04:00") + MINUTE * np.arange(90)  # 09:30 .. 10:59 ET
    start = stamp("2012-07-02T09:30:00-04:00")
    # 11:07 ET: the 10:59 bar opened 8 minutes of trading ago (> 7): outdated
    late = assess(bars, xnys, "1m", stamp("2012-07-02T11:07:00-04:00"), start=start)
    assert late.outdated and late.status is HistoryStatus.DEGRADED and late.reason.startswith("outdated history")
    # 11:06 ET: 7 minutes, not more: fine
    assert not assess(bars, xnys, "1m", stamp("2012-07-02T11:06:00-04:00"), start=start).outdated
    # the last bar of a Friday is not outdated on Saturday, nor at Monday's open (1 minute of trading later)
    friday = stamp("2012-06-29T09:30:00-04:00") + MINUTE * np.arange(390)
    for now in ("2012-06-30T12:00:00-04:00", "2012-07-02T09:31:00-04:00"):
        assert not assess(friday, xnys, "1m", stamp(now), required=41).outdated


def test_crypto_trades_around_the_clock_so_a_silent_weekend_hour_is_a_gap(tmp_path):
    always = trading_calendar("24/7")
    bars = synthetic_bars(always, "1m", stamp("2020-02-22T00:00:00Z"), stamp("2020-02-22T06:00:00Z"))
    hole = (bars["ts"] >= stamp("2020-02-22T02:00:00Z")) & (bars["ts"] < stamp("2020-02-22T03:00:00Z"))  # a Saturday
    cache = cached(tmp_path, take(bars, ~hole), "BTCUSDT", "UTC")
    result = ensure_history("BTCUSDT", "1m", "1m", pd.Timestamp("2020-02-22T00:00:00Z"), pd.Timestamp("2020-02-22T06:00:00Z"),
                            None, calendar="24/7", cache=cache)  # fmt: skip
    assert [g.to_dict() for g in result.gaps] == [{"start": "2020-02-22T02:00:00+00:00", "end": "2020-02-22T03:00:00+00:00"}]


def test_an_unknown_calendar_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown trading calendar 'NYSEX'"):
        trading_calendar("NYSEX")
