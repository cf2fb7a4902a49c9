"""The backtest over whole series in this process: the graph's operators' code, without the graph.

Sweeps and validation suites re-run a strategy many times on the same bars (other
params, permuted returns). They do it here: the strategy's ``decide`` over each
symbol's whole history, one :class:`~actors.sleeve.Sleeve` per symbol fed all its rows
at once, and :func:`~actors.portfolio.book_equity` over all sleeves. These are the
classes the ``strategy``, ``execution`` and ``portfolio`` nodes run; the sleeve and the
indicators are batch-size independent, so a run here gives the same bits as the graph
(``tests/integration/test_backtest_graph.py`` checks it).

The input is a :class:`Series` per symbol, rebuilt from a graph run's DECISION rows
(the bars with the signal and spread the strategy saw), so validation sees exactly the
data the backtest saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from actors.execution import ExecutionParams, equity_batch, sleeve_settings
from actors.portfolio import BookState, book_batch, book_totals, sort_outputs
from actors.sleeve import Sleeve
from graph.schemas import EQUITY, FILL, TRADE
from strategies.base import History, decide_by_bars, make_strategy

__all__ = ["Series", "Result", "series_from_decisions", "strategy_targets", "simulate", "simulate_metrics", "book_curve", "execution_params"]


@dataclass(frozen=True)
class Series:
    """One symbol's bars as its strategy saw them.

    Attributes:
        symbol: the instrument.
        history: the bars (with the input signal), oldest first.
        spread_bps: last quoted spread before each bar's end (NaN: none), float64 (n,).
    """

    symbol: str
    history: History
    spread_bps: np.ndarray


@dataclass(frozen=True)
class Result:
    """A simulated backtest: EQUITY (sleeves + book), FILL and TRADE tables in canonical order."""

    equity: pa.Table
    fills: pa.Table
    trades: pa.Table

    def book(self) -> pa.Table:
        """The book's EQUITY rows (``symbol`` = ``"*"``), ascending ts."""
        return self.equity.filter(pa.compute.equal(self.equity.column("symbol"), "*"))


def series_from_decisions(decisions: pa.Table) -> dict[str, Series]:
    """Per symbol (sorted), the :class:`Series` of DECISION rows (any order)."""
    out = {}
    symbols = decisions.column("symbol").to_numpy(zero_copy_only=False)
    for symbol in sorted(set(symbols.tolist())):
        rows = decisions.filter(pa.array(symbols == symbol)).sort_by("ts")
        columns = {name: rows.column(name).to_numpy() for name in ("ts", "open", "high", "low", "close", "volume", "signal")}
        columns["vwap"] = columns["close"]  # DECISION rows do not carry the bar's vwap
        out[symbol] = Series(symbol, History.from_columns(columns), rows.column("spread_bps").to_numpy())
    return out


def strategy_targets(name: str, params: Mapping, series: Mapping[str, Series]) -> dict[str, np.ndarray]:
    """Targets (NaN = keep) of strategy ``name`` with ``params`` on every symbol's whole history."""
    out = {}
    for symbol, s in series.items():
        strategy = make_strategy(name, params)
        decide = getattr(strategy, "decide", None)
        out[symbol] = np.asarray(decide(s.history, 0) if callable(decide) else decide_by_bars(strategy, s.history, 0, symbol), dtype=np.float64)
    return out


def execution_params(config) -> ExecutionParams:
    """The ``execution`` node params of a :class:`~backtest.config.RunConfig`."""
    return ExecutionParams(
        symbols=list(config.symbols),
        initial_cash=config.initial_cash,
        risk=config.risk,
        slippage=config.execution.slippage,
        fee_bps=config.execution.fee_bps,
        borrow_bps=config.execution.borrow_bps,
        units=config.execution.units,
        bars_per_year=config.bars_per_year,
    )


def _sleeves(series: Mapping[str, Series], targets: Mapping[str, np.ndarray], params: ExecutionParams, detail: bool = True):
    settings = sleeve_settings(params)
    cash = params.initial_cash / len(params.symbols)
    for symbol in sorted(series):
        s, h = series[symbol], series[symbol].history
        sleeve = Sleeve(symbol, cash, settings, detail=detail)
        rows = {"ts": h.ts, "open": h.open, "close": h.close, "volume": h.volume, "target": targets[symbol], "spread_bps": s.spread_bps}
        fills, trades, equity = sleeve.process(rows)
        yield symbol, sleeve, fills, trades, equity


def _book(params: ExecutionParams, curves: dict[str, dict[str, np.ndarray]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    values = {
        symbol: {"cash": e["cash"], "equity": e["equity"], "gross": np.abs(e["position"] * e["close"])}
        for symbol, e in curves.items()
    }
    return book_totals(BookState(list(params.symbols), params.initial_cash), {s: e["ts"] for s, e in curves.items()}, values)


def book_curve(series: Mapping[str, Series], targets: Mapping[str, np.ndarray], params: ExecutionParams) -> tuple[np.ndarray, np.ndarray]:
    """Only the book's (bar times int64, equity float64) of :func:`simulate`: no tables (sweeps, validation)."""
    curves = {symbol: equity for symbol, _, _, _, equity in _sleeves(series, targets, params, detail=False)}
    times, totals = _book(params, curves)
    return times, totals["equity"]


def simulate_metrics(series: Mapping[str, Series], targets: Mapping[str, np.ndarray], params: ExecutionParams) -> dict:
    """``metrics.json`` of :func:`simulate` computed from arrays, without building its tables (sweeps)."""
    from backtest.metrics import curves_metrics

    curves, pnl = {}, {}
    for symbol, _, _, trades, equity in _sleeves(series, targets, params, detail=False):
        curves[symbol] = equity
        closed = sorted(trades)  # (entry_ts, exit_ts, pnl): the TRADE table's order
        pnl[symbol] = np.array([p for _, _, p in closed], dtype=np.float64)
    times, totals = _book(params, curves)
    with np.errstate(divide="ignore", invalid="ignore"):
        exposure = np.where(totals["equity"] > 0, totals["gross"] / totals["equity"], np.nan)
    return curves_metrics(curves, pnl, {"equity": totals["equity"], "exposure": exposure}, params.initial_cash, params.bars_per_year)


def simulate(series: Mapping[str, Series], targets: Mapping[str, np.ndarray], params: ExecutionParams) -> Result:
    """Fill ``targets`` per symbol sleeve and aggregate the book.

    Args:
        series: per symbol, its bars (every symbol of ``params.symbols`` that has bars).
        targets: per symbol, float64 (n,) targets aligned with its series.
        params: the execution node's params (cash split, risk, slippage, fees).

    Returns:
        :class:`Result`, the same tables the graph's ``portfolio`` node writes.
    """
    curves, equity, fills, trades = {}, [], [], []
    for symbol, sleeve, f, t, e in _sleeves(series, targets, params):
        curves[symbol] = e
        fills += f
        trades += t + sleeve.open_trades()
        equity.append(equity_batch(symbol, e))
    book = book_batch(*_book(params, curves))
    tables = sort_outputs(
        pa.concat_tables([pa.Table.from_batches(equity, schema=EQUITY), pa.Table.from_batches([book])]),
        pa.Table.from_pylist(fills, schema=FILL),
        pa.Table.from_pylist(trades, schema=TRADE),
    )
    return Result(*tables)
