"""Metrics (backtest/metrics.py) against empyrical-reloaded and pandas on a real equity curve:
dual_sma on the AMZN and BTCUSDT 1m bars computed by pandas from the fixture files."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from actors.execution import ExecutionParams
from actors.sizing import RiskParams
from backtest.engine import Series, simulate, simulate_metrics, strategy_targets
from backtest.metrics import bar_returns, max_drawdown, performance, run_metrics, sharpe, sortino
from strategies import History
from tests.reference import lobster_trades, reference_bars, tardis_trades

BARS_PER_YEAR = 98_280.0


def series_of(symbol: str, frame: pd.DataFrame) -> Series:
    columns = {name: frame[name].to_numpy(float) for name in ("open", "high", "low", "close", "volume", "vwap")}
    columns["ts"] = frame.index.to_numpy(np.int64)
    return Series(symbol, History.from_columns(columns), np.full(len(frame), np.nan))


@pytest.fixture(scope="module")
def inputs():
    series = {"AMZN": series_of("AMZN", reference_bars(lobster_trades(), "1m")),
              "BTCUSDT": series_of("BTCUSDT", reference_bars(tardis_trades(), "1m"))}  # fmt: skip
    targets = strategy_targets("dual_sma", {"fast": 5, "slow": 20}, series)
    params = ExecutionParams(symbols=["AMZN", "BTCUSDT"], initial_cash=100_000.0, risk=RiskParams(fraction=0.9), fee_bps=1.0,
                             bars_per_year=BARS_PER_YEAR)  # fmt: skip
    return series, targets, params


@pytest.fixture(scope="module")
def result(inputs):
    return simulate(*inputs)


def test_the_sweeps_array_path_gives_the_same_metrics_as_the_tables(inputs, result):
    assert simulate_metrics(*inputs) == run_metrics(result.equity, result.trades, ["AMZN", "BTCUSDT"], 100_000.0, BARS_PER_YEAR)


def book(result) -> np.ndarray:
    return result.book().column("equity").to_numpy()


def test_sharpe_sortino_and_max_drawdown_equal_empyrical(result):
    equity = book(result)
    returns = bar_returns(equity, 100_000.0)
    assert np.std(returns) > 0
    assert sharpe(returns, BARS_PER_YEAR) == pytest.approx(empyrical.sharpe_ratio(returns, annualization=BARS_PER_YEAR), rel=1e-12)
    assert sortino(returns, BARS_PER_YEAR) == pytest.approx(empyrical.sortino_ratio(returns, annualization=BARS_PER_YEAR), rel=1e-12)
    assert max_drawdown(equity, 100_000.0) == pytest.approx(empyrical.max_drawdown(returns), rel=1e-12)


def test_returns_start_from_the_initial_cash(result):
    equity = book(result)
    expected = pd.Series(np.r_[100_000.0, equity]).pct_change().to_numpy()[1:]
    np.testing.assert_allclose(bar_returns(equity, 100_000.0), expected, rtol=1e-12)


def test_trade_metrics_equal_pandas_on_the_trades(result):
    metrics = run_metrics(result.equity, result.trades, ["AMZN", "BTCUSDT"], 100_000.0, BARS_PER_YEAR)
    trades = result.trades.to_pandas()
    closed = trades[trades.exit_ts.notna()]
    m = metrics["book"]
    assert m["trades"] == len(closed) > 10
    assert m["win_rate"] == pytest.approx((closed.pnl > 0).mean())
    assert m["profit_factor"] == pytest.approx(closed.pnl[closed.pnl > 0].sum() / -closed.pnl[closed.pnl < 0].sum())
    equity = book(result)
    assert m["total_return"] == pytest.approx(equity[-1] / 100_000.0 - 1, rel=1e-12)
    assert m["cagr"] == pytest.approx((equity[-1] / 100_000.0) ** (BARS_PER_YEAR / len(equity)) - 1, rel=1e-12)
    amzn = result.equity.filter(pa.compute.equal(result.equity.column("symbol"), "AMZN")).to_pandas()
    assert metrics["symbols"]["AMZN"]["exposure"] == pytest.approx((amzn.position != 0).mean())
    assert metrics["symbols"]["AMZN"]["bars"] == 387


def test_undefined_metrics_are_none_not_nan():
    flat = np.full(10, 1_000.0)
    m = performance(flat, 1_000.0, 252, np.empty(0), np.zeros(10, bool), np.zeros(10))
    assert m["sharpe"] is None and m["sortino"] is None and m["profit_factor"] is None and m["win_rate"] is None
    assert m["max_drawdown"] == 0.0 and m["total_return"] == 0.0 and m["exposure"] == 0.0
    assert not math.isnan(m["cagr"])
