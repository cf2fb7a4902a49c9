"""Performance metrics of a backtest, from its equity per bar and its closed trades.

Per-bar returns: ``r[t] = equity[t] / equity[t-1] - 1`` with ``equity[-1]`` = the
initial cash (so the first bar's return counts), ``n`` bars. ``A`` = ``bars_per_year``
(525,600 for 24/7 1m bars; 98,280 = 252 x 390 for US equity regular hours).

* ``total_return`` = equity[n-1] / initial - 1.
* ``cagr`` = (equity[n-1] / initial) ** (A / n) - 1 (n bars are n / A years).
* ``sharpe`` = mean(r) / std(r, ddof=1) x sqrt(A), risk-free rate 0: empyrical's
  ``sharpe_ratio(r, annualization=A)`` (Sharpe, "The Sharpe Ratio", J. Portfolio
  Management 1994; arithmetic mean of per-bar returns).
* ``sortino`` = mean(r) x A / (sqrt(mean(min(r, 0)^2)) x sqrt(A)): empyrical's
  ``sortino_ratio`` with required return 0 (Sortino & Price, J. Investing 1994).
* ``max_drawdown`` = min over t of equity[t] / max(initial, max equity up to t) - 1
  (<= 0; the initial cash counts as the first peak, as empyrical's ``max_drawdown``).
* ``trades`` = closed round trips; ``win_rate`` = share with pnl > 0; ``profit_factor``
  = sum of winning pnl / |sum of losing pnl| (pnl net of fees and borrow).
* ``exposure`` = share of bars that end with a position (backtesting.py's "Exposure
  Time"); ``average_exposure`` = mean gross position value / equity.

Undefined values (a Sharpe with fewer than two bars or zero variance, a profit factor
without a losing trade) are None, written as JSON null.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["bar_returns", "sharpe", "sortino", "max_drawdown", "performance", "curves_metrics", "run_metrics"]


def bar_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    """Per-bar simple returns, float64 (n,): ``equity[t] / equity[t-1] - 1``, ``equity[-1] = initial``."""
    previous = np.concatenate(([initial], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return equity / previous - 1.0


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def sharpe(returns: np.ndarray, bars_per_year: float) -> float:
    """Annualised Sharpe ratio (see the module docstring); NaN if undefined."""
    n = len(returns)
    if n < 2:
        return math.nan
    mean = float(returns.sum()) / n
    std = math.sqrt(float(np.square(returns - mean).sum()) / (n - 1))
    return mean / std * math.sqrt(bars_per_year) if std > 0 else math.nan


def sortino(returns: np.ndarray, bars_per_year: float) -> float:
    """Annualised Sortino ratio (see the module docstring); NaN if undefined."""
    n = len(returns)
    if n < 2:
        return math.nan
    downside = math.sqrt(float(np.square(np.minimum(returns, 0.0)).sum()) / n) * math.sqrt(bars_per_year)
    return float(returns.sum()) / n * bars_per_year / downside if downside > 0 else math.nan


def max_drawdown(equity: np.ndarray, initial: float) -> float:
    """Largest peak-to-trough fall as a fraction (<= 0), the initial cash the first peak."""
    if len(equity) == 0:
        return math.nan
    peaks = np.maximum.accumulate(np.concatenate(([initial], equity)))[1:]
    return float(np.min(equity / peaks - 1.0))


def performance(
    equity: np.ndarray, initial: float, bars_per_year: float, pnl: np.ndarray, in_position: np.ndarray, gross: np.ndarray
) -> dict[str, Any]:
    """Every metric of one equity curve (a sleeve or the book).

    Args:
        equity: float64 (n,), quote currency, marked at each bar's close.
        initial: the starting cash.
        bars_per_year: annualisation.
        pnl: float64, the net pnl of this curve's closed trades (canonical trade order).
        in_position: bool (n,), a position at the bar's close.
        gross: float64 (n,), gross position value / equity.

    Returns:
        ``bars, final_equity, total_return, cagr, sharpe, sortino, max_drawdown,
        trades, win_rate, profit_factor, exposure, average_exposure`` (None where undefined).
    """
    n = len(equity)
    returns = bar_returns(equity, initial)
    final = float(equity[-1]) if n else initial
    growth = final / initial
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    return {
        "bars": n,
        "final_equity": final,
        "total_return": growth - 1.0,
        "cagr": _finite(growth ** (bars_per_year / n) - 1.0) if n and growth > 0 else None,
        "sharpe": _finite(sharpe(returns, bars_per_year)),
        "sortino": _finite(sortino(returns, bars_per_year)),
        "max_drawdown": _finite(max_drawdown(equity, initial)),
        "trades": int(len(pnl)),
        "win_rate": float(len(wins) / len(pnl)) if len(pnl) else None,
        "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) else None,
        "exposure": float(np.count_nonzero(in_position)) / n if n else None,
        "average_exposure": _finite(float(np.nanmean(gross))) if n and not np.isnan(gross).all() else None,
    }


def curves_metrics(
    sleeves: dict[str, dict[str, np.ndarray]], pnl: dict[str, np.ndarray], book: dict[str, np.ndarray],
    initial_cash: float, bars_per_year: float,
) -> dict[str, Any]:  # fmt: skip
    """``metrics.json`` from arrays: ``{"book": {...}, "symbols": {symbol: {...}}}``.

    Args:
        sleeves: per symbol ``{"equity", "position", "exposure"}`` arrays of its bars.
        pnl: per symbol, its closed trades' pnl in canonical order (entry, exit).
        book: ``{"equity", "exposure"}`` arrays of the book's bars.
        initial_cash: the book's; each of the n sleeves started with 1/n of it.
        bars_per_year: annualisation.

    The book is in position on a bar when any sleeve is; its trades are all symbols'
    trades (symbol order, then canonical order).
    """
    share = initial_cash / len(sleeves)
    out = {
        symbol: performance(c["equity"], share, bars_per_year, pnl[symbol], c["position"] != 0, c["exposure"])
        for symbol, c in sorted(sleeves.items())
    }
    every = np.concatenate([pnl[s] for s in sorted(sleeves)]) if sleeves else np.empty(0)
    held = book["exposure"] > 0
    return {"book": performance(book["equity"], initial_cash, bars_per_year, every, held, book["exposure"]), "symbols": out}


def run_metrics(equity: pa.Table, trades: pa.Table, symbols: list[str], initial_cash: float, bars_per_year: float) -> dict[str, Any]:
    """:func:`curves_metrics` of a run's EQUITY and TRADE tables (canonical row order)."""
    column = equity.column("symbol")
    sleeves, pnl = {}, {}
    closed = trades.filter(pc.is_valid(trades.column("exit_ts")))
    for symbol in sorted(symbols):
        rows = equity.filter(pc.equal(column, symbol))
        sleeves[symbol] = {name: rows.column(name).to_numpy() for name in ("equity", "position", "exposure")}
        mine = closed.filter(pc.equal(closed.column("symbol"), symbol))
        pnl[symbol] = mine.column("pnl").to_numpy() if mine.num_rows else np.empty(0)
    book = equity.filter(pc.equal(column, "*"))
    return curves_metrics(sleeves, pnl, {name: book.column(name).to_numpy() for name in ("equity", "exposure")}, initial_cash, bars_per_year)
