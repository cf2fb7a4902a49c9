"""Is a symbol's bar history sufficient for its strategy? The statuses, the result, the rule.

``HistoryStatus``, ``DateRange`` and ``HistoryCheckResult`` (with ``to_dict()``) are the
seed's contract (``shared/seeds/004_pre_paper_history.md``); :func:`assess` is the rule
that :func:`pre_paper.loader.ensure_history` and the ``pre_paper`` node both apply to
the bars they hold. Strategy execution is allowed only when the status is
``SUFFICIENT``.

**How much history**: ``required_bars = warm-up + max pattern age + safety margin``
(:func:`required_bars`): the strategy's declared ``warmup_bars`` (the bars its first
decision needs, the decision bar included), its ``max_pattern_age_bars`` if it declares
one (0 otherwise), and a margin.

**Gaps** are judged against the instrument's trading calendar
(:mod:`pre_paper.calendars`) and the staleness tolerance ``2 x slot + grace`` (the
issue's "2 x timeframe + 5 minutes"; ``slot`` is the timeframe, or a session for
``1d``). Between two bars ``a < b``, the bars of the slots in between are missing; they
are a *gap* when ``(index(b) - index(a)) x slot > tolerance``, i.e. when the history
would have been judged outdated while waiting for ``b``. Shorter holes are quiet
periods (a minute without trades is not a gap), a weekend or a holiday has no slots.
A gap's ranges are its missing slots, ``[first missing open, last missing end)``, one
per run of contiguous trading time (a missing afternoon and the next morning: two).

Two windows:

* **the N most recent bars** (``required_bars=N``, the runtime check): the window is the
  last ``N`` complete bars before ``now``. When fewer are held, the ``N - n`` slots
  before the oldest held bar (all ``N`` slots before ``now`` when none is held) are a gap.
  A longer hole is reported (and fetched) by its newest ``N`` slots only: no more bars
  than that can be needed.
* **a fixed window** ``[start, end)`` (the seed's ``ensure_history`` call): every hole
  in it, counted from the slot before ``start`` to the slot after the last complete one.

Either way, the history is **outdated** (stale) when the newest bar is older than the
tolerance in trading time: ``T(now) - T(newest bar open) > tolerance``; the missing
slots after it are reported as a gap too (but they cannot be backfilled before the feed
delivers again). No bar at all: everything is missing.

Statuses: ``SUFFICIENT`` (no gap, not outdated), ``DEGRADED`` (a gap or outdated; the
reason says which), ``LOADING`` (gaps found and a backfill is about to fetch them:
reported by ``ensure_history`` before it fetches).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pre_paper.calendars import TradingCalendar

__all__ = [
    "HistoryStatus",
    "DateRange",
    "HistoryCheckResult",
    "Assessment",
    "DEFAULT_SAFETY_MARGIN",
    "DEFAULT_GRACE_S",
    "OUTDATED",
    "INSUFFICIENT",
    "required_bars",
    "tolerance_ns",
    "assess",
]

#: Bars of history kept beyond the strategy's own need.
DEFAULT_SAFETY_MARGIN = 10
#: The "+ 5 minutes" of the staleness tolerance, seconds.
DEFAULT_GRACE_S = 300.0
#: Reason prefix when the newest bar is too old, or a hole opened while running live.
OUTDATED = "outdated history"
#: Reason prefix when bars the window needs are missing (and were not found).
INSUFFICIENT = "insufficient history"


class HistoryStatus(enum.Enum):
    """Runtime history status."""

    SUFFICIENT = "sufficient"  #: ready for strategy execution
    LOADING = "loading"  #: gaps found, backfill in progress
    DEGRADED = "degraded"  #: cannot satisfy the requirement (see the reason)


@dataclass(frozen=True)
class DateRange:
    """A half-open time range ``[start, end)`` of missing bars (tz-aware, market time zone)."""

    start: pd.Timestamp
    end: pd.Timestamp

    def to_dict(self) -> dict[str, str]:
        """``{"start": ISO-8601, "end": ISO-8601}`` with the market's UTC offset."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @property
    def start_ns(self) -> int:
        """``start`` as int64 ns UTC."""
        return int(self.start.value)

    @property
    def end_ns(self) -> int:
        """``end`` as int64 ns UTC."""
        return int(self.end.value)


@dataclass
class HistoryCheckResult:
    """Result of a runtime history check (the seed's contract, plus the counts behind it).

    Strategy execution is ONLY allowed if ``status == SUFFICIENT``.

    Attributes:
        status: :class:`HistoryStatus`.
        symbol, tf: the instrument and the timeframe of its bars (``1m``).
        base_tf_used: the manifest's base timeframe (the bars the strategy decides on).
        required_start_ts, required_end_ts: the window needed (market time zone); the end
            is the check's ``now``.
        cached_start_ts, cached_end_ts: the first and last held bar inside the window.
        gaps: missing ranges (:class:`DateRange`), oldest first.
        fetch_attempted, fetch_success: whether a backfill ran, and whether every fetch
            of it answered with bars.
        reason: why the status is not SUFFICIENT (None when it is).
        required_bars: bars the window needs (None for a fixed window).
        bars_in_window: bars held inside the window.
        outdated: the newest bar is older than the tolerance.
        calendar: the trading calendar's name.
        checked_at: the clock when the check ran (market time zone).
    """

    status: HistoryStatus
    symbol: str
    tf: str
    base_tf_used: str
    required_start_ts: pd.Timestamp
    required_end_ts: pd.Timestamp
    cached_start_ts: pd.Timestamp | None
    cached_end_ts: pd.Timestamp | None
    gaps: list[DateRange]
    fetch_attempted: bool
    fetch_success: bool
    reason: str | None
    required_bars: int | None = None
    bars_in_window: int = 0
    outdated: bool = False
    calendar: str = ""
    checked_at: pd.Timestamp | None = None
    fetches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The seed's JSON shape (ISO-8601 times with the market offset), plus the counts."""
        return {
            "status": self.status.value,
            "symbol": self.symbol,
            "tf": self.tf,
            "base_tf_used": self.base_tf_used,
            "required_window": {"start": self.required_start_ts.isoformat(), "end": self.required_end_ts.isoformat()},
            "cached_window": {
                "start": self.cached_start_ts.isoformat() if self.cached_start_ts is not None else None,
                "end": self.cached_end_ts.isoformat() if self.cached_end_ts is not None else None,
            },
            "gaps": [g.to_dict() for g in self.gaps],
            "fetch_attempted": self.fetch_attempted,
            "fetch_success": self.fetch_success,
            "reason": self.reason,
            "required_bars": self.required_bars,
            "bars_in_window": self.bars_in_window,
            "outdated": self.outdated,
            "calendar": self.calendar,
            "checked_at": self.checked_at.isoformat() if self.checked_at is not None else None,
            "fetches": list(self.fetches),
        }


def required_bars(strategy: Any, safety_margin: int = DEFAULT_SAFETY_MARGIN) -> int:
    """``warmup_bars + max_pattern_age_bars + safety_margin`` of a strategy instance.

    Args:
        strategy: a ``strategies/base.py`` protocol object (``warmup_bars`` >= 1; an
            optional ``max_pattern_age_bars`` >= 0, the age up to which a pattern it
            detected may still trigger a decision).
        safety_margin: extra bars, >= 0.

    Raises:
        ValueError: negative margin or pattern age, warm-up below 1.
    """
    warmup = int(strategy.warmup_bars)
    age = int(getattr(strategy, "max_pattern_age_bars", 0) or 0)
    if warmup < 1 or age < 0 or safety_margin < 0:
        raise ValueError(f"required bars need warmup_bars >= 1, pattern age >= 0, margin >= 0 (got {warmup}, {age}, {safety_margin})")
    return warmup + age + int(safety_margin)


def tolerance_ns(calendar: TradingCalendar, timeframe: str, grace_s: float = DEFAULT_GRACE_S) -> int:
    """``2 x slot + grace`` in trading ns: older bars make the history outdated."""
    return 2 * calendar.slot_ns(timeframe) + int(round(grace_s * 1e9))


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` found (times int64 ns UTC).

    Attributes:
        status: SUFFICIENT or DEGRADED.
        gaps: ``[(start, end), ...]`` missing ranges, oldest first.
        fetchable: the gaps a backfill may fetch (all but the trailing, outdated one).
        outdated: the newest bar is too old.
        required_start, required_end: the window.
        cached_start, cached_end: first/last bar held in the window (None: none).
        bars_in_window: how many.
        reason: None when SUFFICIENT.
    """

    status: HistoryStatus
    gaps: list[tuple[int, int]]
    fetchable: list[tuple[int, int]]
    outdated: bool
    required_start: int
    required_end: int
    cached_start: int | None
    cached_end: int | None
    bars_in_window: int
    reason: str | None


def assess(
    ts: np.ndarray,
    calendar: TradingCalendar,
    timeframe: str,
    now: int,
    *,
    required: int | None = None,
    start: int | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    live_since: int | None = None,
) -> Assessment:
    """Apply the module's rule to the held bar open times ``ts``.

    Args:
        ts: bar open times held (int64 ns UTC, any order, slots of ``calendar``).
        calendar: the instrument's trading calendar.
        timeframe: the bars' timeframe.
        now: the clock (int64 ns UTC); bars not complete by ``now`` are ignored.
        required: the N most recent bars form the window (runtime check); or None with
            ``start`` for a fixed window ``[start, now)``.
        start: the fixed window's start (int64 ns UTC).
        grace_s: the tolerance's grace, seconds.
        live_since: when the runner started receiving live bars: a gap that opened after
            it is a feed drop, reported as ``outdated history`` (else ``insufficient``).

    Raises:
        ValueError: neither or both of ``required`` and ``start``; a window outside the calendar.
    """
    if (required is None) == (start is None):
        raise ValueError("assess needs exactly one of required (bars) and start (a fixed window)")
    tolerance = tolerance_ns(calendar, timeframe, grace_s)
    slot = calendar.slot_ns(timeframe)
    closed = calendar.closed_count(timeframe, now)  # slots complete by now: indices < closed
    index = np.unique(calendar.index(timeframe, np.asarray(ts, dtype=np.int64)))
    index = index[(index >= 0) & (index < closed)]
    holes: list[tuple[int, int]] = []  # runs of missing slot indices [lo, hi] that are gaps
    if required is not None:
        window = index[-required:] if required > 0 else index[:0]
        marks = window
        if len(window) < required:  # the bars still needed before the oldest held one
            top = int(window[0]) if len(window) else closed
            holes.append((max(0, top - (required - len(window))), top - 1))
    else:
        first_slot = calendar.floor_index(timeframe, int(start) - 1) + 1
        window = index[index >= first_slot]
        marks = np.concatenate([[first_slot - 1], window])  # a virtual bar in the slot before the window
        if not len(window) and closed > first_slot:
            holes.append((first_slot, closed - 1))
    if len(marks) > 1:
        steps = np.diff(marks)
        for k in np.flatnonzero(steps * slot > tolerance).tolist():
            holes.append((int(marks[k]) + 1, int(marks[k + 1]) - 1))
    if required is not None:  # the window needs at most `required` bars: only a hole's newest slots matter
        holes = [(max(lo, hi - required + 1), hi) for lo, hi in holes]
    holes = sorted(set(holes))
    outdated, trailing = False, []
    if len(window):
        newest = int(window[-1])
        newest_open = int(calendar.slot_open(timeframe, newest)[0])
        outdated = calendar.trading_ns(now) - calendar.trading_ns(newest_open) > tolerance
        if outdated and closed - 1 > newest:
            lo = newest + 1 if required is None else max(newest + 1, closed - required)
            trailing = calendar.ranges(timeframe, lo, closed - 1)
    fetchable = [r for lo, hi in holes for r in calendar.ranges(timeframe, lo, hi)]
    gaps = fetchable + trailing
    if start is not None:
        required_start = int(start)
    elif holes and (not len(window) or holes[0][0] < int(window[0])):
        required_start = int(calendar.slot_open(timeframe, holes[0][0])[0])
    else:
        required_start = int(calendar.slot_open(timeframe, int(window[0]))[0]) if len(window) else int(now)
    cached = calendar.slot_open(timeframe, window[[0, -1]]) if len(window) else None
    reason = None
    if outdated:
        reason = (
            f"{OUTDATED}: the newest bar opened at {pd.Timestamp(newest_open, tz='UTC').tz_convert(calendar.tz).isoformat()}, "
            f"more than 2 x {timeframe} + {grace_s:g} s of trading time before now"
        )
    elif gaps:
        drop = live_since is not None and any(a >= live_since for a, _ in gaps)
        what = f"{OUTDATED}: a feed drop left" if drop else f"{INSUFFICIENT}: missing bars in"
        first = pd.Timestamp(gaps[0][0], tz="UTC").tz_convert(calendar.tz).isoformat()
        held = f"{len(window)} of {required} bars held" if required is not None else f"{len(window)} bars held"
        reason = f"{what} {len(gaps)} range(s), the first from {first}; {held}"
    return Assessment(
        status=HistoryStatus.DEGRADED if gaps or outdated else HistoryStatus.SUFFICIENT,
        gaps=gaps,
        fetchable=fetchable,
        outdated=outdated,
        required_start=required_start,
        required_end=int(now),
        cached_start=int(cached[0]) if cached is not None else None,
        cached_end=int(cached[1]) if cached is not None else None,
        bars_in_window=int(len(window)),
        reason=reason,
    )
