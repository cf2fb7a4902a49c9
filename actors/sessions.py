"""Trading sessions: which ``1d`` bar a trade belongs to, in the instrument's time zone.

A :class:`Session` is a daily window ``[open, close)`` of local wall-clock time in an
IANA time zone (``America/New_York 09:30-16:00``). The ``1d`` bar of a local trading
date ``D`` opens at ``D open`` and ends at ``D close``, both converted to UTC with
:mod:`zoneinfo`, so the bar follows daylight-saving time: the New York session opens
at 13:30 UTC in summer and at 14:30 UTC in winter. ``close = "24:00"`` means the next
local midnight, so the default session (UTC, 00:00-24:00) gives calendar-day bars.

Local times that do not exist (the spring-forward gap) or exist twice (the fall-back
hour) resolve like :pep:`495` ``fold=0``: a time in the gap is shifted forward by the
gap length, a repeated time means its first occurrence.

:class:`SessionCalendar` maps int64 ns timestamps to sessions with numpy, caching the
boundaries of each local date it has seen, so the per-tick cost is one
``np.searchsorted``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

__all__ = ["DEFAULT_SESSION", "Session", "SessionCalendar"]

_HHMM = re.compile(r"^(\d{2}):(\d{2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NS_PER_US = 1_000
_MINUTES_PER_DAY = 24 * 60


def _minutes(value: str) -> int:
    """Minutes after local midnight of an ``HH:MM`` string (``24:00`` -> 1440)."""
    hours, minutes = _HHMM.match(value).groups()  # type: ignore[union-attr]
    return int(hours) * 60 + int(minutes)


class Session(BaseModel):
    """A daily trading session in local exchange time.

    Attributes:
        tz: IANA time zone name, e.g. ``America/New_York``.
        open: local session open ``HH:MM`` (00:00 to 23:59).
        close: local session close ``HH:MM`` (00:01 to 24:00, ``24:00`` = next midnight);
            must be after ``open`` (overnight sessions are not supported).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tz: str = "UTC"
    open: str = "00:00"
    close: str = "24:00"

    @field_validator("tz")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(
                f"{value!r} is not a known IANA time zone (e.g. 'America/New_York', 'UTC')"
            ) from e
        return value

    @field_validator("open", "close")
    @classmethod
    def _check_time(cls, value: str, info: ValidationInfo) -> str:
        match = _HHMM.match(value)
        limit = _MINUTES_PER_DAY if info.field_name == "close" else _MINUTES_PER_DAY - 1
        if match is None or int(match[2]) > 59 or _minutes(value) > limit:
            allowed = "00:00 to 24:00" if info.field_name == "close" else "00:00 to 23:59"
            raise ValueError(f"{value!r} is not a time HH:MM from {allowed}")
        return value

    @model_validator(mode="after")
    def _check_order(self) -> Session:
        if _minutes(self.close) <= _minutes(self.open):
            raise ValueError(
                f"session close {self.close} must be after open {self.open} "
                "(overnight sessions are not supported)"
            )
        return self


#: 00:00 to 24:00 UTC: calendar-day bars, every trade in session.
DEFAULT_SESSION = Session()


class SessionCalendar:
    """Session boundaries of one :class:`Session`, vectorised over int64 ns timestamps.

    Args:
        session: the session to compute.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._zone = ZoneInfo(session.tz)
        self._open_minutes = _minutes(session.open)
        self._close_minutes = _minutes(session.close)
        self._days: dict[date, tuple[int, int, int]] = {}

    def _local_ns(self, day: date, minutes: int) -> int:
        """UTC ns of local wall time ``day`` + ``minutes`` (fold=0 for gaps and repeats)."""
        # Same-zone aware arithmetic is wall-clock arithmetic; the offset applies at the end.
        wall = datetime.combine(day, time(), tzinfo=self._zone) + timedelta(minutes=minutes)
        return (wall - _EPOCH) // timedelta(microseconds=1) * _NS_PER_US

    def day(self, local_date: date) -> tuple[int, int, int]:
        """Boundaries of one local date, cached.

        Args:
            local_date: a date in the session's time zone.

        Returns:
            ``(midnight, open, close)``: int ns UTC of the date's local midnight,
            session open and session close.
        """
        bounds = self._days.get(local_date)
        if bounds is None:
            bounds = (
                self._local_ns(local_date, 0),
                self._local_ns(local_date, self._open_minutes),
                self._local_ns(local_date, self._close_minutes),
            )
            self._days[local_date] = bounds
        return bounds

    def local_date(self, ts: int) -> date:
        """The local date of ``ts`` (int ns UTC) in the session's time zone."""
        return datetime.fromtimestamp(ts // 1_000_000_000, timezone.utc).astimezone(self._zone).date()

    def locate(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The session of each timestamp's local date.

        Args:
            ts: int64 ns UTC, shape (n,), n >= 1, any order.

        Returns:
            ``(open, close, in_session)``: int64 ns UTC session open and close of each
            tick's local date, shape (n,), and a bool mask ``open <= ts < close``.
        """
        first, last = self.local_date(int(ts.min())), self.local_date(int(ts.max()))
        bounds = np.array(
            [self.day(first + timedelta(days=k)) for k in range((last - first).days + 1)],
            dtype=np.int64,
        )
        if len(bounds) == 1:
            opens = np.full(len(ts), bounds[0, 1], dtype=np.int64)
            closes = np.full(len(ts), bounds[0, 2], dtype=np.int64)
        else:
            index = np.maximum(np.searchsorted(bounds[:, 0], ts, side="right") - 1, 0)
            opens, closes = bounds[index, 1], bounds[index, 2]
        return opens, closes, (ts >= opens) & (ts < closes)
