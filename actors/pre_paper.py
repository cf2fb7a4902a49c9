"""The ``pre_paper`` node kind: a promoted backtest on live bars, speaking only on sufficient history.

Input: ``bars`` (BAR batches; the confirmed bars of the manifest's timeframe are used)
and, for strategies that read one, the ``signals`` their backtest read (SIGNAL).
Keyed by symbol: each symbol's runner (:class:`pre_paper.runner.SymbolRunner`) lives on
one shard; a shard runs the manifest's symbols that hash to it
(``graph.partition.shard_of``), so every symbol has its own status from the start,
bars or not.

Its whole configuration is one backtest's ``run_manifest.json`` (``params.manifest``,
verified by :func:`pre_paper.manifest.load_promoted`): symbols, base timeframe,
strategy and params, execution and risk models. A strategy, execution or symbol
parameter in the node's params is an error (the manifest is the single source of
truth). The params say how history is kept and checked: the cache file, the
providers, ``auto_backfill``, the safety margin, the staleness grace, the calendars,
the clock and whether to simulate paper fills.

Outputs:
    decisions: DECISION rows the backtest's strategy node emitted for the bars decided
        on while the history was SUFFICIENT (the backtest-live parity stream).
    signals: SIGNAL rows of the new targets among them (finite ``target``), named
        ``pre_paper_<strategy>`` (provider ``pre_paper``): what a store keeps.
    events: PRE_PAPER_EVENT rows, the audit trail (``actors/pre_paper_audit.py`` writes it).
    equity, fills, trades: with ``paper_fills: true``, the backtest's own execution node
        (``actors/execution.py``, the manifest's execution and risk models) fed every
        decision, and every NO-SIGNALS bar as "no new target", so paper P&L follows the
        backtest's conventions.
    quarantine: confirmed bars not newer than the symbol's last one.

Clock (``clock``): ``wall`` (live deployments): now = ``OperatorContext.clock_ns``;
``event`` (a replayed session): now = event time, the end of the bar being decided,
or the watermark between bars -- so a replay at any speed gates the same bars.
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors.execution import Execution, ExecutionParams
from actors.strategy import bar_end
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.partition import shard_of
from graph.schemas import BAR_CONFIRMED, BAR_CORRECTED, DECISION, EQUITY, FILL, PRE_PAPER_EVENT, QUARANTINE, QUARANTINE_ROW, SIGNAL, TRADE
from pre_paper.cache import BAR_COLUMNS, HistoryCache
from pre_paper.calendars import trading_calendar
from pre_paper.decider import SharedStrategy
from pre_paper.history import required_bars
from pre_paper.manifest import load_promoted
from pre_paper.params import FORBIDDEN, PrePaperParams
from pre_paper.providers import build_providers
from pre_paper.runner import RunnerSettings, SymbolRunner, event

__all__ = ["PrePaper", "PrePaperParams", "FORBIDDEN"]


class PrePaper(Operator):
    """The pre-paper runner of a backtest manifest's symbols; see the module docstring."""

    Params: ClassVar[type[Params]] = PrePaperParams
    outputs: ClassVar[dict[str, pa.Schema]] = {
        "decisions": DECISION, "signals": SIGNAL, "events": PRE_PAPER_EVENT, "equity": EQUITY, "fills": FILL,
        "trades": TRADE, "quarantine": QUARANTINE,
    }  # fmt: skip
    keyed: ClassVar[bool] = True

    def __init__(self, params: PrePaperParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self.run = load_promoted(params.manifest)
        self.cache = HistoryCache(params.cache)
        providers = build_providers(params.providers, ctx.base_dir, self.run.run_dir) if params.providers else None
        self.required = required_bars(self.run.strategy(), params.safety_margin_bars)
        name = str(self.run.strategy_params["strategy"])
        settings = RunnerSettings(
            timeframe=self.run.timeframe, required_bars=self.required, grace_s=params.staleness_grace_s,
            auto_backfill=params.auto_backfill, backfill_retry_ns=int(params.backfill_retry_s * 1e9),
            strategy_params=self.run.strategy_params, node_id=ctx.node_id, signal_name=f"pre_paper_{name}",
        )  # fmt: skip
        self.settings = settings
        mine = [s for s in self.run.symbols if shard_of(s, ctx.num_shards) == ctx.shard]
        self.runners = {
            s: SymbolRunner(s, settings, trading_calendar(params.calendar_for(s)), self.cache, providers, ctx) for s in sorted(mine)
        }
        self.strategy = SharedStrategy(self.run.strategy_params, ctx)
        self.held: dict[str, list[dict[str, Any]]] = {s: [] for s in self.runners}
        self.now: dict[str, int | None] = {s: None for s in self.runners}  # event clock per symbol
        self.started: set[str] = set()
        self.execution = None
        if params.paper_fills:
            exec_ctx = OperatorContext(node_id=f"{ctx.node_id}.execution", shard=ctx.shard, num_shards=ctx.num_shards, run_id=ctx.run_id)
            self.execution = Execution(ExecutionParams.model_validate(self.run.execution_params), exec_ctx)
        self.counts = {"corrections": 0, "foreign_bars": 0, "other_timeframes": 0}

    # -- clock ----------------------------------------------------------------------------
    def _wall(self) -> int:
        if self.ctx.clock_ns is None:
            raise RuntimeError(f"pre_paper {self.ctx.node_id!r}: clock 'wall' needs OperatorContext.clock_ns")
        return int(self.ctx.clock_ns())

    def _now(self, symbol: str, event_time: int | None) -> int:
        if self.params.clock == "wall":
            return self._wall()
        previous = self.now[symbol]
        now = event_time if previous is None else max(previous, event_time if event_time is not None else previous)
        self.now[symbol] = now
        return now

    def _start(self, symbol: str, at: int | None, out: dict) -> bool:
        """The first check of ``symbol`` (event clock: once an event time ``at`` is known); True once started."""
        if symbol in self.started:
            return True
        if self.params.clock == "event" and at is None and self.now[symbol] is None:
            return False
        now = self._now(symbol, at)
        self.started.add(symbol)
        runner = self.runners[symbol]
        out["events"].append(event(symbol, now, "start", status=runner.status.value, detail=self._identity(symbol)))
        out["events"] += runner.start(now, self._first_held(symbol))
        return True

    def _first_held(self, symbol: str) -> int | None:
        return min((int(b["ts"]) for b in self.held[symbol]), default=None)

    def _first_end(self, symbol: str, watermark: int | None) -> int | None:
        ends = [int(bar_end(b["ts"], self.run.timeframe)) for b in self.held[symbol]]
        if watermark is not None:
            ends = [e for e in ends if e <= watermark] + [watermark]
        return min(ends, default=None)

    def _identity(self, symbol: str) -> dict[str, Any]:
        runner = self.runners[symbol]
        return {
            "run_id": self.ctx.run_id, "node": self.ctx.node_id, "shard": self.ctx.shard, "backtest_atom": self.run.identity(),
            "runtime_config": {
                "symbol": symbol, "base_tf_used": self.run.timeframe, "required_bars": self.required,
                "warmup_bars": self.run.warmup_bars, "safety_margin_bars": self.params.safety_margin_bars,
                "auto_backfill_enabled": self.params.auto_backfill, "providers": [p.kind for p in self.params.providers],
                "calendar": runner.calendar.name, "market_tz": runner.calendar.tz, "clock": self.params.clock,
                "staleness_grace_s": self.params.staleness_grace_s, "backfill_retry_s": self.params.backfill_retry_s,
                "cache": str(self.params.cache), "paper_fills": self.params.paper_fills,
            },
        }  # fmt: skip

    # -- input ----------------------------------------------------------------------------
    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Hold confirmed bars until the watermark passes their end; keep input signal rows."""
        names = batch.schema.names
        out = _outbox()
        if self.params.clock == "wall":
            for symbol in self.runners:
                self._start(symbol, None, out)
        if "timeframe" in names and "close" in names:
            self._hold(batch)
        elif "name" in names and "value" in names:
            symbols = batch.column("symbol").to_numpy(zero_copy_only=False)
            for symbol in sorted(set(symbols.tolist()) & set(self.runners)):
                rows = batch.filter(pa.array(symbols == symbol))
                if self.runners[symbol].on_signals(rows):
                    self.strategy.signals(rows)
        else:
            raise ValueError(f"pre_paper node {self.ctx.node_id!r}: stream {stream!r} is neither BAR nor SIGNAL (columns {names})")
        return self._emits(out)

    def _hold(self, batch: pa.RecordBatch) -> None:
        ours = pc.equal(batch.column("timeframe"), self.run.timeframe)
        self.counts["other_timeframes"] += batch.num_rows - (pc.sum(ours).as_py() or 0)
        corrected = batch.filter(pc.and_(ours, pc.equal(batch.column("status"), BAR_CORRECTED)))
        self.counts["corrections"] += corrected.num_rows  # a decision taken stands, as in the backtest
        bars = batch.filter(pc.and_(ours, pc.equal(batch.column("status"), BAR_CONFIRMED)))
        for row in bars.to_pylist():
            if row["symbol"] in self.held:
                self.held[row["symbol"]].append({k: row[k] for k in ("ts", *BAR_COLUMNS, "trade_count")})
            else:
                self.counts["foreign_bars"] += 1

    # -- decisions ------------------------------------------------------------------------
    def on_watermark(self, ts: int) -> list[Emit]:
        """Decide on every held bar whose end is at or before ``ts``; re-check staleness."""
        out = _outbox()
        for symbol in self.runners:
            self._start(symbol, self._first_end(symbol, int(ts)), out)
        released = self._release(int(ts), out)
        for symbol, runner in self.runners.items():
            now = self._now(symbol, int(ts))
            if symbol in released and runner.checked_at == now:
                continue  # its newest bar was just checked at this very time
            out["events"] += runner.on_clock(now, before=self._first_held(symbol))
        return self._emits(out)

    def on_eof(self) -> list[Emit]:
        """Decide on every held bar, then the final check and summary of every symbol."""
        out = _outbox()
        for symbol in self.runners:
            self._start(symbol, self._first_end(symbol, None), out)
        self._release(None, out)
        for symbol, runner in self.runners.items():
            if symbol in self.started:
                out["events"] += runner.finish(self._now(symbol, None))
            else:  # event clock, and no event time ever reached this symbol
                out["events"].append(event(symbol, max((t for t in self.now.values() if t is not None), default=0), "end",
                                           status=runner.status.value, reason="no bar and no watermark reached the runner",
                                           detail=dict(runner.counts)))  # fmt: skip
        emits = self._emits(out)
        if self.execution is not None:
            emits += self.execution.on_eof()
        return emits

    def _release(self, watermark: int | None, out: dict) -> set[str]:
        """Process the held bars ending by ``watermark`` (all: None); returns the symbols that had some."""
        released: set[str] = set()
        plans: dict[str, list] = {}
        for symbol, runner in self.runners.items():
            held = sorted(self.held[symbol], key=lambda b: b["ts"])
            ready = [b for b in held if watermark is None or bar_end(b["ts"], self.run.timeframe) <= watermark]
            self.held[symbol] = held[len(ready):]
            if ready:
                nows = [self._now(symbol, int(bar_end(bar["ts"], self.run.timeframe))) for bar in ready]
                segments, paper, events = runner.on_bars(ready, nows)
                for item in events:
                    if item["kind"] == "out_of_order_bar":
                        bar = next(b for b in ready if int(b["ts"]) == item["ts"])
                        out["quarantine"].append(self._out_of_order(symbol, bar))
                    else:
                        out["events"].append(item)
                if segments:
                    plans[symbol] = segments
                if self.execution is not None:
                    out["paper"] += paper
                released.add(symbol)
        pending = [item for item in (r.take_pending() for r in self.runners.values()) if item is not None]
        if pending:  # one transaction for the shard's live bars
            self.cache.append_many(pending, "websocket", self._wall() if self.ctx.clock_ns is not None else 0)
        if plans:
            batches, _ = self.strategy.decide(plans)
            for batch in batches:
                symbols = batch.column("symbol").to_numpy(zero_copy_only=False)
                for symbol in np.unique(symbols).tolist():
                    self.runners[symbol].decided(batch.filter(pa.array(symbols == symbol)))
                out["decisions"].append(batch)
                if self.execution is not None:
                    out["paper"] += batch.to_pylist()
        return released

    def _out_of_order(self, symbol: str, bar: dict[str, Any]) -> dict[str, Any]:
        return {
            "source": f"{self.ctx.node_id}/bars/{symbol}", "row": int(bar["ts"]), "symbol": symbol, "ts": int(bar["ts"]),
            "reason": "out_of_order_bar", "raw": None,
            "detail": f"confirmed {self.run.timeframe} bar {symbol} ts={int(bar['ts'])} is not newer than the last bar; not used",
        }  # fmt: skip

    def _emits(self, out: dict) -> list[Emit]:
        emits: list[Emit] = []
        if out["decisions"]:
            decisions = pa.concat_batches(out["decisions"])
            emits.append(("decisions", decisions))
            signals = self._signal_rows(decisions)
            if signals.num_rows:
                emits.append(("signals", signals))
        if out["events"]:
            emits.append(("events", pa.RecordBatch.from_pylist(out["events"], schema=PRE_PAPER_EVENT)))
        if out["quarantine"]:
            emits.append(("quarantine", pa.RecordBatch.from_pylist(out["quarantine"], schema=QUARANTINE_ROW)))
        if out["paper"] and self.execution is not None:
            rows = sorted(out["paper"], key=lambda r: (r["symbol"], r["ts"]))
            emits += self.execution.on_batch("decisions", pa.RecordBatch.from_pylist(rows, schema=DECISION))
        return emits

    def _signal_rows(self, decisions: pa.RecordBatch) -> pa.RecordBatch:
        target = decisions.column("target").to_numpy(zero_copy_only=False)
        keep = np.isfinite(target)
        rows = decisions.filter(pa.array(keep))
        n = rows.num_rows
        meta = json.dumps({"manifest_hash": self.run.manifest_hash, "run_id": self.ctx.run_id, "timeframe": self.run.timeframe}, sort_keys=True)
        return pa.RecordBatch.from_arrays(
            [pa.array(["pre_paper"] * n), rows.column("symbol"), rows.column("ts"), pa.array([self.settings.signal_name] * n),
             rows.column("target"), pa.nulls(n, pa.float64()), pa.array([meta] * n)], schema=SIGNAL,
        )  # fmt: skip

    # -- metrics, checkpoints, close --------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Per symbol: status, reason and the counters; and the node's own counters."""
        return {
            "required_bars": self.required,
            "symbols": {s: {"status": r.status.value, "reason": r.reason, **r.counts} for s, r in self.runners.items()},
            **self.counts,
        }

    def status(self) -> dict[str, str]:
        """Symbol -> current history status value."""
        return {s: r.status.value for s, r in self.runners.items()}

    def snapshot(self) -> dict[str, Any]:
        """Every runner's state (window, status, counters, cache position), the strategy node's,
        the held bars, the event clocks and the paper execution (picklable); flushes the cache first."""
        return {
            "runners": {s: r.state() for s, r in self.runners.items()}, "held": copy.deepcopy(self.held),
            "now": dict(self.now), "started": sorted(self.started), "counts": dict(self.counts),
            "execution": self.execution.snapshot() if self.execution is not None else None, "strategy": self.strategy.snapshot(),
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` of a node with the same params."""
        for symbol, runner_state in state["runners"].items():
            self.runners[symbol].load(runner_state)
        self.held = copy.deepcopy(state["held"])
        self.now, self.started, self.counts = dict(state["now"]), set(state["started"]), dict(state["counts"])
        if self.execution is not None and state["execution"] is not None:
            self.execution.restore(state["execution"])
        self.strategy.restore(state["strategy"])

    def close(self) -> None:
        """Write pending bars and close the cache."""
        for runner in self.runners.values():
            try:
                runner.flush()
            except Exception:  # closing after a failure: the cache keeps what it had
                pass
        self.cache.close()


def _outbox() -> dict[str, list]:
    return {"decisions": [], "events": [], "quarantine": [], "paper": []}
