"""Validation suites of a backtest, all seeded (``RunConfig.seed``): same config, same numbers.

* **Permutation test** (Masters, "Permutation and Randomization Tests for Trading
  System Development", 2020; White's reality check in spirit): each trial shuffles
  every symbol's close-to-close log returns (each bar keeps its open/high/low relative
  to its close, its volume, signal and spread), rebuilds the prices from the first
  close, re-runs the strategy and the sleeves, and takes the book's Sharpe. ``p_value
  = (1 + #{trial Sharpe >= observed}) / (1 + trials)``; an undefined Sharpe (no trade,
  flat equity) counts as 0. Shuffling keeps the returns' distribution (so a constant
  drift survives it) and destroys their order: a small p says the strategy's edge
  comes from the order of returns (trends, reversals), not from their distribution.
* **Block bootstrap** of the Sharpe ratio: circular blocks (Politis & Romano, 1992)
  of ``block_bars`` (default round(sqrt(n))) of the book's per-bar returns, resampled
  to n bars ``samples`` times; the percentile interval at ``confidence``.
* **Monte Carlo of trade order**: the closed trades' pnl in ``samples`` random orders;
  each order's equity path (initial cash + cumulative pnl) gives a max drawdown; the
  observed order's drawdown, the 5/50/95 % quantiles, and the share of orders worse.
* **Walk-forward**: rolling windows over the book's bars: ``in_sample_bars`` choose the
  best Sharpe among ``grid``'s parameter sets, the next ``out_of_sample_bars`` score
  that choice; then the windows move on by ``out_of_sample_bars``. Each set is
  simulated once over all bars (a strategy only looks back, so its return on a bar
  depends on nothing later) and windows read its per-bar returns. Reported: each
  fold's choice and scores, and the out-of-sample bars' Sharpe and compounded return.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from pydantic import ValidationError

from backtest.engine import Series, book_curve, execution_params, strategy_targets
from backtest.metrics import bar_returns, max_drawdown, sharpe
from strategies.base import History

__all__ = ["permute_series", "book_returns", "permutation_test", "bootstrap_sharpe", "trade_order_monte_carlo", "walk_forward", "run_validation"]

_SUITES = ("permutation", "bootstrap", "monte_carlo", "walk_forward")


def _rng(seed: int, suite: str) -> np.random.Generator:
    return np.random.default_rng([seed, _SUITES.index(suite)])


def _score(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def permute_series(s: Series, rng: np.random.Generator) -> Series:
    """``s`` with its close-to-close log returns shuffled (see the module docstring)."""
    h = s.history
    n = len(h)
    if n < 3:
        return s
    order = np.r_[0, 1 + rng.permutation(n - 1)]  # bar 0 stays: its close anchors the prices
    log_close = np.log(h.close)
    steps = np.diff(log_close)[order[1:] - 1]
    close = h.close[0] * np.exp(np.r_[0.0, np.cumsum(steps)])  # bar 0's close exactly
    shape = {name: np.log(getattr(h, name) / h.close)[order] for name in ("open", "high", "low", "vwap")}
    history = History(
        ts=h.ts, close=close, volume=h.volume[order], signal=h.signal[order],
        **{name: close * np.exp(rel) for name, rel in shape.items()},
    )  # fmt: skip
    return replace(s, history=history, spread_bps=s.spread_bps[order])


def book_returns(config: Any, series: Mapping[str, Series], params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Per-bar book returns of ``config`` (optionally with other strategy params) on ``series``."""
    targets = strategy_targets(config.strategy.name, params if params is not None else config.strategy.params, series)
    _, equity = book_curve(series, targets, execution_params(config))
    return bar_returns(equity, config.initial_cash)


def permutation_test(config: Any, series: Mapping[str, Series], observed: float, trials: int, seed: int,
                     progress: Callable[[float], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """The permutation test's ``{"trials", "observed_sharpe", "p_value", "sharpe_quantiles"}``."""
    rng = _rng(seed, "permutation")
    scores = np.empty(trials)
    for k in range(trials):
        permuted = {symbol: permute_series(s, rng) for symbol, s in series.items()}
        scores[k] = _score(sharpe(book_returns(config, permuted), config.bars_per_year))
        if progress is not None and (k + 1) % max(1, trials // 20) == 0:
            progress((k + 1) / trials)
    observed = _score(observed)
    return {
        "trials": trials,
        "observed_sharpe": observed,
        "p_value": float((1 + np.sum(scores >= observed)) / (1 + trials)),
        "sharpe_quantiles": _quantiles(scores),
    }


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"5": None, "50": None, "95": None}
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return {"5": float(q[0]), "50": float(q[1]), "95": float(q[2])}


def bootstrap_sharpe(returns: np.ndarray, samples: int, block_bars: int | None, confidence: float, bars_per_year: float, seed: int) -> dict[str, Any]:
    """The block bootstrap's ``{"samples", "block_bars", "confidence", "sharpe", "low", "high"}``."""
    n = len(returns)
    block = block_bars or max(1, round(math.sqrt(n)))
    out: dict[str, Any] = {"samples": samples, "block_bars": block, "confidence": confidence, "sharpe": _score(sharpe(returns, bars_per_year))}
    if n < 2:
        return {**out, "low": None, "high": None}
    rng = _rng(seed, "bootstrap")
    blocks = -(-n // block)
    starts = rng.integers(0, n, size=(samples, blocks))
    index = ((starts[:, :, None] + np.arange(block)) % n).reshape(samples, -1)[:, :n]
    resampled = returns[index]
    std = resampled.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(std > 0, resampled.mean(axis=1) / std * math.sqrt(bars_per_year), 0.0)
    low, high = np.quantile(scores, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {**out, "low": float(low), "high": float(high)}


def trade_order_monte_carlo(pnl: np.ndarray, initial: float, samples: int, seed: int) -> dict[str, Any]:
    """The trade-order Monte Carlo's ``{"samples", "trades", "observed_max_drawdown", "max_drawdown_quantiles", "share_worse"}``."""
    out: dict[str, Any] = {"samples": samples, "trades": int(len(pnl))}
    if len(pnl) < 2:
        return {**out, "observed_max_drawdown": None, "max_drawdown_quantiles": _quantiles(np.empty(0)), "share_worse": None}
    rng = _rng(seed, "monte_carlo")
    observed = max_drawdown(initial + np.cumsum(pnl), initial)
    shuffled = np.array([rng.permutation(pnl) for _ in range(samples)])
    paths = initial + np.cumsum(shuffled, axis=1)
    peaks = np.maximum.accumulate(np.concatenate([np.full((samples, 1), initial), paths], axis=1), axis=1)[:, 1:]
    drawdowns = np.min(paths / peaks - 1.0, axis=1)
    return {**out, "observed_max_drawdown": observed, "max_drawdown_quantiles": _quantiles(drawdowns),
            "share_worse": float(np.mean(drawdowns < observed))}  # fmt: skip


def walk_forward(config: Any, series: Mapping[str, Series], spec: Any) -> dict[str, Any]:
    """The walk-forward's folds and out-of-sample summary (see the module docstring)."""
    from strategies.base import strategy_class

    names = sorted(spec.grid)
    model = getattr(strategy_class(config.strategy.name), "Params", None)
    candidates, skipped, returns = [], [], []
    for values in itertools.product(*(spec.grid[name] for name in names)):
        params = {**config.strategy.params, **dict(zip(names, values))}
        try:
            if model is not None:
                params = model.model_validate(params).model_dump(mode="json")
        except ValidationError:
            skipped.append(dict(zip(names, values)))
            continue
        candidates.append(params)
        returns.append(book_returns(config, series, params))
    folds, oos = [], []
    n = len(returns[0]) if returns else 0
    start = 0
    bpy = config.bars_per_year
    while returns and start + spec.in_sample_bars + spec.out_of_sample_bars <= n:
        split, stop = start + spec.in_sample_bars, start + spec.in_sample_bars + spec.out_of_sample_bars
        scores = [_score(sharpe(r[start:split], bpy)) for r in returns]
        best = int(np.argmax(scores))
        chosen = returns[best][split:stop]
        oos.append(chosen)
        folds.append({
            "in_sample": [start, split], "out_of_sample": [split, stop],
            "params": {name: candidates[best][name] for name in names},
            "in_sample_sharpe": scores[best], "out_of_sample_sharpe": _score(sharpe(chosen, bpy)),
            "out_of_sample_return": float(np.prod(1.0 + chosen) - 1.0),
        })  # fmt: skip
        start += spec.out_of_sample_bars
    joined = np.concatenate(oos) if oos else np.empty(0)
    return {
        "grid": {name: list(spec.grid[name]) for name in names},
        "skipped": skipped,
        "folds": folds,
        "out_of_sample": {
            "bars": int(len(joined)),
            "sharpe": _score(sharpe(joined, bpy)) if len(joined) else None,
            "total_return": float(np.prod(1.0 + joined) - 1.0) if len(joined) else None,
        },
    }


def run_validation(config: Any, series: Mapping[str, Series], returns: np.ndarray, trades_pnl: np.ndarray,
                   progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """``validation.json``: every configured suite's result, keyed by suite name (absent: not run)."""
    spec, seed, out = config.validation, config.seed, {}
    if spec.permutation is not None:
        observed = sharpe(returns, config.bars_per_year)
        report = (lambda f: progress("permutation", f)) if progress else None
        out["permutation"] = permutation_test(config, series, observed, spec.permutation.trials, seed, report)
    if spec.bootstrap is not None:
        b = spec.bootstrap
        out["bootstrap"] = bootstrap_sharpe(returns, b.samples, b.block_bars, b.confidence, config.bars_per_year, seed)
    if spec.monte_carlo is not None:
        out["monte_carlo"] = trade_order_monte_carlo(trades_pnl, config.initial_cash, spec.monte_carlo.samples, seed)
    if spec.walk_forward is not None:
        out["walk_forward"] = walk_forward(config, series, spec.walk_forward)
    return out
