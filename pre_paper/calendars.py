"""Trading calendars for the pre-paper history checks: which bars an instrument can have.

Sessions come from `exchange-calendars <https://github.com/gerrymanoim/exchange_calendars>`_
(``XNYS``: NYSE regular sessions, DST-correct, with early closes, weekends and exchange
holidays absent; ``24/7``: every UTC day; any other of its names, e.g. ``XLON``, ``XHKG``
with its lunch break). A session is one or two trading *segments*: ``[open, close)``, or
``[open, break_start)`` and ``[break_end, close)``.

A *slot* is the open time of a bar the instrument can have, as the bar engine stamps it
(``actors/bars.py``): intraday timeframes are aligned to the epoch (UTC), and a slot exists
when ``[slot, slot + timeframe)`` overlaps a trading segment (a 1h bar at 13:00 UTC holds
the 13:30-14:00 UTC trading of an NYSE session); a ``1d`` slot is a session's open (the
bar engine's ``1d`` ``ts``) and ends at its close. Slots are numbered consecutively from
the calendar's first session, so the bars missing between two bars are a difference of
slot indices: a weekend or a holiday between Friday's last bar and Monday's first adds
nothing.

*Trading time* ``T(t)`` is the time spent inside segments before ``t`` (int ns), so the
age of a bar in trading time does not grow overnight or on a weekend.

Every time here is int64 ns UTC.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from graph.timeframes import INTRADAY_NS

__all__ = ["ALWAYS_OPEN", "CALENDAR_START", "TradingCalendar", "trading_calendar", "check_calendar_name"]

#: The 24/7 calendar's name (crypto).
ALWAYS_OPEN = "24/7"
#: First session loaded: the default earliest plausible event time (``graph/times.py``).
CALENDAR_START = "1990-01-01"


def _ns(values: pd.Series) -> np.ndarray:
    """int64 ns UTC of a tz-aware datetime Series (NaT -> -1)."""
    index = pd.DatetimeIndex(values).as_unit("ns")
    out = index.asi8.copy()
    out[index.isna()] = -1
    return out


def check_calendar_name(name: str) -> str:
    """``name`` if exchange-calendars knows it.

    Raises:
        ValueError: an unknown name (the message lists a few known ones).
    """
    import exchange_calendars as xc

    if name not in xc.get_calendar_names(include_aliases=True):
        raise ValueError(f"unknown trading calendar {name!r} (exchange-calendars names, e.g. XNYS, XNAS, XLON, 24/7)")
    return name


@dataclass(frozen=True)
class _Slots:
    """The slots of one timeframe, grouped in units (segments; sessions for ``1d``).

    Attributes:
        first: open time of each unit's first slot, int64 (units,).
        count: slots per unit (0 when a unit only repeats its predecessor's last slot).
        cum: slots before each unit, int64 (units + 1,); ``cum[-1]`` = all slots.
        ends: end of each unit's slots (``1d``: the session close), int64 (units,).
        step: the timeframe in ns (0 for ``1d``: one slot per unit).
    """

    first: np.ndarray
    count: np.ndarray
    cum: np.ndarray
    ends: np.ndarray
    step: int


class TradingCalendar:
    """One exchange-calendars calendar as slot arithmetic (see the module docstring).

    Args:
        name: an exchange-calendars name (``XNYS``, ``24/7``, ...).

    Attributes:
        name: the calendar name.
        tz: the exchange's time zone name (``America/New_York``; ``UTC`` for 24/7): the
            ``market_tz`` of cached bars and of reported times.
        first_ns, last_ns: the calendar's coverage, first session open to last session close.

    Raises:
        ValueError: unknown calendar name.
    """

    def __init__(self, name: str) -> None:
        import exchange_calendars as xc

        check_calendar_name(name)
        with warnings.catch_warnings():  # exchange-calendars 4.x reads Series.values, which pandas 3.1 deprecates
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            calendar = xc.get_calendar(name, start=CALENDAR_START)
        schedule = calendar.schedule
        opens, closes = _ns(schedule["open"]), _ns(schedule["close"])
        starts, ends = _ns(schedule["break_start"]), _ns(schedule["break_end"])
        has_break = (starts > 0) & (ends > 0)
        # Segments in time order: a session with a break is [open, break_start), [break_end, close).
        segments_open = np.stack([opens, np.where(has_break, ends, -1)], axis=1).ravel()
        segments_close = np.stack([np.where(has_break, starts, closes), np.where(has_break, closes, -1)], axis=1).ravel()
        keep = segments_open >= 0
        self.name = name
        self.tz = str(getattr(calendar.tz, "key", calendar.tz)) if name != ALWAYS_OPEN else "UTC"
        self.session_open, self.session_close = opens, closes
        self.segment_open = segments_open[keep]
        self.segment_close = segments_close[keep]
        duration = self.segment_close - self.segment_open
        self._duration = duration
        self._cum_duration = np.concatenate([[0], np.cumsum(duration)])
        self.first_ns, self.last_ns = int(opens[0]), int(closes[-1])
        #: Median session length in trading ns: the length of a ``1d`` slot in trading time.
        self.session_ns = int(np.median(closes - opens - np.where(has_break, ends - starts, 0)))
        self._slots: dict[str, _Slots] = {}
        self._session_days: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"TradingCalendar({self.name!r})"

    # -- trading time ---------------------------------------------------------------------
    def trading_ns(self, t: np.ndarray | int) -> np.ndarray | int:
        """``T(t)``: trading ns inside segments before ``t`` (int64; monotone in ``t``)."""
        t = np.asarray(t, dtype=np.int64)
        i = np.searchsorted(self.segment_open, t, side="right") - 1
        inside = np.where(i >= 0, np.clip(t - self.segment_open[np.maximum(i, 0)], 0, self._duration[np.maximum(i, 0)]), 0)
        out = self._cum_duration[np.maximum(i, 0)] * (i >= 0) + inside
        return int(out) if out.ndim == 0 else out

    def slot_ns(self, timeframe: str) -> int:
        """Trading length of one slot: the timeframe (intraday), the median session (``1d``)."""
        return INTRADAY_NS.get(timeframe) or self.session_ns

    # -- slots ----------------------------------------------------------------------------
    def slots(self, timeframe: str) -> _Slots:
        """The slot table of ``timeframe`` (built once per calendar and timeframe)."""
        table = self._slots.get(timeframe)
        if table is None:
            table = self._slots[timeframe] = self._build(timeframe)
        return table

    def _build(self, timeframe: str) -> _Slots:
        step = INTRADAY_NS.get(timeframe)
        if step is None:  # 1d: one slot per session, open to close
            count = np.ones(len(self.session_open), dtype=np.int64)
            return _Slots(self.session_open, count, np.concatenate([[0], np.cumsum(count)]), self.session_close, 0)
        first = (self.segment_open // step) * step
        last = ((self.segment_close - 1) // step) * step
        previous_last = np.concatenate([[np.iinfo(np.int64).min // 2], last[:-1]])
        first = np.maximum(first, previous_last + step)  # a slot shared with the previous segment counts once
        count = np.maximum(0, (last - first) // step + 1)
        return _Slots(first, count, np.concatenate([[0], np.cumsum(count)]), first + count * step, step)

    def _unit_of(self, table: _Slots, ts: np.ndarray) -> np.ndarray:
        return np.searchsorted(table.first, ts, side="right") - 1

    def index(self, timeframe: str, ts: np.ndarray | int) -> np.ndarray:
        """Slot index of each ``ts`` (int64 ns UTC bar open time), -1 where ``ts`` is not a slot."""
        table = self.slots(timeframe)
        ts = np.atleast_1d(np.asarray(ts, dtype=np.int64))
        unit = self._unit_of(table, ts)
        safe = np.maximum(unit, 0)
        offset = ts - table.first[safe]
        if table.step:
            k, rem = np.divmod(offset, table.step)
            valid = (unit >= 0) & (rem == 0) & (k < table.count[safe])
        else:
            k = np.zeros_like(offset)
            valid = (unit >= 0) & (offset == 0)
        return np.where(valid, table.cum[safe] + k, -1)

    def floor_index(self, timeframe: str, t: int) -> int:
        """Index of the last slot opening at or before ``t`` (-1 if none)."""
        table = self.slots(timeframe)
        unit = int(self._unit_of(table, np.asarray([t], dtype=np.int64))[0])
        while unit >= 0 and table.count[unit] == 0:
            unit -= 1
        if unit < 0:
            return -1
        k = 0 if not table.step else min((t - int(table.first[unit])) // table.step, int(table.count[unit]) - 1)
        return int(table.cum[unit] + max(k, 0))

    def closed_count(self, timeframe: str, now: int) -> int:
        """How many slots have ended by ``now`` (a bar is complete once its slot ended)."""
        table = self.slots(timeframe)
        if not table.step:
            return int(np.searchsorted(self.session_close, now, side="right"))
        return self.floor_index(timeframe, now - table.step) + 1

    def slot_open(self, timeframe: str, index: np.ndarray | int) -> np.ndarray:
        """Open time (int64 ns UTC) of slot ``index`` (array or scalar; 0 <= index < all slots)."""
        table = self.slots(timeframe)
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        unit = np.searchsorted(table.cum, index, side="right") - 1
        return table.first[unit] + (index - table.cum[unit]) * table.step

    def slot_end(self, timeframe: str, index: int) -> int:
        """End of slot ``index`` (``1d``: its session's close)."""
        table = self.slots(timeframe)
        if not table.step:
            return int(self.session_close[index])
        return int(self.slot_open(timeframe, index)[0]) + table.step

    def ranges(self, timeframe: str, first: int, last: int) -> list[tuple[int, int]]:
        """The time ranges ``[start, end)`` covered by slots ``first..last`` (inclusive).

        One range per run of time-contiguous slots: a missing afternoon and the next
        morning are two ranges (the night between is no trading time); 24/7 days join.
        """
        if last < first:
            return []
        table = self.slots(timeframe)
        lo_unit = int(np.searchsorted(table.cum, first, side="right") - 1)
        hi_unit = int(np.searchsorted(table.cum, last, side="right") - 1)
        out: list[tuple[int, int]] = []
        for unit in range(lo_unit, hi_unit + 1):
            a = max(first, int(table.cum[unit]))
            b = min(last, int(table.cum[unit + 1]) - 1)
            if b < a:
                continue
            start = int(self.slot_open(timeframe, a)[0])
            end = self.slot_end(timeframe, b)
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        return out

    def slots_between(self, timeframe: str, start: int, end: int) -> np.ndarray:
        """Open times of every slot in ``[start, end)``, ascending (int64 ns UTC)."""
        lo = self.floor_index(timeframe, start - 1) + 1
        hi = self.floor_index(timeframe, end - 1)
        if hi < lo:
            return np.empty(0, dtype=np.int64)
        return self.slot_open(timeframe, np.arange(lo, hi + 1))

    def align(self, timeframe: str, ts: np.ndarray) -> np.ndarray:
        """Provider bar times as this calendar's slots; -1 where a bar has no slot.

        Intraday: a bar is kept when its open time is a slot (bars outside the sessions,
        e.g. extended hours, are dropped). ``1d``: a vendor's daily bar (stamped at local
        midnight or at the open) is moved to the open of the session of its local date.
        """
        ts = np.asarray(ts, dtype=np.int64)
        if INTRADAY_NS.get(timeframe):
            return np.where(self.index(timeframe, ts) >= 0, ts, -1)
        if self._session_days is None:
            local = pd.DatetimeIndex(pd.to_datetime(self.session_open, unit="ns", utc=True)).tz_convert(self.tz)
            self._session_days = local.normalize().tz_localize(None).as_unit("ns").asi8
        days = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True)).tz_convert(self.tz).normalize().tz_localize(None).as_unit("ns").asi8
        at = np.searchsorted(self._session_days, days)
        found = (at < len(self._session_days)) & (self._session_days[np.minimum(at, len(self._session_days) - 1)] == days)
        return np.where(found, self.session_open[np.minimum(at, len(self.session_open) - 1)], -1)

    def check_covers(self, start: int, end: int) -> None:
        """Raise ValueError if ``[start, end)`` reaches beyond the calendar's sessions."""
        if start < self.first_ns or end > self.last_ns:
            raise ValueError(
                f"trading calendar {self.name} has sessions from {pd.Timestamp(self.first_ns, tz='UTC').date()} "
                f"to {pd.Timestamp(self.last_ns, tz='UTC').date()}; cannot check {pd.Timestamp(start, tz='UTC')} .. "
                f"{pd.Timestamp(end, tz='UTC')}"
            )


@lru_cache(maxsize=16)
def trading_calendar(name: str) -> TradingCalendar:
    """The :class:`TradingCalendar` ``name``, built once per process (about 0.3 s).

    Raises:
        ValueError: unknown calendar name.
    """
    return TradingCalendar(name)
