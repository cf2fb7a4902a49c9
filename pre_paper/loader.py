"""``ensure_history()``: check the cache for a symbol's required window, backfill its gaps.

The seed's workflow (``shared/seeds/004_pre_paper_history.md``):

1. read the window's bars from ``pre_paper_cache.db`` (:mod:`pre_paper.cache`);
2. no gap, not outdated (:func:`pre_paper.history.assess`) -> ``SUFFICIENT``;
3. gaps: with ``auto_backfill`` and a provider, report ``LOADING`` (``observe``), fetch
   every gap that can be fetched (all but an outdated tail: only the live feed can bring
   the present), write what came back into the cache (source ``historical`` or
   ``backfill``; bars outside the calendar's sessions dropped, vendor daily bars moved
   to their session's open), and check again (at most :data:`ROUNDS` times: with the
   N-most-recent-bars window, bars found may reveal that still older ones are needed);
   otherwise ``DEGRADED`` with the reason;
4. return the :class:`~pre_paper.history.HistoryCheckResult`.

The window is either fixed (``required_start_ts`` .. ``required_end_ts``, the seed's
call) or the ``required_bars`` most recent bars before ``required_end_ts`` (the
runtime's call; ``required_start_ts`` then None). ``required_end_ts`` is the check's
"now". Nothing but the cache is ever written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pre_paper.cache import HistoryCache
from pre_paper.calendars import ALWAYS_OPEN, TradingCalendar, trading_calendar
from pre_paper.history import DEFAULT_GRACE_S, Assessment, DateRange, HistoryCheckResult, HistoryStatus, assess
from pre_paper.providers.base import HistoricalProvider, ProviderChain, ProviderError, frame_arrays

__all__ = ["ROUNDS", "ensure_history", "check_result", "fetch_ranges", "backfill_note"]

#: Fetch-and-recheck rounds of one :func:`ensure_history` call.
ROUNDS = 3


def _stamp(ns: int | None, tz: str) -> pd.Timestamp | None:
    return None if ns is None else pd.Timestamp(int(ns), tz="UTC").tz_convert(tz)


def check_result(
    found: Assessment, symbol: str, tf: str, base_tf_used: str, calendar: TradingCalendar, *,
    required: int | None, checked_at: int, fetches: list[dict] | None = None, status: HistoryStatus | None = None,
    reason: str | None = None,
) -> HistoryCheckResult:  # fmt: skip
    """The :class:`HistoryCheckResult` of an :class:`~pre_paper.history.Assessment` (times in the market zone)."""
    fetches = list(fetches or [])
    tz = calendar.tz
    return HistoryCheckResult(
        status=status or found.status,
        symbol=symbol,
        tf=tf,
        base_tf_used=base_tf_used,
        required_start_ts=_stamp(found.required_start, tz),
        required_end_ts=_stamp(found.required_end, tz),
        cached_start_ts=_stamp(found.cached_start, tz),
        cached_end_ts=_stamp(found.cached_end, tz),
        gaps=[DateRange(_stamp(a, tz), _stamp(b, tz)) for a, b in found.gaps],
        fetch_attempted=bool(fetches),
        fetch_success=bool(fetches) and all("error" not in f and f.get("bars", 0) > 0 for f in fetches),
        reason=reason if reason is not None else found.reason,
        required_bars=required,
        bars_in_window=found.bars_in_window,
        outdated=found.outdated,
        calendar=calendar.name,
        checked_at=_stamp(checked_at, tz),
        fetches=fetches,
    )


def fetch_ranges(
    provider: HistoricalProvider, symbol: str, tf: str, calendar: TradingCalendar, ranges: list[tuple[int, int]]
) -> tuple[list[tuple[str, dict[str, np.ndarray]]], list[dict]]:
    """Ask ``provider`` for each ``[start, end)`` range (int64 ns UTC).

    Returns:
        ``([(cache source, bar arrays aligned to the calendar's slots), ...], fetch records)``;
        a record is ``{"provider", "start", "end", "bars"}`` or ``{..., "error"}``.
    """
    found: list[tuple[str, dict[str, np.ndarray]]] = []
    records: list[dict] = []
    for start, end in ranges:
        a, b = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
        if isinstance(provider, ProviderChain):
            before = len(provider.answers)
            answers = provider.fetch_by_source(symbol, tf, a, b)
            records += provider.answers[before:]
        else:
            record = {"provider": getattr(provider, "name", type(provider).__name__), "start": a.isoformat(), "end": b.isoformat()}
            try:
                frame = provider.fetch_bars(symbol, tf, a, b)
            except ProviderError as exc:
                record["error"] = str(exc)
                answers = []
            else:
                record["bars"] = int(len(frame))
                answers = [(getattr(provider, "source", "historical"), frame)]
            records.append(record)
        for source, frame in answers:
            try:
                arrays = frame_arrays(frame)
            except ProviderError as exc:
                records[-1]["error"] = str(exc)
                continue
            aligned = calendar.align(tf, arrays["ts"])
            keep = (aligned >= start) & (aligned < end)
            if keep.any():
                found.append((source, {name: values[keep] for name, values in {**arrays, "ts": aligned}.items()}))
    return found, records


def backfill_note(fetches: list[dict]) -> str:
    """What a backfill that left gaps found: each provider error, each range without bars."""
    failed = [f"{f['provider']}: {f['error']}" for f in fetches if "error" in f]
    empty = [f"{f['provider']} had no bars for {f['start']} .. {f['end']}" for f in fetches if f.get("bars") == 0]
    return "; ".join(failed + empty) or "bars fetched, gaps remain"


def ensure_history(
    symbol: str,
    tf: str,
    base_tf_used: str,
    required_start_ts: pd.Timestamp | None,
    required_end_ts: pd.Timestamp,
    cache_db_path: Path | None,
    historical_provider: HistoricalProvider | None = None,
    auto_backfill: bool = False,
    *,
    calendar: str | TradingCalendar = ALWAYS_OPEN,
    required_bars: int | None = None,
    staleness_grace_s: float = DEFAULT_GRACE_S,
    observe: Callable[[HistoryCheckResult], None] | None = None,
    live_since: int | None = None,
    cache: HistoryCache | None = None,
    fetch_before: int | None = None,
) -> HistoryCheckResult:
    """Ensure runtime history is sufficient for strategy execution (see the module docstring).

    Args:
        symbol: the instrument.
        tf: the timeframe of the bars checked (``1m``).
        base_tf_used: the manifest's base timeframe (recorded in the result).
        required_start_ts: a fixed window's start, or None with ``required_bars``.
        required_end_ts: the window's end: the check's "now" (tz-aware).
        cache_db_path: ``pre_paper_cache.db`` (ignored when ``cache`` is given).
        historical_provider: fetches missing ranges (a provider or a ProviderChain).
        auto_backfill: fetch the gaps (else report them as DEGRADED).
        calendar: the instrument's trading calendar (name or object).
        required_bars: the window is the N most recent bars (runtime check).
        staleness_grace_s: the "+ 5 minutes" of the staleness tolerance.
        observe: called with the LOADING result just before a fetch.
        live_since: when live bars started arriving (int ns): later gaps are feed drops.
        cache: an open cache to use instead of opening ``cache_db_path``.
        fetch_before: fetch no bar opening at or after this time (int ns UTC): the live
            bars the runner holds but has not processed yet are not backfilled.

    Returns:
        :class:`HistoryCheckResult` (SUFFICIENT or DEGRADED).

    Raises:
        ValueError: neither or both window forms; a window outside the calendar.
        sqlite3.Error: the cache cannot be read or written.
    """
    calendar = calendar if isinstance(calendar, TradingCalendar) else trading_calendar(calendar)
    now = int(pd.Timestamp(required_end_ts).value)
    start = None if required_start_ts is None else int(pd.Timestamp(required_start_ts).value)
    if (start is None) == (required_bars is None):
        raise ValueError("ensure_history needs exactly one of required_start_ts and required_bars")
    calendar.check_covers(start if start is not None else now, now)
    own = cache is None
    cache = cache if cache is not None else HistoryCache(cache_db_path)
    try:
        fetches: list[dict] = []
        found = _assess(cache, symbol, tf, calendar, now, start, required_bars, staleness_grace_s, live_since)
        tried: set[tuple[int, int]] = set()
        for _ in range(ROUNDS):
            todo = [(a, min(b, fetch_before or b)) for a, b in found.fetchable if (a, b) not in tried and a < (fetch_before or b)]
            if found.status is HistoryStatus.SUFFICIENT or not todo or not auto_backfill or historical_provider is None:
                break
            if observe is not None:
                observe(check_result(found, symbol, tf, base_tf_used, calendar, required=required_bars, checked_at=now,
                                     fetches=fetches, status=HistoryStatus.LOADING,
                                     reason=f"backfilling {len(todo)} range(s): {found.reason}"))  # fmt: skip
            tried.update(found.fetchable)
            answers, records = fetch_ranges(historical_provider, symbol, tf, calendar, todo)
            fetches += records
            for source, bars in answers:
                cache.append(symbol, tf, calendar.tz, bars, source, now)
            found = _assess(cache, symbol, tf, calendar, now, start, required_bars, staleness_grace_s, live_since)
        reason = found.reason
        if reason is not None and fetches:
            reason += "; backfill: " + backfill_note(fetches)
        elif reason is not None and found.fetchable and not auto_backfill:
            reason += "; auto_backfill is off"
        elif reason is not None and found.fetchable and historical_provider is None:
            reason += "; no historical provider configured"
        return check_result(found, symbol, tf, base_tf_used, calendar, required=required_bars, checked_at=now, fetches=fetches, reason=reason)
    finally:
        if own:
            cache.close()


def _assess(cache: HistoryCache, symbol: str, tf: str, calendar: TradingCalendar, now: int, start: int | None,
            required: int | None, grace_s: float, live_since: int | None) -> Assessment:  # fmt: skip
    closed = calendar.closed_count(tf, now)
    table = calendar.slots(tf)
    before = int(calendar.slot_open(tf, closed)[0]) if closed < int(table.cum[-1]) else now
    if required is not None:
        ts = cache.last(symbol, tf, before, required).ts
    else:
        ts = cache.read(symbol, tf, start, before).ts
    return assess(ts, calendar, tf, now, required=required, start=start, grace_s=grace_s, live_since=live_since)
