"""The market clock: what time it is for a source, and the watermarks that follow from it.

A :class:`MarketClock` has two modes:

* ``LIVE`` follows the wall clock it is given (``OperatorContext.clock_ns``); a live
  feed's watermark is the largest event time seen minus the allowed lateness, and after
  ``idle_timeout_ns`` of wall time without ticks it follows the wall clock instead
  (``wall - allowed lateness``), so a quiet symbol still confirms its bars.
* ``VIRTUAL`` keeps its own time, driven by the data: :meth:`~MarketClock.observe` moves
  it forward to the newest event time emitted, :meth:`~MarketClock.advance` and
  :meth:`~MarketClock.seek` move it explicitly, and with ``speed > 0`` it also runs at
  ``speed`` virtual nanoseconds per wall nanosecond (a paced replay: 1.0 is real time,
  10.0 ten times faster). Its watermarks are exact: the largest event time emitted
  minus the allowed lateness, never moved by the wall clock, so a replay's output does
  not depend on how fast it runs.

Both modes can be frozen: a frozen clock does not move by itself (LIVE: pinned at the
wall time of :meth:`~MarketClock.freeze`; VIRTUAL: the speed-driven flow stops, as when
a replay is paused), while explicit :meth:`~MarketClock.advance`/:meth:`~MarketClock.seek`
still work. That gives tests a step-through mode without sleeping: freeze the clock,
let the source ask :meth:`~MarketClock.due` for its next deadline, and call
:meth:`~MarketClock.step` to jump exactly to it::

    clock = MarketClock(ClockMode.VIRTUAL, wall_clock_ns=fake_wall, speed=1.0)
    clock.freeze()
    clock.due(t1)        # False: t1 is in the future; t1 is now the pending deadline
    clock.step()         # -> t1: virtual time jumps to the deadline
    clock.due(t1)        # True

Why no clock *node*: watermarks travel in-band, in the same FIFO stream as the ticks they
follow (``graph/runtime.py``). A separate clock actor injecting watermarks into the graph
could overtake ticks still in flight from the source and turn on-time ticks into late
ones; so each source (the replayer, every live feed) owns its ``MarketClock``, and the
watermark leaves the source right behind the data it covers. Times are int64 ns UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from graph.watermarks import WatermarkGenerator

__all__ = ["ClockMode", "MarketClock"]


class ClockMode(str, enum.Enum):
    """How a :class:`MarketClock` tells time."""

    LIVE = "live"  #: follows the wall clock
    VIRTUAL = "virtual"  #: driven by the data (and by ``speed``, advance, seek)


class MarketClock:
    """A LIVE or VIRTUAL clock for one source, with its watermark generator.

    Args:
        mode: :class:`ClockMode` (or its value ``"live"`` / ``"virtual"``).
        wall_clock_ns: the wall clock, int64 ns UTC (``OperatorContext.clock_ns``);
            required for LIVE and for VIRTUAL with ``speed > 0``; tests inject a fake.
        speed: VIRTUAL only: virtual ns per wall ns while running; 0 (the default) means
            the clock moves only with the data, :meth:`advance` and :meth:`seek`.
        start_ns: VIRTUAL only: the initial virtual time (int64 ns UTC), default 0.
        allowed_lateness_ns: watermark = newest event time seen minus this (ns, >= 0).
        idle_timeout_ns: LIVE only: wall ns without ticks after which the watermark
            follows the wall clock; None disables the idle advance.

    Raises:
        ValueError: unknown mode, negative speed, or a missing wall clock where one is needed.
    """

    def __init__(
        self,
        mode: ClockMode | str = ClockMode.VIRTUAL,
        *,
        wall_clock_ns: Callable[[], int] | None = None,
        speed: float = 0.0,
        start_ns: int = 0,
        allowed_lateness_ns: int = 0,
        idle_timeout_ns: int | None = None,
    ) -> None:
        try:
            self.mode = ClockMode(mode)
        except ValueError:
            raise ValueError(f"clock mode must be 'live' or 'virtual', got {mode!r}") from None
        if not speed >= 0:  # also rejects NaN
            raise ValueError(f"clock speed must be >= 0 (0 = driven by the data only), got {speed!r}")
        if self.mode is ClockMode.LIVE and speed:
            raise ValueError("a LIVE clock runs at the wall clock's speed; speed is for VIRTUAL clocks")
        if wall_clock_ns is None and (self.mode is ClockMode.LIVE or speed > 0):
            what = "a LIVE clock" if self.mode is ClockMode.LIVE else f"a VIRTUAL clock with speed {speed}"
            raise ValueError(f"{what} needs a wall clock (wall_clock_ns)")
        self._wall = wall_clock_ns
        self.speed = float(speed)
        self._base = int(start_ns)  # virtual time at the anchor
        self._base_wall = wall_clock_ns() if wall_clock_ns is not None else 0  # wall time at the anchor
        self._frozen_at: int | None = None
        self._deadline: int | None = None
        live = self.mode is ClockMode.LIVE
        self.watermarks = WatermarkGenerator(
            mode="live" if live else "replay",
            allowed_lateness_ns=allowed_lateness_ns,
            idle_timeout_ns=idle_timeout_ns if live else None,
        )

    # -- time ---------------------------------------------------------------------------
    def now_ns(self) -> int:
        """The clock's time now, int64 ns UTC."""
        if self._frozen_at is not None:
            return self._frozen_at
        if self.mode is ClockMode.LIVE:
            return self._wall()  # type: ignore[misc]
        if self.speed > 0:
            return self._base + int((self._wall() - self._base_wall) * self.speed)  # type: ignore[misc]
        return self._base

    @property
    def frozen(self) -> bool:
        """True between :meth:`freeze` and :meth:`unfreeze`."""
        return self._frozen_at is not None

    def freeze(self) -> None:
        """Stop the clock where it is (a paused replay; a step-through test). Idempotent."""
        if self._frozen_at is None:
            self._frozen_at = self.now_ns()

    def unfreeze(self) -> None:
        """Let the clock run again. Idempotent.

        LIVE: it follows the wall clock again (it tells the true time). VIRTUAL: it
        resumes from the frozen time, so the time spent frozen is skipped, not caught up.
        """
        if self._frozen_at is None:
            return
        if self.mode is ClockMode.VIRTUAL:
            self._anchor(self._frozen_at)
        self._frozen_at = None

    def advance(self, dt_ns: int) -> int:
        """Move VIRTUAL time forward by ``dt_ns`` (also while frozen); returns the new time.

        Raises:
            ValueError: a LIVE clock (it follows the wall clock), or ``dt_ns < 0``.
        """
        self._require_virtual("advance")
        if dt_ns < 0:
            raise ValueError(f"advance(dt_ns): dt_ns must be >= 0 (virtual time never runs backwards), got {dt_ns}")
        return self.seek(self.now_ns() + int(dt_ns))

    def seek(self, ts: int) -> int:
        """Set VIRTUAL time to ``ts`` (int64 ns UTC, >= now; also while frozen); returns it.

        Raises:
            ValueError: a LIVE clock, or ``ts`` before the current time.
        """
        self._require_virtual("seek")
        now = self.now_ns()
        if ts < now:
            raise ValueError(f"seek({ts}): before the clock's time {now}; virtual time never runs backwards")
        if self._frozen_at is not None:
            self._frozen_at = int(ts)
        else:
            self._anchor(int(ts))
        if self._deadline is not None and self._deadline <= ts:
            self._deadline = None
        return int(ts)

    # -- deadlines (pacing, step-through) --------------------------------------------------
    def due(self, ts: int) -> bool:
        """Whether the clock has reached ``ts``; if not, ``ts`` becomes the pending deadline.

        The pending deadline is the earliest ``ts`` asked about and not yet reached;
        :meth:`step` jumps to it.
        """
        if self.now_ns() >= ts:
            return True
        if self._deadline is None or ts < self._deadline:
            self._deadline = int(ts)
        return False

    def wall_wait_ns(self, ts: int) -> int | None:
        """Wall ns until the clock reaches ``ts``: 0 if it has; None if it will not move by
        itself (frozen, or a VIRTUAL clock with speed 0)."""
        remaining = ts - self.now_ns()
        if remaining <= 0:
            return 0
        if self.frozen:
            return None
        if self.mode is ClockMode.LIVE:
            return remaining
        if self.speed == 0:
            return None
        return max(1, int(remaining / self.speed))

    @property
    def deadline(self) -> int | None:
        """The pending deadline (see :meth:`due`), or None."""
        return self._deadline

    def step(self) -> int | None:
        """Step-through: VIRTUAL time jumps to the pending deadline; returns it (None if none).

        Raises:
            ValueError: a LIVE clock.
        """
        self._require_virtual("step")
        target = self._deadline
        if target is None:
            return None
        self.seek(max(target, self.now_ns()))
        return target

    # -- watermarks ---------------------------------------------------------------------
    def observe(self, max_ts: int) -> None:
        """Record that ticks up to event time ``max_ts`` (int64 ns UTC) were emitted.

        VIRTUAL: the clock moves forward to ``max_ts`` if behind (driven by the data).
        LIVE: the wall time of the observation resets the idle timer.
        """
        if self.mode is ClockMode.VIRTUAL:
            if max_ts > self.now_ns():
                self.seek(int(max_ts))
            self.watermarks.observe(int(max_ts))
        else:
            self.watermarks.observe(int(max_ts), wall_ns=self.now_ns())

    def watermark(self) -> int | None:
        """The watermark now (int64 ns UTC; None before any tick), never lower than before.

        VIRTUAL: newest event time observed minus the allowed lateness (exact with 0).
        LIVE: the same, or ``now - allowed lateness`` once idle for ``idle_timeout_ns``.
        """
        if self.mode is ClockMode.VIRTUAL:
            return self.watermarks.current()
        return self.watermarks.current(wall_ns=self.now_ns())

    # -- internals ----------------------------------------------------------------------
    def _anchor(self, virtual_ns: int) -> None:
        self._base = virtual_ns
        if self._wall is not None:
            self._base_wall = self._wall()

    def _require_virtual(self, what: str) -> None:
        if self.mode is not ClockMode.VIRTUAL:
            raise ValueError(f"{what}(): a LIVE clock follows the wall clock; use a VIRTUAL clock to move time")

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else "running"
        return f"MarketClock(mode={self.mode.value}, speed={self.speed}, now_ns={self.now_ns()}, {state})"
