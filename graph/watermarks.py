"""Watermark generation for sources: exact in replay, bounded-lateness in live.

A source asks its :class:`WatermarkGenerator` after each batch. The watermark is the
largest event time seen minus ``allowed_lateness_ns`` (ticks up to that much out of
order are still on time, as in Flink's ``BoundedOutOfOrdernessWatermarks``); with the
default lateness 0 a replay's watermark is exact. Live only: when the feed has been
idle for ``idle_timeout_ns`` of wall time, the watermark also advances by the wall time
elapsed since the newest event was seen (``max_ts - lateness + (wall now - wall at
max_ts)``, as Bytewax's ``EventClock`` does), so a quiet feed still confirms its bars.
It does not jump to the absolute wall clock: a feed whose ticks arrive, say, 2 s after
their event time would then make the first tick after every lull late through latency
alone; advancing by elapsed time, a tick is late only if it arrives more than the allowed
lateness *later than the newest tick did*. Watermarks never go backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WatermarkGenerator"]


@dataclass
class WatermarkGenerator:
    """Watermarks from observed event times (int64 ns UTC).

    Attributes:
        mode: ``"replay"`` or ``"live"`` (live adds the idle advance).
        allowed_lateness_ns: how far behind the newest tick a tick may be and be on time.
        idle_timeout_ns: live only: wall time without ticks after which the watermark
            follows the wall clock; None disables idle advance.
    """

    mode: str = "replay"
    allowed_lateness_ns: int = 0
    idle_timeout_ns: int | None = None
    _max_ts: int | None = field(default=None, init=False)
    _max_wall: int | None = field(default=None, init=False)  # wall time when _max_ts was seen
    _last_seen_wall: int | None = field(default=None, init=False)
    _current: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.mode not in ("replay", "live"):
            raise ValueError(f"watermark mode must be 'replay' or 'live', got {self.mode!r}")
        if self.allowed_lateness_ns < 0:
            raise ValueError(f"allowed_lateness_ns must be >= 0, got {self.allowed_lateness_ns}")

    def observe(self, max_ts: int, wall_ns: int | None = None) -> None:
        """Record that ticks up to event time ``max_ts`` were emitted (at wall time ``wall_ns``)."""
        if self._max_ts is None or max_ts > self._max_ts:
            self._max_ts = int(max_ts)
            self._max_wall = wall_ns
        if wall_ns is not None:
            self._last_seen_wall = wall_ns

    def current(self, wall_ns: int | None = None) -> int | None:
        """The watermark now (None before any tick), never lower than a previous answer."""
        if self._max_ts is None:
            return self._current
        candidate = self._max_ts - self.allowed_lateness_ns
        if self.mode == "live":
            idle = (
                self.idle_timeout_ns is not None
                and wall_ns is not None
                and self._last_seen_wall is not None
                and self._max_wall is not None
                and wall_ns - self._last_seen_wall >= self.idle_timeout_ns
            )
            if idle:
                candidate += wall_ns - self._max_wall
        if self._current is None or candidate > self._current:
            self._current = candidate
        return self._current
