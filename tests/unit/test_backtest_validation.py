"""Validation suites (backtest/validation.py) on seeded synthetic series with known answers.

* a random walk has nothing for dual_sma to find: the permutation p-value is above 0.05
  for at least 18 of 20 seeds;
* a planted drift that switches sign every 100 bars (a trend dual_sma can ride, which
  shuffling the returns destroys) gives p below 0.01.
Short series (400 bars) and the vectorised strategy keep this in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.config import parse_run_config
from backtest.metrics import max_drawdown, sharpe
from backtest.validation import book_returns, bootstrap_sharpe, permutation_test, permute_series, trade_order_monte_carlo, walk_forward
from tests.backtests import synthetic_series

N = 400


def config(**strategy):
    return parse_run_config({
        "symbols": ["X"], "start": 0, "end": 10**19 // 10, "data": {"source": "store"},
        "strategy": {"name": "dual_sma", "params": {"fast": 5, "slow": 20, **strategy}},
        "risk": {"fraction": 1.0}, "execution": {"units": "fractional"}, "bars_per_year": 98_280,
    })  # fmt: skip


def walk(seed: int, drift: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    mu = np.where((np.arange(N) // 100) % 2 == 0, drift, -drift)
    return {"X": synthetic_series(100 * np.exp(np.cumsum(mu + rng.normal(0, 0.002, N))))}


def p_value(series, trials: int, seed: int) -> float:
    cfg = config()
    observed = sharpe(book_returns(cfg, series), cfg.bars_per_year)
    return permutation_test(cfg, series, observed, trials, seed)["p_value"]


def test_random_walks_are_not_significant():
    p = [p_value(walk(seed), 99, seed) for seed in range(20)]
    assert sum(v > 0.05 for v in p) >= 18, p


def test_a_planted_switching_drift_is_significant():
    assert p_value(walk(7, drift=0.001), 199, 7) < 0.01


def test_permutation_keeps_the_returns_and_the_same_seed_gives_the_same_answer():
    s = walk(1)["X"]
    a, b = permute_series(s, np.random.default_rng(5)), permute_series(s, np.random.default_rng(5))
    r = np.diff(np.log(s.history.close))
    r_perm = np.diff(np.log(a.history.close))
    np.testing.assert_allclose(np.sort(r_perm), np.sort(r), atol=1e-12)
    assert not np.allclose(r_perm, r)
    np.testing.assert_array_equal(a.history.close, b.history.close)
    assert a.history.close[0] == s.history.close[0]


def test_bootstrap_interval_brackets_the_sharpe_of_iid_returns():
    rng = np.random.default_rng(2)
    returns = rng.normal(0.0005, 0.01, 2_000)
    out = bootstrap_sharpe(returns, 500, 20, 0.9, 252, seed=3)
    assert out["low"] < out["sharpe"] < out["high"]
    # the interval is about the Sharpe's standard error wide: sqrt(252 / n) per side x 1.645
    half = (out["high"] - out["low"]) / 2
    assert half == pytest.approx(1.645 * math.sqrt(252 / 2_000), rel=0.25)
    assert bootstrap_sharpe(returns, 500, 20, 0.9, 252, seed=3) == out


def test_trade_order_monte_carlo_by_hand():
    # pnl +100, -300, +50 from 1,000: path 1,100, 800, 850 -> max drawdown 800 / 1,100 - 1
    out = trade_order_monte_carlo(np.array([100.0, -300.0, 50.0]), 1_000.0, 400, seed=1)
    assert out["observed_max_drawdown"] == pytest.approx(800 / 1_100 - 1)
    # the six orders give drawdowns: -300 first -> 700/1000-1 = -0.3 is the worst; -300 last: 850/1150-1
    assert out["max_drawdown_quantiles"]["5"] == pytest.approx(-0.3)
    assert out["max_drawdown_quantiles"]["95"] == pytest.approx(850 / 1_150 - 1)
    assert 0 < out["share_worse"] < 1


def test_walk_forward_scores_each_choice_on_the_next_window():
    series = walk(4, drift=0.0008)
    cfg = config()
    spec = type("Spec", (), {"grid": {"fast": [3, 5], "slow": [10, 40]}, "in_sample_bars": 120, "out_of_sample_bars": 60})()
    out = walk_forward(cfg, series, spec)
    assert [f["out_of_sample"] for f in out["folds"]] == [[120, 180], [180, 240], [240, 300], [300, 360]]
    joined = []
    for fold in out["folds"]:
        lo, hi = fold["in_sample"]
        params = {**cfg.strategy.params, **fold["params"]}
        # the chosen set has the best in-sample Sharpe of the four
        scores = [sharpe(book_returns(cfg, series, {**cfg.strategy.params, "fast": f, "slow": s})[lo:hi], 98_280)
                  for f in (3, 5) for s in (10, 40)]  # fmt: skip
        assert fold["in_sample_sharpe"] == pytest.approx(max(scores))
        joined.append(book_returns(cfg, series, params)[slice(*fold["out_of_sample"])])
    joined = np.concatenate(joined)
    assert out["out_of_sample"]["bars"] == 240
    assert out["out_of_sample"]["total_return"] == pytest.approx(np.prod(1 + joined) - 1)
    assert max_drawdown(np.cumprod(1 + joined), 1.0) <= 0
