"""Watermark generation for sources: exact in replay, bounded-lateness in live.

A source asks its :class:`WatermarkGenerator` after each batch. The watermark is the
largest event time seen minus ``allowed_lateness_ns`` (ticks up to that much out of
order are still on time, as in Flink's ``BoundedOutOfOrdernessWatermarks``); with the
default lateness 0 a replay's watermark is exact. Live only: when the feed has been
idle for ``idle_timeout_ns`` of wall time, the watermark also advances with the wall
clock (wall now - allowed lateness), so a quiet symbol still confirms its bars.
Watermarks never go backwards.
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
                and wall_ns - self._last_seen_wall >= self.idle_timeout_ns
            )
            if idle:
                candidate = max(candidate, wall_ns - self.allowed_lateness_ns)
        if self._current is None or candidate > self._current:
            self._current = candidate
        return self._current
