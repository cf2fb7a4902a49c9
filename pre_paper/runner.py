"""One symbol's pre-paper runner: the history gate in front of the backtest's own strategy node.

Per confirmed bar (oldest first, once the watermark has passed its end, so its input
signals have all arrived; ``actors/strategy.py``'s alignment):

1. a bar not newer than the last one, or whose open time is no slot of the calendar
   (outside the sessions), is not used (counted; the former also quarantined);
2. the bar joins the window and the cache (source ``websocket``);
3. the history is checked (:func:`pre_paper.history.assess` on the window held in memory;
   when it is not SUFFICIENT and a backfill is due, :func:`pre_paper.loader.ensure_history`
   fetches the gaps into the cache and the window is re-read from it);
4. SUFFICIENT: the strategy decides on the bar. The strategy is the backtest's
   ``strategy`` node (:class:`actors.strategy.StrategyNode`, built from the manifest,
   shared by the shard's symbols: :mod:`pre_paper.decider`): after a period without
   sufficient history the node first gets the window's bars before this one as a seed
   (their decisions are warm-up, never emitted), so it decides on exactly the bars, in the
   same order, with the same code as the backtest did;
5. not SUFFICIENT: NO-SIGNALS. The symbol's state in the strategy node is void (its
   history has a hole: the next SUFFICIENT bar starts it afresh) and the bar is counted in
   the current NO-SIGNALS period, which is recorded with its reason.

Between bars (every watermark) the runner re-checks staleness with the clock: a feed
that went silent makes the history ``DEGRADED`` (``outdated history``) until live bars
flow again and the hole they left is backfilled.

Everything the runner does is reported as event dicts (PRE_PAPER_EVENT rows,
``graph/schemas.py``): the first check, every check whose outcome changed (status,
reason kind, number of gaps) or that fetched, status changes, NO-SIGNALS periods, the
final check and the end summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from actors.strategy import StrategyNodeParams, bar_end
from graph.operator import OperatorContext
from graph.schemas import BAR_CONFIRMED
from pre_paper.cache import BAR_COLUMNS, HistoryCache
from pre_paper.calendars import TradingCalendar
from pre_paper.decider import Segment
from pre_paper.history import Assessment, HistoryCheckResult, HistoryStatus, assess, tolerance_ns
from pre_paper.loader import backfill_note, check_result, ensure_history
from pre_paper.signals import SignalRows

__all__ = ["RunnerSettings", "SymbolRunner", "event"]

_FIELDS = ("ts", *BAR_COLUMNS)


def event(symbol: str, clock_ns: int, kind: str, *, ts: int | None = None, status: str | None = None,
          reason: str | None = None, detail: dict | None = None) -> dict[str, Any]:  # fmt: skip
    """One PRE_PAPER_EVENT row as a dict."""
    return {
        "symbol": symbol, "clock_ns": int(clock_ns), "ts": None if ts is None else int(ts), "kind": kind, "status": status,
        "reason": reason, "detail": None if detail is None else json.dumps(detail, sort_keys=True, allow_nan=False),
    }  # fmt: skip


@dataclass(frozen=True)
class RunnerSettings:
    """What every symbol runner of a ``pre_paper`` node shares (from its params and manifest).

    Attributes:
        timeframe: the manifest's base timeframe.
        required_bars: the window (warm-up + pattern age + margin).
        grace_s: the staleness tolerance's grace, seconds.
        auto_backfill: fetch gaps from the providers.
        backfill_retry_ns: at least this much clock time between two fetches of one symbol.
        strategy_params: the ``strategy`` node params (manifest).
        node_id: the ``pre_paper`` node's id.
        signal_name: the ``signals`` name of the rows emitted for new targets.
    """

    timeframe: str
    required_bars: int
    grace_s: float
    auto_backfill: bool
    backfill_retry_ns: int
    strategy_params: dict[str, Any]
    node_id: str
    signal_name: str


class SymbolRunner:
    """The state of one symbol (see the module docstring).

    Args:
        symbol: the instrument.
        settings: :class:`RunnerSettings`.
        calendar: the instrument's trading calendar.
        cache: the shared history cache.
        providers: the node's providers (a ProviderChain) or None.
        ctx: the ``pre_paper`` node's context (its clock stamps the cache rows).
    """

    def __init__(self, symbol: str, settings: RunnerSettings, calendar: TradingCalendar, cache: HistoryCache,
                 providers: Any, ctx: OperatorContext) -> None:  # fmt: skip
        self.symbol = symbol
        self.settings = settings
        self.calendar = calendar
        self.cache = cache
        self.providers = providers
        self.ctx = ctx
        p = StrategyNodeParams.model_validate(settings.strategy_params)
        self.signals = SignalRows({n: k for n, k in ((p.signal, "signal"), (p.spread, "spread")) if n})
        self.window = {name: np.empty(0, np.int64 if name in ("ts", "slot") else np.float64) for name in (*_FIELDS, "slot")}
        self._tolerance = tolerance_ns(calendar, settings.timeframe, settings.grace_s)
        self._slot_ns = calendar.slot_ns(settings.timeframe)
        self.pending: list[dict[str, float]] = []  # live bars not yet written to the cache
        self.live = False  # the strategy node holds this symbol's history (it decides on its bars)
        self.status = HistoryStatus.LOADING
        self.reason: str | None = "no history check yet"
        self.live_since: int | None = None
        self.last_fetch: int | None = None
        self.fetch_note: tuple[str, str] | None = None  # (when, what) of the last backfill that left gaps
        self.signature: tuple | None = None
        self.no_signals: dict[str, Any] | None = None  # the open NO-SIGNALS period
        self.cache_position: int | None = None  # newest ts this runner wrote to the cache
        self.decided_through: int | None = None  # newest bar the strategy decided on
        self.checked_at: int | None = None  # the clock of the last check
        self.counts = {"bars": 0, "decisions": 0, "signals": 0, "suppressed_bars": 0, "no_signals_periods": 0,
                       "degraded_periods": 0, "fetches": 0, "outside_session": 0, "out_of_order": 0, "seeded_bars": 0}  # fmt: skip

    # -- checks ---------------------------------------------------------------------------
    def start(self, now: int, before: int | None = None) -> list[dict]:
        """The first check (the cache's window, a backfill of its gaps up to ``before``: the
        first live bar held); returns events."""
        events: list[dict] = []
        result = self._fetch_check(now, events, trigger="start", before=before)
        return events + self._record(result, now, trigger="start", force=True)

    def _assessment(self, now: int) -> tuple[Assessment, str | None]:
        """The in-memory check at ``now`` (cheap), and its reason with the last backfill's outcome."""
        found = assess(self.window["ts"], self.calendar, self.settings.timeframe, now, required=self.settings.required_bars,
                       grace_s=self.settings.grace_s, live_since=self.live_since)  # fmt: skip
        reason = found.reason
        if reason is not None and self.fetch_note is not None:
            reason += f"; last backfill ({self.fetch_note[0]}): {self.fetch_note[1]}"
        return found, reason

    def _sufficient(self, now: int) -> bool:
        """A shortcut of :func:`~pre_paper.history.assess` for the common case: True only when
        the window holds the N bars, all complete by ``now``, no two of them further apart than
        the tolerance, and the newest younger than it in wall time (so in trading time too)."""
        ts, slots = self.window["ts"], self.window["slot"]
        if len(ts) < self.settings.required_bars or not len(ts):
            return False
        newest = int(ts[-1])
        if now - newest > self._tolerance or now < bar_end(newest, self.settings.timeframe):
            return False
        return len(slots) < 2 or int(np.diff(slots).max()) * self._slot_ns <= self._tolerance

    def _result(self, found: Assessment, reason: str | None, now: int) -> HistoryCheckResult:
        return check_result(found, self.symbol, self.settings.timeframe, self.settings.timeframe, self.calendar,
                            required=self.settings.required_bars, checked_at=now, reason=reason)  # fmt: skip

    def _fetch_check(self, now: int, events: list[dict], trigger: str, before: int | None = None) -> HistoryCheckResult:
        """``ensure_history`` on the cache (backfilling the gaps), then re-read the window."""
        self.flush()
        self.last_fetch = now

        def observe(loading: HistoryCheckResult) -> None:
            """Record the LOADING check ensure_history reports before it fetches."""
            events.extend(self._record(loading, now, trigger=trigger, force=True))

        result = ensure_history(
            self.symbol, self.settings.timeframe, self.settings.timeframe, None, _utc(now), None, self.providers,
            self.settings.auto_backfill and self.providers is not None, calendar=self.calendar,
            required_bars=self.settings.required_bars, staleness_grace_s=self.settings.grace_s, observe=observe,
            live_since=self.live_since, cache=self.cache, fetch_before=before,
        )  # fmt: skip
        self.counts["fetches"] += len(result.fetches)
        if result.fetches and result.status is not HistoryStatus.SUFFICIENT:
            self.fetch_note = (_iso(now, self.calendar.tz), backfill_note(result.fetches))
        elif result.status is HistoryStatus.SUFFICIENT:
            self.fetch_note = None
        self._reload(now)
        return result

    def _reload(self, now: int) -> None:
        closed = self.calendar.closed_count(self.settings.timeframe, now)
        table = self.calendar.slots(self.settings.timeframe)
        before = int(self.calendar.slot_open(self.settings.timeframe, closed)[0]) if closed < int(table.cum[-1]) else now
        if len(self.window["ts"]):  # never lose a bar already taken (a clock behind the data)
            before = max(before, int(self.window["ts"][-1]) + 1)
        cached = self.cache.last(self.symbol, self.settings.timeframe, before, self.settings.required_bars)
        self.window = {name: np.asarray(getattr(cached, name)) for name in _FIELDS}
        self.window["slot"] = self.calendar.index(self.settings.timeframe, self.window["ts"]) if len(cached) else np.empty(0, np.int64)

    def check(self, now: int, trigger: str, before: int | None = None) -> tuple[HistoryStatus, str | None, list[dict]]:
        """Check the window at ``now``; backfill (bars opening before ``before``) when not
        SUFFICIENT and a fetch is due. Returns (status, reason, events)."""
        events: list[dict] = []
        self.checked_at = now
        if self._sufficient(now):
            lazy = lambda: self._result(*self._assessment(now), now)  # noqa: E731 (built only when recorded)
            return HistoryStatus.SUFFICIENT, None, self._record_lazy(HistoryStatus.SUFFICIENT, None, 0, lazy, now, trigger)
        found, reason = self._assessment(now)
        due = self.last_fetch is None or now - self.last_fetch >= self.settings.backfill_retry_ns
        if found.status is not HistoryStatus.SUFFICIENT and found.fetchable and due and self.settings.auto_backfill and self.providers is not None:
            result = self._fetch_check(now, events, trigger, before)
            return result.status, result.reason, events + self._record(result, now, trigger=trigger, force=True)
        events += self._record_lazy(found.status, reason, len(found.gaps), lambda: self._result(found, reason, now), now, trigger)
        return found.status, reason, events

    def on_clock(self, now: int, before: int | None = None) -> list[dict]:
        """A check between bars (staleness, a due backfill); drops the strategy node when not SUFFICIENT."""
        status, _, events = self.check(now, trigger="clock", before=before)
        if status is not HistoryStatus.SUFFICIENT:
            self.live = False
        return events

    def _record(self, result: HistoryCheckResult, now: int, *, trigger: str, force: bool = False) -> list[dict]:
        """Events for a check: the check itself when its outcome changed (or ``force``), a status change."""
        return self._record_lazy(result.status, result.reason, len(result.gaps), lambda: result, now, trigger, force)

    def _record_lazy(self, status: HistoryStatus, reason: str | None, gaps: int, build, now: int, trigger: str,
                     force: bool = False) -> list[dict]:  # fmt: skip
        out: list[dict] = []
        signature = (status, (reason or "").split(":", 1)[0], gaps)
        if force or signature != self.signature:
            detail = {**build().to_dict(), "trigger": trigger}
            out.append(event(self.symbol, now, "check", status=status.value, reason=reason, detail=detail))
            self.signature = signature
        if status is HistoryStatus.LOADING:
            return out
        if status is not self.status:
            if status is HistoryStatus.DEGRADED:
                self.counts["degraded_periods"] += 1
            out.append(event(self.symbol, now, "status", status=status.value, reason=reason,
                             detail={"from": self.status.value, "to": status.value, "trigger": trigger}))  # fmt: skip
            self.status = status
        self.reason = reason
        return out

    # -- bars -----------------------------------------------------------------------------
    def on_bars(self, bars: list[dict[str, Any]], nows: list[int]) -> tuple[list[Segment], list[dict[str, Any]], list[dict]]:
        """Confirmed bars of this symbol, ascending (``ts``, :data:`~pre_paper.cache.BAR_COLUMNS`),
        each checked at its ``now``.

        Returns:
            (the segments to decide on, :class:`~pre_paper.decider.Segment`: runs of
            consecutive SUFFICIENT bars, a seed before each fresh start; the paper-execution
            rows of the NO-SIGNALS bars; events).
        """
        segments: list[Segment] = []
        paper: list[dict[str, Any]] = []
        events: list[dict] = []
        run: list[dict[str, Any]] = []  # the current segment's bars
        seed: tuple | None = None  # (seed bars, signals) of the current segment

        def close() -> None:
            """End the current run of SUFFICIENT bars as a segment."""
            nonlocal seed
            if run:
                segments.append(Segment([self._bar_row(b) for b in run], *(seed or (None, None))))
                run.clear()
            seed = None

        for bar, now in zip(bars, nows):
            ts = int(bar["ts"])
            newest = int(self.window["ts"][-1]) if len(self.window["ts"]) else None
            if newest == ts and not run and (self.decided_through is None or ts > self.decided_through):
                self._drop_newest()  # a backfill brought this slot first: the live bar replaces it
                newest = int(self.window["ts"][-1]) if len(self.window["ts"]) else None
            if newest is not None and ts <= newest:
                self.counts["out_of_order"] += 1
                events.append(event(self.symbol, now, "out_of_order_bar", ts=ts, reason=f"confirmed {self.settings.timeframe} bar not newer than the last one"))
                continue
            slot = int(self.calendar.index(self.settings.timeframe, ts)[0])
            if slot < 0:
                self.counts["outside_session"] += 1
                continue
            self.counts["bars"] += 1
            if self.live_since is None:
                self.live_since = ts
            self._append(bar, slot)
            status, reason, found = self.check(now, trigger="bar")
            events += found
            if status is HistoryStatus.SUFFICIENT:
                events += self._end_no_signals(now, ts)
                if not self.live:  # a fresh start: the window's earlier bars first
                    history = {name: self.window[name][:-1].tolist() for name in _FIELDS}
                    rows = [self._bar_row(dict(zip(_FIELDS, values))) for values in zip(*history.values())]
                    seed = (rows, self.signals.batch(self.symbol))
                    self.counts["seeded_bars"] += len(rows)
                    self.live = True
                run.append(bar)
            else:
                close()
                self.live = False  # its history has a hole: re-seed once sufficient again
                events += self._no_signal(now, ts, reason)
                paper.append(self._hold_row(bar))
        close()
        return segments, paper, events

    def decided(self, rows: pa.RecordBatch) -> None:
        """Count the DECISION rows the strategy emitted for this symbol's bars."""
        if rows.num_rows:
            self.decided_through = int(rows.column("ts")[-1].as_py())
            self.counts["decisions"] += rows.num_rows
            self.counts["signals"] += int(np.isfinite(rows.column("target").to_numpy(zero_copy_only=False)).sum())

    def _drop_newest(self) -> None:
        self.window = {name: values[:-1] for name, values in self.window.items()}

    def _append(self, bar: dict[str, Any], slot: int) -> None:
        keep = self.settings.required_bars
        for name in (*_FIELDS, "slot"):
            value = np.asarray([slot if name == "slot" else bar.get(name, np.nan)], dtype=self.window[name].dtype)
            self.window[name] = np.concatenate([self.window[name], value])[-keep:]
        self.pending.append({name: bar.get(name, np.nan) for name in _FIELDS})
        self.signals.prune(int(bar_end(int(self.window["ts"][0]), self.settings.timeframe)))

    def flush(self) -> None:
        """Write the pending live bars to the cache (source ``websocket``)."""
        item = self.take_pending()
        if item is not None:
            self.cache.append(*item, "websocket", self._clock())

    def take_pending(self) -> tuple[str, str, str, dict[str, np.ndarray]] | None:
        """``(symbol, tf, market_tz, bars)`` of the live bars not yet cached (now counted as
        cached: the caller writes them), or None."""
        if not self.pending:
            return None
        rows = {name: np.asarray([p[name] for p in self.pending]) for name in _FIELDS}
        self.cache_position = int(rows["ts"][-1])
        self.pending = []
        return self.symbol, self.settings.timeframe, self.calendar.tz, rows

    def _clock(self) -> int:
        return int(self.ctx.clock_ns()) if self.ctx.clock_ns is not None else 0

    def on_signals(self, batch: pa.RecordBatch) -> bool:
        """SIGNAL rows of this symbol, kept for re-seeding; True: the strategy decides on this
        symbol now, so give them to the strategy node too."""
        self.signals.add(batch.column("ts").to_numpy(), batch.column("name").to_numpy(zero_copy_only=False),
                         batch.column("value").to_numpy(zero_copy_only=False))  # fmt: skip
        return self.live

    def _bar_row(self, bar: dict[str, Any]) -> dict[str, Any]:
        """A BAR row (dict) of a bar for the strategy node (confirmed; the trade count is not kept)."""
        vwap = bar.get("vwap")
        return {"symbol": self.symbol, "timeframe": self.settings.timeframe, "ts": int(bar["ts"]),
                **{name: float(bar[name]) for name in ("open", "high", "low", "close", "volume")},
                "vwap": float("nan") if vwap is None else float(vwap), "trade_count": 0, "status": BAR_CONFIRMED}  # fmt: skip

    def _hold_row(self, bar: dict[str, Any]) -> dict[str, Any]:
        """The paper-execution row of a NO-SIGNALS bar: no new target (NaN), the position marked."""
        spread = [v for t, n, v in self.signals.rows if self.signals.names.get(n) == "spread" and t < bar_end(int(bar["ts"]), self.settings.timeframe)]
        return {"symbol": self.symbol, "timeframe": self.settings.timeframe, "ts": int(bar["ts"]),
                **{name: float(bar[name]) for name in ("open", "high", "low", "close", "volume")},
                "target": np.nan, "spread_bps": spread[-1] if spread else np.nan, "signal": np.nan}  # fmt: skip

    # -- NO-SIGNALS periods ---------------------------------------------------------------
    def _no_signal(self, now: int, ts: int, reason: str | None) -> list[dict]:
        self.counts["suppressed_bars"] += 1
        if self.no_signals is None:
            self.counts["no_signals_periods"] += 1
            self.no_signals = {"first_ts": ts, "bars": 0, "reason": reason, "status": self.status.value}
            self.no_signals["bars"] += 1
            return [event(self.symbol, now, "no_signals", ts=ts, status=self.status.value, reason=reason,
                          detail={"period": "start", "first_bar": _iso(ts, self.calendar.tz)})]  # fmt: skip
        self.no_signals["bars"] += 1
        return []

    def _end_no_signals(self, now: int, ts: int | None) -> list[dict]:
        period, self.no_signals = self.no_signals, None
        if period is None:
            return []
        detail = {"period": "end", "first_bar": _iso(period["first_ts"], self.calendar.tz), "bars_suppressed": period["bars"],
                  "resumed_at": _iso(ts, self.calendar.tz) if ts is not None else None}  # fmt: skip
        return [event(self.symbol, now, "no_signals", ts=ts, status=self.status.value, reason=period["reason"], detail=detail)]

    def finish(self, now: int) -> list[dict]:
        """The final check, the open NO-SIGNALS period closed, the end summary; flushes the cache."""
        self.flush()
        found, reason = self._assessment(now)
        events = self._record(self._result(found, reason, now), now, trigger="final", force=True)
        events += self._end_no_signals(now, None)
        events.append(event(self.symbol, now, "end", status=self.status.value, reason=self.reason, detail=dict(self.counts)))
        return events

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (picklable): window, status, counters, cache position."""
        self.flush()
        return {
            "window": {k: v.copy() for k, v in self.window.items()}, "status": self.status.value, "reason": self.reason,
            "live_since": self.live_since, "last_fetch": self.last_fetch, "fetch_note": self.fetch_note, "signature": None if self.signature is None else
            (self.signature[0].value, *self.signature[1:]), "no_signals": dict(self.no_signals) if self.no_signals else None, "cache_position": self.cache_position,
            "decided_through": self.decided_through, "checked_at": self.checked_at,
            "counts": dict(self.counts), "signals": list(self.signals.rows), "live": self.live,
        }  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state`."""
        self.window = {k: np.asarray(v).copy() for k, v in state["window"].items()}
        self.status, self.reason = HistoryStatus(state["status"]), state["reason"]
        self.live_since, self.last_fetch, self.fetch_note = state["live_since"], state["last_fetch"], state["fetch_note"]
        sig = state["signature"]
        self.signature = None if sig is None else (HistoryStatus(sig[0]), *sig[1:])
        self.no_signals = dict(state["no_signals"]) if state["no_signals"] else None
        self.cache_position, self.counts = state["cache_position"], dict(state["counts"])
        self.decided_through, self.checked_at = state["decided_through"], state["checked_at"]
        self.signals.rows = list(state["signals"])
        self.live = state["live"]


def _utc(ns: int):
    import pandas as pd

    return pd.Timestamp(int(ns), tz="UTC")


def _iso(ns: int | None, tz: str) -> str | None:
    return None if ns is None else _utc(ns).tz_convert(tz).isoformat()

