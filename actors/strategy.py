"""The ``strategy`` node kind: a strategy's decision at the close of every confirmed bar.

Input: ``bars`` (BAR batches; only ``confirmed`` bars of ``timeframe`` are used) and,
optionally, ``signals`` (SIGNAL batches; the rows named ``signal`` and ``spread``).
Output ``decisions`` (DECISION schema, ``graph/schemas.py``): one row per confirmed
bar, in (symbol, ts) order per batch, with the bar's OHLCV, the strategy's target
(NaN: keep; also every warm-up bar), the last ``spread_bps`` and the input signal.

Alignment (deterministic for any batching, sharding or arrival order of the two
inputs): a bar is held until the watermark passes its end (``ts + timeframe``; a
``1d`` bar: ``ts`` + 24 h), by which time every signal row with ``ts`` < that end has
arrived (signal nodes release a row once the watermark passes it). Its ``signal`` and
``spread_bps`` are then the last values with event time < the bar's end; its decision
is taken, and it is appended to the symbol's history. ``corrected`` bars (late policy
``amend``) are counted and not re-decided: a decision, once taken, stands, as it
would have live. A bar not newer than the symbol's last one goes to ``quarantine``
(reason ``out_of_order_bar``).

The strategy is one instance per symbol (``strategies/base.py`` protocol), built from
``strategy`` (a built-in name or ``pkg.module:Class``) and ``params``; the same class
runs in the pre-paper runner on live bars.
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import Timeframe
from graph.schemas import BAR_CONFIRMED, BAR_CORRECTED, DECISION, QUARANTINE, stream_source
from graph.timeframes import INTRADAY_NS
from strategies.base import History, decide_by_bars, make_strategy

__all__ = ["StrategyNode", "StrategyNodeParams", "bar_end"]

_DAY_NS = 86_400 * 1_000_000_000
_BAR_FIELDS = ("ts", "open", "high", "low", "close", "volume", "vwap")


def bar_end(ts: np.ndarray | int, timeframe: str) -> np.ndarray | int:
    """End of a bar opened at ``ts`` (int64 ns UTC): ``ts + timeframe``; ``1d``: ``ts`` + 24 h."""
    return ts + INTRADAY_NS.get(timeframe, _DAY_NS)


class StrategyNodeParams(Params):
    """Params of a ``strategy`` node.

    Attributes:
        strategy: a built-in name (``dual_sma``, ``breakout``, ``mean_reversion``) or a
            dotted path ``pkg.module:Class`` (``strategies/base.py`` protocol).
        params: the strategy's own parameters (validated by its ``Params`` model).
        timeframe: the bars it decides on (default ``1m``).
        signal: the ``signals.name`` read as each bar's ``signal`` (default: the
            strategy's declared signal kind, e.g. ``vwap_deviation_bps``; null: none).
        spread: the ``signals.name`` read as each bar's ``spread_bps`` (default
            ``spread_bps``; used by the ``spread_pct`` slippage model).
        history_bars: bars kept per symbol (default: the strategy's ``warmup_bars``).
    """

    strategy: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    timeframe: Timeframe = "1m"
    signal: str | None = None
    spread: str = "spread_bps"
    history_bars: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _strategy_builds(self) -> StrategyNodeParams:
        make_strategy(self.strategy, self.params)  # unknown name or bad params fail here, before any work
        return self


class _Symbol:
    """One symbol's state: the strategy instance, its history, held bars and signals."""

    def __init__(self, strategy: Any, keep: int) -> None:
        self.strategy = strategy
        self.keep = keep
        self.history = {name: np.empty(0, np.int64 if name == "ts" else np.float64) for name in (*_BAR_FIELDS, "signal")}
        self.held: list[dict[str, np.ndarray]] = []  # confirmed bars waiting for the watermark
        self.signals: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # name -> [(ts, value)] not yet applied
        self.last = {"signal": np.nan, "spread": np.nan}


class StrategyNode(Operator):
    """Runs a strategy per symbol on confirmed bars; see the module docstring."""

    Params: ClassVar[type[Params]] = StrategyNodeParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"decisions": DECISION, "quarantine": QUARANTINE}
    keyed: ClassVar[bool] = True

    def __init__(self, params: StrategyNodeParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        probe = make_strategy(params.strategy, params.params)
        self._warmup = int(probe.warmup_bars)
        self._keep = max(params.history_bars or self._warmup, self._warmup)
        declared = getattr(probe, "signal", None)
        self._signal_name = params.signal if params.signal is not None else declared
        self._symbols: dict[str, _Symbol] = {}
        self._counts = {"bars": 0, "decisions": 0, "corrections_ignored": 0, "out_of_order": 0, "signal_rows": 0}

    # -- input ------------------------------------------------------------------------------
    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Hold confirmed bars of the timeframe, and the wanted signal rows, until the watermark."""
        names = batch.schema.names
        if "timeframe" in names and "close" in names:
            self._hold_bars(batch)
        elif "name" in names and "value" in names:
            self._hold_signals(batch)
        else:
            raise ValueError(
                f"strategy node {self.ctx.node_id!r}: stream {stream!r} is neither BAR nor SIGNAL (columns {names})"
            )
        return []

    def _state(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _Symbol(make_strategy(self.params.strategy, self.params.params), self._keep)
        return state

    def _hold_bars(self, batch: pa.RecordBatch) -> None:
        ours = pc.equal(batch.column("timeframe"), self.params.timeframe)
        self._counts["corrections_ignored"] += pc.sum(pc.and_(ours, pc.equal(batch.column("status"), BAR_CORRECTED))).as_py() or 0
        bars = batch.filter(pc.and_(ours, pc.equal(batch.column("status"), BAR_CONFIRMED)))
        if bars.num_rows == 0:
            return
        symbols = bars.column("symbol").to_numpy(zero_copy_only=False)
        columns = {name: bars.column(name).to_numpy(zero_copy_only=False) for name in _BAR_FIELDS}
        for symbol in np.unique(symbols).tolist():
            rows = np.flatnonzero(symbols == symbol)
            self._state(symbol).held.append({name: values[rows] for name, values in columns.items()})

    def _hold_signals(self, batch: pa.RecordBatch) -> None:
        wanted = {n: key for n, key in ((self._signal_name, "signal"), (self.params.spread, "spread")) if n}
        if not wanted:
            return
        names = batch.column("name").to_numpy(zero_copy_only=False)
        keep = np.isin(names, list(wanted))
        if not keep.any():
            return
        self._counts["signal_rows"] += int(keep.sum())
        symbols = batch.column("symbol").to_numpy(zero_copy_only=False)[keep]
        ts = batch.column("ts").to_numpy()[keep]
        value = batch.column("value").to_numpy(zero_copy_only=False)[keep]
        names = names[keep]
        for symbol in np.unique(symbols).tolist():
            for name, key in wanted.items():
                rows = np.flatnonzero((symbols == symbol) & (names == name))
                if len(rows):
                    self._state(symbol).signals.setdefault(key, []).append((ts[rows], value[rows]))

    # -- decisions --------------------------------------------------------------------------
    def on_watermark(self, ts: int) -> list[Emit]:
        """Decide on every held bar whose end is at or before the watermark ``ts``."""
        return self._release(int(ts))

    def on_eof(self) -> list[Emit]:
        """Decide on every held bar."""
        return self._release(None)

    def _release(self, watermark: int | None) -> list[Emit]:
        out, rejected = [], []
        for symbol in sorted(self._symbols):
            state = self._symbols[symbol]
            if not state.held:
                continue
            bars = {name: np.concatenate([h[name] for h in state.held]) for name in _BAR_FIELDS}
            order = np.argsort(bars["ts"], kind="stable")
            bars = {name: values[order] for name, values in bars.items()}
            ready = len(bars["ts"]) if watermark is None else int(np.searchsorted(bar_end(bars["ts"], self.params.timeframe), watermark, side="right"))
            state.held = [{name: values[ready:] for name, values in bars.items()}] if ready < len(bars["ts"]) else []
            if ready:
                decided, bad = self._decide(symbol, state, {name: values[:ready] for name, values in bars.items()})
                out.extend(decided)
                rejected.extend(bad)
        emits: list[Emit] = []
        if out:
            emits.append(("decisions", pa.concat_batches(out) if len(out) > 1 else out[0]))
        if rejected:
            emits.append(("quarantine", pa.RecordBatch.from_pylist(rejected, schema=QUARANTINE)))
        return emits

    def _decide(self, symbol: str, state: _Symbol, bars: dict[str, np.ndarray]) -> tuple[list[pa.RecordBatch], list[dict]]:
        history = state.history
        newest = history["ts"][-1] if len(history["ts"]) else None
        fresh = np.r_[True, bars["ts"][1:] > bars["ts"][:-1]]
        if newest is not None:
            fresh &= bars["ts"] > newest
        rejected = [self._out_of_order(symbol, bars, i) for i in np.flatnonzero(~fresh).tolist()]
        bars = {name: values[fresh] for name, values in bars.items()}
        n = len(bars["ts"])
        if n == 0:
            return [], rejected
        ends = bar_end(bars["ts"], self.params.timeframe)
        values = {key: self._values_at(state, key, ends) for key in ("signal", "spread")}
        merged = {name: np.concatenate([history[name], bars[name]]) for name in _BAR_FIELDS}
        merged["signal"] = np.concatenate([history["signal"], values["signal"]])
        first = len(history["ts"])
        window = History(**merged)
        decide = getattr(state.strategy, "decide", None)
        targets = decide(window, first) if callable(decide) else decide_by_bars(state.strategy, window, first, symbol, self.params.timeframe)
        targets = np.asarray(targets, dtype=np.float64)
        keep = max(state.keep, 1)
        state.history = {name: column[-keep:] for name, column in merged.items()}
        self._counts["bars"] += n
        self._counts["decisions"] += int(np.isfinite(targets).sum())
        columns = [
            pa.array(np.full(n, symbol, dtype=object), pa.string()),
            pa.array(np.full(n, self.params.timeframe, dtype=object), pa.string()),
            pa.array(bars["ts"], pa.int64()),
            *(pa.array(bars[name], pa.float64()) for name in ("open", "high", "low", "close", "volume")),
            pa.array(targets, pa.float64()),
            pa.array(values["spread"], pa.float64()),
            pa.array(values["signal"], pa.float64()),
        ]
        return [pa.RecordBatch.from_arrays(columns, schema=DECISION)], rejected

    def _values_at(self, state: _Symbol, key: str, ends: np.ndarray) -> np.ndarray:
        """The last held value of signal ``key`` with ts < each end (carried across calls)."""
        parts = state.signals.pop(key, [])
        last = state.last[key]
        if not parts:
            return np.full(len(ends), last)
        ts = np.concatenate([p[0] for p in parts])
        value = np.concatenate([p[1] for p in parts])
        order = np.argsort(ts, kind="stable")
        ts, value = ts[order], value[order]
        upto = np.searchsorted(ts, ends, side="left")  # rows with ts < end
        out = np.where(upto > 0, value[np.maximum(upto - 1, 0)], last)
        used = int(upto[-1])
        if used:
            state.last[key] = float(value[used - 1])
        if used < len(ts):
            state.signals[key] = [(ts[used:], value[used:])]
        return out

    def _out_of_order(self, symbol: str, bars: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        self._counts["out_of_order"] += 1
        ts = int(bars["ts"][i])
        return {
            "source": stream_source(self.ctx.node_id, "bars", symbol),
            "row": ts,
            "symbol": symbol,
            "ts": ts,
            "reason": "out_of_order_bar",
            "detail": f"confirmed {self.params.timeframe} bar {symbol} ts={ts} is not newer than the last bar decided on; no decision taken",
            "raw": json.dumps({name: (int(v[i]) if name == "ts" else float(v[i])) for name, v in bars.items()}),
        }

    # -- metrics and checkpoints ------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Counters: ``bars`` decided on, ``decisions`` (non-NaN targets), ignored corrections, ..."""
        return {"strategy": self.params.strategy, **self._counts}

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every symbol's state (strategy instance, history, held rows) and the counters."""
        return copy.deepcopy({"symbols": self._symbols, "counts": self._counts})

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` of a node with the same params."""
        state = copy.deepcopy(state)
        self._symbols, self._counts = state["symbols"], state["counts"]
