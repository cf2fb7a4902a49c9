"""The strategies (strategies/) without Ray: indicators against pandas, vectorised decisions
against a per-bar loop, the user protocol by dotted path.

Input: AMZN and BTCUSDT 1m bars computed by pandas from the raw fixture files
(tests/reference.py), never by tickgraph's bar engine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from strategies import History, make_strategy, strategy_class
from strategies.base import decide_by_bars
from strategies.dual_sma import DualSma, DualSmaParams
from strategies.indicators import crossed_above, crossed_below, rolling_max, rolling_min, sma
from tests.reference import lobster_trades, reference_bars, tardis_trades


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    return {
        "AMZN": reference_bars(lobster_trades(), "1m"),
        "BTCUSDT": reference_bars(tardis_trades(), "1m"),
    }


def history(frame: pd.DataFrame, signal: np.ndarray | None = None) -> History:
    columns = {name: frame[name].to_numpy(float) for name in ("open", "high", "low", "close", "volume", "vwap")}
    columns["ts"] = frame.index.to_numpy(np.int64)
    if signal is not None:
        columns["signal"] = signal
    return History.from_columns(columns)


@pytest.mark.parametrize("n", [1, 5, 30, 200])
def test_sma_equals_pandas_rolling_mean(bars, n):
    for frame in bars.values():
        close = frame["close"].to_numpy(float)
        expected = pd.Series(close).rolling(n).mean().to_numpy()
        np.testing.assert_allclose(sma(close, n), expected, rtol=1e-12, equal_nan=True)


def test_rolling_max_min_equal_pandas(bars):
    high, low = bars["AMZN"]["high"], bars["AMZN"]["low"]
    np.testing.assert_array_equal(rolling_max(high.to_numpy(float), 20), high.rolling(20).max().to_numpy())
    np.testing.assert_array_equal(rolling_min(low.to_numpy(float), 20), low.rolling(20).min().to_numpy())


def test_sma_of_a_window_is_bitwise_the_sma_of_the_whole_series(bars):
    # the streaming operator computes on its kept window; the sweep on the whole day
    close = bars["AMZN"]["close"].to_numpy(float)
    whole = sma(close, 30)
    for end in (31, 100, 387):
        window = close[end - 31 : end]
        assert sma(window, 30)[-1] == whole[end - 1]


def test_crossovers_follow_backtesting_py_definition():
    #   bar:    0    1    2    3    4    5
    #   a:      1    3    3    1    3    1
    #   b:      2    2    3    2    2    2
    # above at 1; a tie at 2, so the fall at 3 (through the tie) is no cross, as in
    # backtesting.py's lib.crossover; above again at 4, below at 5
    a, b = np.array([1.0, 3, 3, 1, 3, 1]), np.array([2.0, 2, 3, 2, 2, 2])
    assert crossed_above(a, b).tolist() == [False, True, False, False, True, False]
    assert crossed_below(a, b).tolist() == [False, False, False, False, False, True]


@pytest.mark.parametrize("name,params", [
    ("dual_sma", {"fast": 5, "slow": 20}),
    ("dual_sma", {"fast": 10, "slow": 30, "allow_short": False}),
    ("breakout", {"lookback": 15}),
    ("breakout", {"lookback": 40, "allow_short": False}),
])  # fmt: skip
def test_vectorised_decide_equals_the_per_bar_protocol(bars, name, params):
    for frame in bars.values():
        h = history(frame)
        strategy = make_strategy(name, params)
        looped = decide_by_bars(strategy, h, 0)
        np.testing.assert_array_equal(strategy.decide(h, 0), looped)
        assert np.isfinite(looped).sum() >= 1  # the strategy did decide something


def test_mean_reversion_on_real_vwap_deviation_equals_the_per_bar_protocol(bars):
    frame = bars["AMZN"]
    # the deviation of each bar's close from the session VWAP so far (pandas, independent)
    pv = (frame["vwap"] * frame["volume"]).cumsum()
    deviation = ((frame["close"] - pv / frame["volume"].cumsum()) / (pv / frame["volume"].cumsum()) * 1e4).to_numpy()
    h = history(frame, deviation)
    strategy = make_strategy("mean_reversion", {"entry_bps": 30, "exit_bps": 5})
    looped = decide_by_bars(strategy, h, 0)
    np.testing.assert_array_equal(strategy.decide(h, 0), looped)
    expected = np.where(deviation <= -30, 1.0, np.where(deviation >= 30, -1.0, np.where(np.abs(deviation) <= 5, 0.0, np.nan)))
    np.testing.assert_array_equal(looped, expected)


def test_breakout_equals_a_pandas_donchian_channel(bars):
    frame = bars["BTCUSDT"]
    upper = frame["high"].rolling(10).max().shift(1)
    lower = frame["low"].rolling(10).min().shift(1)
    expected = np.where(frame["close"] > upper, 1.0, np.where(frame["close"] < lower, -1.0, np.nan))
    np.testing.assert_array_equal(make_strategy("breakout", {"lookback": 10}).decide(history(frame), 0), expected)


def test_dual_sma_grid_pass_equals_each_parameter_set(bars):
    h = history(bars["AMZN"])
    grid = [DualSmaParams(fast=f, slow=s) for f in (3, 5, 10) for s in (20, 50)]
    matrix = DualSma.decide_grid(h, grid)
    for k, p in enumerate(grid):
        np.testing.assert_array_equal(matrix[k], DualSma(p).decide(h, 0))


def test_dual_sma_first_decision_needs_slow_plus_one_bars():
    assert make_strategy("dual_sma", {"fast": 3, "slow": 7}).warmup_bars == 8


def test_bad_params_name_the_field():
    with pytest.raises(ValidationError, match="slow"):
        make_strategy("dual_sma", {"fast": 20, "slow": 20})
    with pytest.raises(ValidationError, match="slw"):
        make_strategy("dual_sma", {"slw": 3})
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        strategy_class("nope")
    with pytest.raises(ValueError, match="cannot be imported"):
        strategy_class("no_such_module.x:Y")


class Momentum:
    """A user strategy following the bare protocol (no base class): long after 3 rising closes."""

    warmup_bars = 4

    def __init__(self, params):
        self.size = float(params.get("size", 1.0))

    def on_bar(self, bar, history):
        assert len(history) == self.warmup_bars and history.ts[-1] == bar.ts  # the window ends at this bar
        rising = np.all(np.diff(history.close) > 0)
        return self.size if rising else None


def test_a_user_strategy_by_dotted_path(bars):
    cls = strategy_class("tests.unit.test_strategies:Momentum")
    assert cls is Momentum
    frame = bars["AMZN"]
    targets = decide_by_bars(cls({"size": 0.5}), history(frame), 0)
    close = frame["close"].to_numpy()
    rising = pd.Series(np.r_[False, np.diff(close) > 0]).rolling(3).sum().to_numpy() == 3
    np.testing.assert_array_equal(np.isfinite(targets), rising)
    assert set(targets[np.isfinite(targets)]) == {0.5}


def test_a_target_outside_minus_one_to_one_is_an_error():
    class Greedy:
        warmup_bars = 1

        def on_bar(self, bar, history):
            return 2.0

    h = History.from_columns({"ts": np.array([1]), **{k: np.array([1.0]) for k in ("open", "high", "low", "close", "volume")}})
    with pytest.raises(ValueError, match="returned target 2.0 for the bar at ts=1"):
        decide_by_bars(Greedy(), h, 0)
