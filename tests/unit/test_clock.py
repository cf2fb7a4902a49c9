"""MarketClock without Ray and without sleeping: injected wall clocks, hand-worked timelines.

Times in the timelines are seconds; the clock works in int ns (``S`` = 1 s).
"""

from __future__ import annotations

import pytest

from actors.clock import ClockMode, MarketClock

S = 1_000_000_000


class FakeWall:
    """A wall clock that moves only when told to (int ns)."""

    def __init__(self, now: int = 1_000 * S) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def sleep(self, ns: int) -> None:
        self.now += ns


# ----------------------------------------------------------------------------- VIRTUAL


def test_virtual_clock_moves_only_by_advance_seek_and_data():
    clock = MarketClock(ClockMode.VIRTUAL, start_ns=100 * S)
    assert clock.now_ns() == 100 * S
    assert clock.advance(5 * S) == 105 * S == clock.now_ns()
    assert clock.seek(200 * S) == 200 * S
    clock.observe(150 * S)  # older data does not move it back
    assert clock.now_ns() == 200 * S
    clock.observe(250 * S)  # newer data drives it forward
    assert clock.now_ns() == 250 * S


def test_virtual_time_never_runs_backwards():
    clock = MarketClock("virtual", start_ns=10 * S)
    with pytest.raises(ValueError, match=r"seek\(5000000000\): before the clock's time 10000000000"):
        clock.seek(5 * S)
    with pytest.raises(ValueError, match="dt_ns must be >= 0"):
        clock.advance(-1)
    assert clock.now_ns() == 10 * S


def test_virtual_clock_at_speed_follows_the_wall_clock_scaled():
    # wall (s):     1000    1001    1003
    # virtual (s):  50      60      80      (speed 10 after seek(50) at wall 1000)
    wall = FakeWall(1_000 * S)
    clock = MarketClock(ClockMode.VIRTUAL, wall_clock_ns=wall, speed=10.0)
    clock.seek(50 * S)
    wall.now += 1 * S
    assert clock.now_ns() == 60 * S
    wall.now += 2 * S
    assert clock.now_ns() == 80 * S
    assert clock.wall_wait_ns(100 * S) == 2 * S  # 20 virtual s at speed 10
    assert clock.wall_wait_ns(80 * S) == 0


def test_freeze_stops_a_running_clock_and_unfreeze_resumes_without_catching_up():
    # wall (s):     1000   1002 freeze   1010 unfreeze   1011
    # virtual (s):  0      2             2               3      (speed 1)
    wall = FakeWall(1_000 * S)
    clock = MarketClock(ClockMode.VIRTUAL, wall_clock_ns=wall, speed=1.0, start_ns=0)
    wall.now += 2 * S
    clock.freeze()
    assert clock.frozen and clock.now_ns() == 2 * S
    wall.now += 8 * S
    assert clock.now_ns() == 2 * S
    assert clock.wall_wait_ns(3 * S) is None  # a frozen clock never gets there by itself
    clock.advance(S // 2)  # explicit moves still work while frozen
    assert clock.now_ns() == 2 * S + S // 2
    clock.unfreeze()
    wall.now += 1 * S
    assert not clock.frozen and clock.now_ns() == 3 * S + S // 2
    clock.unfreeze()  # idempotent
    assert clock.now_ns() == 3 * S + S // 2


def test_step_through_jumps_to_the_earliest_pending_deadline():
    wall = FakeWall()
    clock = MarketClock(ClockMode.VIRTUAL, wall_clock_ns=wall, speed=1.0, start_ns=10 * S)
    clock.freeze()
    assert clock.step() is None  # nothing asked yet
    assert not clock.due(13 * S) and not clock.due(12 * S)
    assert clock.deadline == 12 * S
    assert clock.step() == 12 * S and clock.now_ns() == 12 * S
    assert clock.due(12 * S) and not clock.due(13 * S)
    assert clock.step() == 13 * S and clock.due(13 * S)
    assert clock.deadline is None


def test_a_speed_zero_virtual_clock_never_reaches_a_deadline_by_itself():
    clock = MarketClock(ClockMode.VIRTUAL)
    assert not clock.due(S)
    assert clock.wall_wait_ns(S) is None


def test_replay_watermarks_are_exact_or_lag_by_the_allowed_lateness():
    exact = MarketClock(ClockMode.VIRTUAL)
    assert exact.watermark() is None
    exact.observe(10 * S)
    exact.observe(7 * S)  # an out-of-order batch never moves the watermark back
    assert exact.watermark() == 10 * S
    lagging = MarketClock(ClockMode.VIRTUAL, allowed_lateness_ns=2 * S, idle_timeout_ns=1)
    lagging.observe(10 * S)
    lagging.advance(1_000 * S)  # virtual time passing is no idle advance: replay is exact
    assert lagging.watermark() == 8 * S


# ----------------------------------------------------------------------------- LIVE


def test_live_clock_follows_the_wall_clock_and_freezes():
    wall = FakeWall(5 * S)
    clock = MarketClock(ClockMode.LIVE, wall_clock_ns=wall)
    assert clock.now_ns() == 5 * S
    wall.now = 7 * S
    assert clock.now_ns() == 7 * S
    clock.freeze()
    wall.now = 9 * S
    assert clock.now_ns() == 7 * S
    clock.unfreeze()  # a live clock tells the true time again
    assert clock.now_ns() == 9 * S
    for move in (lambda: clock.advance(1), lambda: clock.seek(10 * S), clock.step):
        with pytest.raises(ValueError, match="a LIVE clock follows the wall clock"):
            move()


def test_live_watermark_lags_then_advances_with_the_wall_clock_when_idle():
    # allowed lateness 2 s, idle timeout 5 s; event time ~ wall time
    #   wall (s):   1000     1001     1004      1006        1030
    #   ticks:      ts=1000  ts=1001  (quiet)   (quiet)     (quiet)
    #   watermark:  998      999      999       1004        1028   (idle: wall - 2)
    wall = FakeWall(1_000 * S)
    clock = MarketClock(ClockMode.LIVE, wall_clock_ns=wall, allowed_lateness_ns=2 * S, idle_timeout_ns=5 * S)
    assert clock.watermark() is None
    clock.observe(1_000 * S)
    assert clock.watermark() == 998 * S
    wall.now = 1_001 * S
    clock.observe(1_001 * S)
    assert clock.watermark() == 999 * S
    wall.now = 1_004 * S
    assert clock.watermark() == 999 * S  # quiet for 3 s < 5 s
    wall.now = 1_006 * S
    assert clock.watermark() == 1_004 * S  # quiet for 5 s: follows the wall clock
    wall.now = 1_030 * S
    assert clock.watermark() == 1_028 * S
    clock.observe(1_010 * S)  # a straggler arrives: the watermark never goes back
    assert clock.watermark() == 1_028 * S


def test_a_frozen_live_clock_does_not_idle_advance():
    wall = FakeWall(1_000 * S)
    clock = MarketClock(ClockMode.LIVE, wall_clock_ns=wall, idle_timeout_ns=5 * S)
    clock.observe(1_000 * S)
    clock.freeze()
    wall.now = 2_000 * S
    assert clock.watermark() == 1_000 * S
    clock.unfreeze()
    assert clock.watermark() == 2_000 * S


def test_live_without_idle_timeout_never_idles():
    wall = FakeWall(1_000 * S)
    clock = MarketClock(ClockMode.LIVE, wall_clock_ns=wall, allowed_lateness_ns=S)
    clock.observe(1_000 * S)
    wall.now = 9_000 * S
    assert clock.watermark() == 999 * S


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "wall"}, "clock mode must be 'live' or 'virtual', got 'wall'"),
        ({"mode": "live"}, "a LIVE clock needs a wall clock"),
        ({"mode": "virtual", "speed": 2.0}, "a VIRTUAL clock with speed 2.0 needs a wall clock"),
        ({"mode": "virtual", "speed": -1.0}, "speed must be >= 0"),
        ({"mode": "virtual", "speed": float("nan")}, "speed must be >= 0"),
        ({"mode": "live", "speed": 1.0, "wall_clock_ns": FakeWall()}, "speed is for VIRTUAL clocks"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MarketClock(**kwargs)
