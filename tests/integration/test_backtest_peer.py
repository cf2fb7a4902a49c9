"""Fills equal a peer's: dual_sma on the main job's AMZN and BTCUSDT 1m bars against
backtesting.py (0.6), which fills market orders at the next bar's open.

The bars are those the main job (config/replay.yaml) stored; backtesting.py reads them
from the store through pandas, tickgraph through its ``bar_replay`` graph. Conventions
matched in the peer strategy (and documented in README, *Backtests*):

* a cross closes the open trade and opens the other side (``position.close()`` then
  ``buy``/``sell``), as tickgraph's target positions do;
* size ``f`` = 0.95 of equity in whole units: backtesting.py's fractional ``size``
  means ``(equity x f) // (price x (1 + commission))``, tickgraph's fixed_fraction 0.95;
* the commission is charged on entry and exit (backtesting.py's ``commission``, here
  ``fee_bps``); trades still open at the end are left open (``finalize_trades=False``);
* the SMAs are pandas' rolling means inside backtesting.py and tickgraph's own on its side.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

from backtest.runner import run_backtest
from db.read import read_bars
from tests.backtests import config
from tests.conftest import run_main_job

FRACTION = 0.95


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url, _ = run_main_job(tmp_path_factory.mktemp("main_job"), "local")
    return url


def peer(bars: pd.DataFrame, fast: int, slow: int, commission: float):
    data = pd.DataFrame(
        {"Open": bars.open, "High": bars.high, "Low": bars.low, "Close": bars.close, "Volume": bars.volume},
    ).set_axis(pd.to_datetime(bars.ts.to_numpy(), utc=True).tz_localize(None))

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(lambda c: pd.Series(c).rolling(fast).mean(), self.data.Close)
            self.slow = self.I(lambda c: pd.Series(c).rolling(slow).mean(), self.data.Close)

        def next(self):
            if crossover(self.fast, self.slow):
                self.position.close()
                self.buy(size=FRACTION)
            elif crossover(self.slow, self.fast):
                self.position.close()
                self.sell(size=FRACTION)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(data, SmaCross, cash=100_000, commission=commission, finalize_trades=False).run()


@pytest.mark.parametrize("symbol", ["AMZN", "BTCUSDT"])
@pytest.mark.parametrize("fast,slow", [(10, 30), (5, 20)])
@pytest.mark.parametrize("commission", [0.0, 0.002])
def test_dual_sma_trades_and_final_equity_equal_backtesting_py(store, tmp_path, symbol, fast, slow, commission):
    bars = read_bars(store, symbol=symbol, timeframe="1m").sort_values("ts").reset_index(drop=True)
    stats = peer(bars, fast, slow, commission)
    expected = stats._trades
    run = run_backtest(
        config([symbol], data={"source": "store", "url": store}, strategy={"name": "dual_sma", "params": {"fast": fast, "slow": slow}},
               risk={"model": "fixed_fraction", "fraction": FRACTION}, execution={"fee_bps": commission * 10_000}),
        root=tmp_path,
    )  # fmt: skip
    trades = pq.read_table(run.run_dir / "trades.parquet").to_pandas()
    closed = trades[trades.exit_ts.notna()].reset_index(drop=True)
    assert len(closed) == len(expected) >= 2
    bar_of = {int(ts): i for i, ts in enumerate(bars.ts)}
    np.testing.assert_array_equal([bar_of[int(t)] for t in closed.entry_ts], expected.EntryBar)
    np.testing.assert_array_equal([bar_of[int(t)] for t in closed.exit_ts], expected.ExitBar)
    np.testing.assert_array_equal(np.where(closed.side == "long", closed["size"], -closed["size"]), expected.Size)
    np.testing.assert_allclose(closed.entry_price, expected.EntryPrice, rtol=1e-9)
    np.testing.assert_allclose(closed.exit_price, expected.ExitPrice, rtol=1e-9)
    np.testing.assert_allclose(closed.pnl, expected.PnL, rtol=0, atol=1e-9 * 100_000)
    equity = pq.read_table(run.run_dir / "equity.parquet")
    book = equity.filter(pc.equal(equity.column("symbol"), "*")).column("equity").to_numpy()
    assert book[-1] == pytest.approx(stats["Equity Final [$]"], rel=1e-9)
    # the equity curve too, bar by bar (backtesting.py's starts at its first bar)
    np.testing.assert_allclose(book, stats._equity_curve.Equity.to_numpy(), rtol=1e-9)
