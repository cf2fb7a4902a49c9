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
   ``strategy`` node (:class:`actors.strategy.StrategyNode`, built from the manifest):
   after a period without sufficient history a fresh node is first fed the window's bars
   before this one (their decisions are warm-up, never emitted), so it decides on exactly
   the bars, in the same order, with the same code as the backtest did;
5. not SUFFICIENT: NO-SIGNALS. The strategy node is dropped (its history has a hole) and
   the bar is counted in the current NO-SIGNALS period, which is recorded with its reason.

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

from actors.strategy import StrategyNode, StrategyNodeParams, bar_end
from graph.operator import OperatorContext
from graph.schemas import BAR, BAR_CONFIRMED, DECISION, SIGNAL
from pre_paper.cache import BAR_COLUMNS, HistoryCache
from pre_paper.calendars import TradingCalendar
from pre_paper.history import HistoryCheckResult, HistoryStatus, assess
from pre_paper.loader import backfill_note, check_result, ensure_history

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
        node_id: the ``pre_paper`` node's id (names the inner strategy node).
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


class _Signals:
    """The strategy's input signal rows of one symbol (``signal`` and ``spread``), for re-seeding."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names  # signals.name -> "signal" | "spread"
        self.rows: list[tuple[int, str, float]] = []  # (ts, name, value), arrival order

    def add(self, ts: np.ndarray, names: np.ndarray, values: np.ndarray) -> None:
        keep = np.isin(names, list(self.names))
        self.rows += list(zip(ts[keep].tolist(), names[keep].tolist(), values[keep].tolist()))

    def prune(self, oldest_end: int) -> None:
        """Forget rows no window bar needs: keep per name the last row before ``oldest_end`` and all later."""
        last: dict[str, tuple[int, str, float]] = {}
        later = []
        for row in sorted(self.rows, key=lambda r: r[0]):
            if row[0] < oldest_end:
                last[row[1]] = row
            else:
                later.append(row)
        self.rows = sorted(last.values(), key=lambda r: r[0]) + later

    def batch(self, symbol: str) -> pa.RecordBatch | None:
        if not self.rows:
            return None
        ts, names, values = zip(*self.rows)
        n = len(ts)
        return pa.RecordBatch.from_arrays(
            [pa.array(["pre_paper"] * n), pa.array([symbol] * n), pa.array(ts, pa.int64()), pa.array(names),
             pa.array(values, pa.float64()), pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())], schema=SIGNAL,
        )  # fmt: skip


class SymbolRunner:
    """The state of one symbol (see the module docstring).

    Args:
        symbol: the instrument.
        settings: :class:`RunnerSettings`.
        calendar: the instrument's trading calendar.
        cache: the shared history cache.
        providers: the node's providers (a ProviderChain) or None.
        ctx: the ``pre_paper`` node's context (shard, run id) for the inner strategy node.
    """

    def __init__(self, symbol: str, settings: RunnerSettings, calendar: TradingCalendar, cache: HistoryCache,
                 providers: Any, ctx: OperatorContext) -> None:  # fmt: skip
        self.symbol = symbol
        self.settings = settings
        self.calendar = calendar
        self.cache = cache
        self.providers = providers
        self.ctx = ctx
        self._strategy_params = StrategyNodeParams.model_validate(settings.strategy_params)
        p = self._strategy_params
        self.signals = _Signals({n: k for n, k in ((p.signal, "signal"), (p.spread, "spread")) if n})
        self.window = {name: np.empty(0, np.int64 if name == "ts" else np.float64) for name in _FIELDS}
        self.pending: list[dict[str, float]] = []  # live bars not yet written to the cache
        self.inner: StrategyNode | None = None
        self.status = HistoryStatus.LOADING
        self.reason: str | None = "no history check yet"
        self.live_since: int | None = None
        self.last_fetch: int | None = None
        self.fetch_note: tuple[str, str] | None = None  # (when, what) of the last backfill that left gaps
        self.signature: tuple | None = None
        self.first_check: dict | None = None
        self.last_check: dict | None = None
        self.no_signals: dict[str, Any] | None = None  # the open NO-SIGNALS period
        self.cache_position: int | None = None  # newest ts this runner wrote to the cache
        self.decided_through: int | None = None  # newest bar the strategy decided on
        self.counts = {"bars": 0, "decisions": 0, "signals": 0, "suppressed_bars": 0, "no_signals_periods": 0,
                       "degraded_periods": 0, "fetches": 0, "outside_session": 0, "out_of_order": 0, "seeded_bars": 0}  # fmt: skip

    # -- checks ---------------------------------------------------------------------------
    def start(self, now: int, before: int | None = None) -> list[dict]:
        """The first check (the cache's window, a backfill of its gaps up to ``before``: the
        first live bar held); returns events."""
        events: list[dict] = []
        result = self._fetch_check(now, events, trigger="start", before=before)
        return events + self._record(result, now, trigger="start", force=True)

    def _assessment(self, now: int) -> tuple[HistoryCheckResult, bool]:
        """The in-memory check at ``now``, and whether a backfill could fill any of its gaps."""
        found = assess(self.window["ts"], self.calendar, self.settings.timeframe, now, required=self.settings.required_bars,
                       grace_s=self.settings.grace_s, live_since=self.live_since)  # fmt: skip
        reason = found.reason
        if reason is not None and self.fetch_note is not None:
            reason += f"; last backfill ({self.fetch_note[0]}): {self.fetch_note[1]}"
        result = check_result(found, self.symbol, self.settings.timeframe, self.settings.timeframe, self.calendar,
                              required=self.settings.required_bars, checked_at=now, reason=reason)  # fmt: skip
        return result, bool(found.fetchable)

    def _fetch_check(self, now: int, events: list[dict], trigger: str, before: int | None = None) -> HistoryCheckResult:
        """``ensure_history`` on the cache (backfilling the gaps), then re-read the window."""
        self.flush()
        self.last_fetch = now

        def observe(loading: HistoryCheckResult) -> None:
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
        cached = self.cache.last(self.symbol, self.settings.timeframe, before, self.settings.required_bars)
        self.window = {name: np.asarray(getattr(cached, name)) for name in _FIELDS}

    def check(self, now: int, trigger: str, before: int | None = None) -> tuple[HistoryCheckResult, list[dict]]:
        """Check the window at ``now``; backfill (bars opening before ``before``) when not
        SUFFICIENT and a fetch is due. Returns (result, events)."""
        events: list[dict] = []
        result, fetchable = self._assessment(now)
        due = self.last_fetch is None or now - self.last_fetch >= self.settings.backfill_retry_ns
        if result.status is not HistoryStatus.SUFFICIENT and fetchable and due and self.settings.auto_backfill and self.providers is not None:
            result = self._fetch_check(now, events, trigger, before)
        return result, events + self._record(result, now, trigger=trigger, force=bool(result.fetches))

    def _record(self, result: HistoryCheckResult, now: int, *, trigger: str, force: bool = False) -> list[dict]:
        """Events for a check: the check itself when its outcome changed, a status change."""
        out: list[dict] = []
        kind = (result.reason or "").split(":", 1)[0]
        signature = (result.status, kind, len(result.gaps))
        detail = {**result.to_dict(), "trigger": trigger}
        if force or signature != self.signature:
            out.append(event(self.symbol, now, "check", status=result.status.value, reason=result.reason, detail=detail))
            self.signature = signature
        if result.status is HistoryStatus.LOADING:
            self.first_check = self.first_check or detail
            return out
        self.last_check = detail
        self.first_check = self.first_check or detail
        if result.status is not self.status:
            if result.status is HistoryStatus.DEGRADED:
                self.counts["degraded_periods"] += 1
            out.append(event(self.symbol, now, "status", status=result.status.value, reason=result.reason,
                             detail={"from": self.status.value, "to": result.status.value, "trigger": trigger}))  # fmt: skip
            self.status = result.status
        self.reason = result.reason
        if result.status is not HistoryStatus.SUFFICIENT:
            self.inner = None  # its history has a hole: re-seed once sufficient again
        return out

    # -- bars -----------------------------------------------------------------------------
    def on_bar(self, bar: dict[str, Any], now: int) -> tuple[pa.RecordBatch | None, dict[str, Any] | None, list[dict]]:
        """One confirmed bar (``ts`` and :data:`~pre_paper.cache.BAR_COLUMNS`, ``trade_count``).

        Returns:
            (the strategy's DECISION row or None, the paper-execution row or None, events).
        """
        ts = int(bar["ts"])
        if len(self.window["ts"]) and ts == int(self.window["ts"][-1]) and (self.decided_through is None or ts > self.decided_through):
            self._drop_newest()  # a backfill brought this slot first: the live bar replaces it
        if len(self.window["ts"]) and ts <= int(self.window["ts"][-1]):
            self.counts["out_of_order"] += 1
            return None, None, [event(self.symbol, now, "out_of_order_bar", ts=ts, reason=f"confirmed {self.settings.timeframe} bar not newer than the last one")]
        if self.calendar.index(self.settings.timeframe, ts)[0] < 0:
            self.counts["outside_session"] += 1
            return None, None, []
        self.counts["bars"] += 1
        if self.live_since is None:
            self.live_since = ts
        self._append(bar)
        result, events = self.check(now, trigger="bar")
        if result.status is HistoryStatus.SUFFICIENT:
            events += self._end_no_signals(now, ts)
            if self.inner is None:
                self._seed()
            decision = self._decide(bar)
            return decision, None, events
        events += self._no_signal(now, ts, result.reason)
        return None, self._hold_row(bar), events

    def _drop_newest(self) -> None:
        self.window = {name: values[:-1] for name, values in self.window.items()}

    def _append(self, bar: dict[str, Any]) -> None:
        keep = self.settings.required_bars
        for name in _FIELDS:
            value = np.asarray([bar.get(name, np.nan)], dtype=self.window[name].dtype)
            self.window[name] = np.concatenate([self.window[name], value])[-keep:]
        self.pending.append({name: bar.get(name, np.nan) for name in _FIELDS})
        self.signals.prune(int(bar_end(int(self.window["ts"][0]), self.settings.timeframe)))

    def flush(self) -> None:
        """Write the pending live bars to the cache (source ``websocket``)."""
        if not self.pending:
            return
        rows = {name: np.asarray([p[name] for p in self.pending]) for name in _FIELDS}
        self.cache.append(self.symbol, self.settings.timeframe, self.calendar.tz, rows, "websocket", self._clock())
        self.cache_position = int(rows["ts"][-1])
        self.pending = []

    def _clock(self) -> int:
        return int(self.ctx.clock_ns()) if self.ctx.clock_ns is not None else 0

    def on_signals(self, batch: pa.RecordBatch) -> None:
        """SIGNAL rows of this symbol: kept for re-seeding, and given to the live strategy node."""
        self.signals.add(batch.column("ts").to_numpy(), batch.column("name").to_numpy(zero_copy_only=False),
                         batch.column("value").to_numpy(zero_copy_only=False))  # fmt: skip
        if self.inner is not None:
            self.inner.on_batch("signals", batch)

    def _bars_batch(self, rows: dict[str, np.ndarray]) -> pa.RecordBatch:
        n = len(rows["ts"])
        columns = {
            "symbol": pa.array([self.symbol] * n), "timeframe": pa.array([self.settings.timeframe] * n),
            "trade_count": pa.array(np.zeros(n, np.int64)), "status": pa.array([BAR_CONFIRMED] * n),
            **{name: pa.array(np.asarray(rows[name]), BAR.field(name).type) for name in _FIELDS},
        }  # fmt: skip
        return pa.RecordBatch.from_arrays([columns[f.name] for f in BAR], schema=BAR)

    def _new_inner(self) -> StrategyNode:
        ctx = OperatorContext(node_id=f"{self.settings.node_id}.strategy", shard=self.ctx.shard, num_shards=self.ctx.num_shards,
                              base_dir=self.ctx.base_dir, run_id=self.ctx.run_id)  # fmt: skip
        return StrategyNode(self._strategy_params, ctx)

    def _seed(self) -> None:
        """A fresh strategy node fed the window's bars before the newest (warm-up, not emitted)."""
        self.inner = self._new_inner()
        history = {name: values[:-1] for name, values in self.window.items()}
        signals = self.signals.batch(self.symbol)
        if signals is not None:
            self.inner.on_batch("signals", signals)
        if len(history["ts"]):
            self.inner.on_batch("bars", self._bars_batch(history))
            self.inner.on_watermark(int(bar_end(int(history["ts"][-1]), self.settings.timeframe)))
            self.counts["seeded_bars"] += len(history["ts"])

    def _decide(self, bar: dict[str, Any]) -> pa.RecordBatch:
        self.inner.on_batch("bars", self._bars_batch({name: np.asarray([bar.get(name, np.nan)]) for name in _FIELDS}))
        emits = self.inner.on_watermark(int(bar_end(int(bar["ts"]), self.settings.timeframe)))
        decisions = [batch for stream, batch in emits if stream == "decisions"]
        if len(decisions) != 1 or decisions[0].num_rows != 1:
            raise RuntimeError(f"pre_paper {self.symbol}: the strategy node decided {sum(b.num_rows for b in decisions)} rows for one bar")
        row = decisions[0]
        self.decided_through = int(bar["ts"])
        self.counts["decisions"] += 1
        if np.isfinite(row.column("target")[0].as_py()):
            self.counts["signals"] += 1
        return row

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
        result, _ = self._assessment(now)
        events = self._record(result, now, trigger="final", force=True)
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
            (self.signature[0].value, *self.signature[1:]), "first_check": self.first_check, "last_check": self.last_check,
            "no_signals": dict(self.no_signals) if self.no_signals else None, "cache_position": self.cache_position,
            "decided_through": self.decided_through,
            "counts": dict(self.counts), "signals": list(self.signals.rows),
            "inner": self.inner.snapshot() if self.inner is not None else None,
        }  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state`."""
        self.window = {k: np.asarray(v).copy() for k, v in state["window"].items()}
        self.status, self.reason = HistoryStatus(state["status"]), state["reason"]
        self.live_since, self.last_fetch, self.fetch_note = state["live_since"], state["last_fetch"], state["fetch_note"]
        sig = state["signature"]
        self.signature = None if sig is None else (HistoryStatus(sig[0]), *sig[1:])
        self.first_check, self.last_check = state["first_check"], state["last_check"]
        self.no_signals = dict(state["no_signals"]) if state["no_signals"] else None
        self.cache_position, self.counts = state["cache_position"], dict(state["counts"])
        self.decided_through = state["decided_through"]
        self.signals.rows = list(state["signals"])
        self.inner = None
        if state["inner"] is not None:
            self.inner = self._new_inner()
            self.inner.restore(state["inner"])


def _utc(ns: int):
    import pandas as pd

    return pd.Timestamp(int(ns), tz="UTC")


def _iso(ns: int | None, tz: str) -> str | None:
    return None if ns is None else _utc(ns).tz_convert(tz).isoformat()

