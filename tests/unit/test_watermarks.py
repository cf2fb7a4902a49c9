"""Watermark generation: exact in replay; bounded lateness and idle advance in live.

Live, allowed lateness 2 s, idle timeout 5 s (times in seconds):

    wall:   0      1      2        ...      8        9
    ticks:  ts=100 ts=103 ts=101 (late ok)  (quiet)  (quiet)
    wm:     98     101    101               101      idle 7 s since ts=103 was seen: 101 + 8 = 109
"""

from __future__ import annotations

import pytest

from graph.watermarks import WatermarkGenerator

S = 1_000_000_000


def test_replay_watermark_is_the_max_event_time():
    w = WatermarkGenerator("replay")
    assert w.current() is None
    w.observe(10)
    w.observe(7)  # an out-of-order batch never moves the watermark back
    assert w.current() == 10


def test_live_watermark_lags_by_the_allowed_lateness_and_never_decreases():
    w = WatermarkGenerator("live", allowed_lateness_ns=2 * S, idle_timeout_ns=5 * S)
    w.observe(100 * S, wall_ns=0)
    assert w.current(wall_ns=0) == 98 * S
    w.observe(103 * S, wall_ns=1 * S)
    assert w.current(wall_ns=1 * S) == 101 * S
    w.observe(101 * S, wall_ns=2 * S)
    assert w.current(wall_ns=2 * S) == 101 * S


def test_an_idle_live_feed_advances_by_the_wall_time_elapsed_since_its_newest_tick():
    w = WatermarkGenerator("live", allowed_lateness_ns=2 * S, idle_timeout_ns=5 * S)
    w.observe(1_000 * S, wall_ns=1_000 * S)  # event time ~ wall time, as on a live feed
    assert w.current(wall_ns=1_004 * S) == 998 * S  # quiet for 4 s < timeout: unchanged
    assert w.current(wall_ns=1_005 * S) == 1_003 * S  # idle: 998 + 5 s elapsed
    assert w.current(wall_ns=1_030 * S) == 1_028 * S
    w.observe(999 * S, wall_ns=1_031 * S)  # an older tick is not newer: the clock keeps its anchor
    assert w.current(wall_ns=1_031 * S) == 1_028 * S  # not idle any more; never backwards
    assert w.current(wall_ns=1_040 * S) == 1_038 * S  # idle again: still measured from ts=1000
    without_idle = WatermarkGenerator("live", allowed_lateness_ns=2 * S)
    without_idle.observe(1_000 * S, wall_ns=1_000 * S)
    assert without_idle.current(wall_ns=1_030 * S) == 998 * S


def test_feed_latency_alone_never_makes_the_first_tick_after_a_lull_late():
    # Ticks arrive 3 s after their event time, lateness 0.5 s. After a 20 s lull the
    # next tick (event time 1020, received at wall 1023) must be on time: the watermark
    # moved with the 20 s elapsed (999.5 + 20 = 1019.5), not to wall - lateness (1022.5).
    w = WatermarkGenerator("live", allowed_lateness_ns=S // 2, idle_timeout_ns=5 * S)
    w.observe(1_000 * S, wall_ns=1_003 * S)
    watermark = w.current(wall_ns=1_023 * S)
    assert watermark == 1_019 * S + S // 2
    assert 1_020 * S >= watermark  # on time
    # but a tick delayed 1 s more than the newest one was (jitter > lateness) is late
    assert 1_019 * S < watermark


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        WatermarkGenerator("wall")
    with pytest.raises(ValueError, match="allowed_lateness_ns"):
        WatermarkGenerator("live", allowed_lateness_ns=-1)


def test_replay_with_allowed_lateness_lags_but_never_idles():
    w = WatermarkGenerator("replay", allowed_lateness_ns=2 * S, idle_timeout_ns=5 * S)
    w.observe(100 * S, wall_ns=0)
    assert w.current(wall_ns=60 * S) == 98 * S  # replay has no idle advance
