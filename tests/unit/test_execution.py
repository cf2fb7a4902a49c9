"""The execution layer without Ray: a sleeve's fills, fees, slippage, borrow and sizing
(actors/sleeve.py, actors/sizing.py) on hand-worked timelines, and the ``execution``
operator's batching and snapshot/restore.

Timelines: ``bar k: o=.. c=.. target`` -- a target decided at bar k's close fills at
bar k+1's open. Expected numbers are worked by hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from actors.execution import Execution, ExecutionParams, sleeve_settings
from actors.sizing import RiskParams, exposure
from actors.sleeve import Sleeve, SleeveSettings, SlippageParams
from graph.operator import OperatorContext
from graph.schemas import DECISION
from tests.backtests import MINUTE, decision_rows, synthetic_series

NAN = math.nan


def settings(**kw) -> SleeveSettings:
    base = dict(risk=RiskParams(fraction=0.5), slippage=SlippageParams(), fee_bps=0.0, borrow_bps=0.0, bars_per_year=100.0)
    return SleeveSettings(**{**base, **kw})


def rows(opens, closes, targets, volume=1_000.0, spread=NAN):
    n = len(opens)
    return {"ts": 1_000 + MINUTE * np.arange(n), "open": np.array(opens, float), "close": np.array(closes, float),
            "volume": np.full(n, volume), "target": np.array(targets, float), "spread_bps": np.full(n, spread)}  # fmt: skip


def test_fills_at_the_next_open_with_fees_on_entry_and_exit():
    # bar 0: o=100 c=101 +1 | bar 1: o=102 c=103 | bar 2: o=104 c=100 -1 | bar 3: o=99 c=98
    # bar 1 buys (0.5 x 10,000) // (102 x 1.001) = 48 at 102, fee 4.896: cash 5,099.104
    # bar 3 sells the 48 at 99 (fee 4.752): cash 9,846.352 = the equity sized from;
    #   then (0.5 x 9,846.352) // (99 x 1.001) = 49 short at 99 (fee 4.851): cash 14,692.501
    sleeve = Sleeve("X", 10_000.0, settings(fee_bps=10.0))
    fills, trades, equity = sleeve.process(rows([100, 102, 104, 99], [101, 103, 100, 98], [1, NAN, -1, NAN]))
    assert [(f["ts"], f["quantity"], f["price"]) for f in fills] == [
        (1_000 + MINUTE, 48.0, 102.0), (1_000 + 3 * MINUTE, -48.0, 99.0), (1_000 + 3 * MINUTE, -49.0, 99.0),
    ]  # fmt: skip
    assert [f["decision_ts"] for f in fills] == [1_000, 1_000 + 2 * MINUTE, 1_000 + 2 * MINUTE]
    np.testing.assert_allclose([f["fee"] for f in fills], [4.896, 4.752, 4.851], rtol=1e-12)
    np.testing.assert_allclose(equity["equity"], [10_000, 5_099.104 + 48 * 103, 5_099.104 + 48 * 100, 14_692.501 - 49 * 98], rtol=1e-12)
    np.testing.assert_array_equal(equity["position"], [0, 48, 48, -49])
    (trade,) = trades
    assert (trade["side"], trade["size"], trade["entry_price"], trade["exit_price"]) == ("long", 48.0, 102.0, 99.0)
    assert trade["pnl"] == pytest.approx(48 * (99 - 102) - 4.896 - 4.752, rel=1e-12)
    (still_open,) = sleeve.open_trades()
    assert (still_open["side"], still_open["size"], still_open["exit_ts"], still_open["pnl"]) == ("short", 49.0, None, None)


def test_a_decision_on_the_last_bar_is_never_filled_and_waits_for_the_next_bar():
    sleeve = Sleeve("X", 10_000.0, settings())
    fills, _, equity = sleeve.process(rows([100, 100], [100, 100], [NAN, 1]))
    assert fills == [] and equity["position"].tolist() == [0, 0]
    more = rows([110], [111], [NAN])
    more["ts"] = more["ts"] + 2 * MINUTE
    fills, _, _ = sleeve.process(more)
    assert [(f["quantity"], f["price"]) for f in fills] == [(45.0, 110.0)]  # (0.5 x 10,000) // 110


def test_repeating_the_current_target_places_no_order():
    fills, _, _ = Sleeve("X", 10_000.0, settings()).process(rows([100] * 5, [100] * 5, [1, 1, NAN, 1, 1]))
    assert len(fills) == 1


def test_spread_pct_pays_a_fraction_of_the_last_quoted_spread_else_fixed_bps():
    # half of a 20 bps spread: buy at open x 1.001; without quotes 3 bps: sell at open x (1 - 0.0003)
    quoted = Sleeve("X", 10_000.0, settings(slippage=SlippageParams(model="spread_pct", fraction=0.5)))
    fills, _, _ = quoted.process(rows([100, 200], [100, 200], [1, NAN], spread=20.0))
    assert fills[0]["price"] == pytest.approx(200 * 1.001, rel=1e-15) and fills[0]["reference_price"] == 200
    blind = Sleeve("X", 10_000.0, settings(slippage=SlippageParams(model="spread_pct", fixed_bps=3.0)))
    fills, _, _ = blind.process(rows([100, 200], [100, 200], [-1, NAN]))
    assert fills[0]["price"] == pytest.approx(200 * (1 - 0.0003), rel=1e-15) and fills[0]["quantity"] < 0


def test_participation_rate_caps_each_bar_and_carries_the_rest():
    # fraction 1 of 10,000 at 100: 100 units wanted; 10 % of 300 = 30 units per bar
    sleeve = Sleeve("X", 10_000.0, settings(risk=RiskParams(fraction=1.0), slippage=SlippageParams(model="participation_rate", rate=0.1)))
    fills, _, equity = sleeve.process(rows([100] * 6, [100] * 6, [1] + [NAN] * 5, volume=300.0))
    assert [f["quantity"] for f in fills] == [30.0, 30.0, 30.0, 10.0]
    assert equity["position"].tolist() == [0, 30, 60, 90, 100, 100]


def test_a_new_decision_replaces_the_unfilled_rest():
    sleeve = Sleeve("X", 10_000.0, settings(risk=RiskParams(fraction=1.0), slippage=SlippageParams(model="participation_rate", rate=0.1)))
    fills, _, equity = sleeve.process(rows([100] * 5, [100] * 5, [1, 0, NAN, NAN, NAN], volume=300.0))
    # bar 1 fills 30 of 100; bar 1's flat decision replaces the rest: bar 2 sells the 30
    assert [f["quantity"] for f in fills] == [30.0, -30.0]
    assert equity["position"].tolist() == [0, 30, 0, 0, 0]


def test_borrow_accrues_on_short_notional_every_bar():
    # short 10 units at 100 (fraction 0.1 of 10,000); 10,000 bps a year = 100 %; 100 bars a year:
    # each bar costs 10 x close x 1.0 / 100
    sleeve = Sleeve("X", 10_000.0, settings(risk=RiskParams(fraction=0.1), borrow_bps=10_000.0))
    closes = [100, 100, 100, 120, 90, 90]
    fills, trades, equity = sleeve.process(rows([100] * 6, closes, [-1, NAN, NAN, NAN, 0, NAN]))
    cash_after_short = 10_000 + 10 * 100
    costs = [10 * c / 100 for c in (100, 100, 120, 90)]  # bars 1..4 hold the short at their close
    expected_cash = [10_000, cash_after_short - costs[0], cash_after_short - sum(costs[:2]), cash_after_short - sum(costs[:3])]
    np.testing.assert_allclose(equity["cash"][:4], expected_cash, rtol=1e-12)
    (trade,) = trades  # covered at bar 5's open (100): borrow of bars 1..4
    assert trade["borrow_cost"] == pytest.approx(sum(costs), rel=1e-12)
    assert trade["pnl"] == pytest.approx(-sum(costs), rel=1e-12)


def test_fractional_units_invest_the_exact_fraction():
    sleeve = Sleeve("X", 10_000.0, settings(whole_units=False, fee_bps=10.0))
    fills, _, _ = sleeve.process(rows([100, 103], [100, 103], [1, NAN]))
    assert fills[0]["quantity"] == pytest.approx(5_000 / (103 * 1.001), rel=1e-15)


def test_volatility_target_scales_by_trailing_realised_volatility():
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 80)))
    risk = RiskParams(model="volatility_target", target_vol=0.05, lookback=30, max_leverage=3.0)
    realised = pd.Series(np.log(closes)).diff().tail(30).std() * math.sqrt(252)
    assert exposure(risk, -1.0, closes, [], 252) == pytest.approx(-min(0.05 / realised, 3.0), rel=1e-12)
    assert exposure(risk, 1.0, closes[:30], [], 252) == 0.0  # 29 returns: not enough history yet
    calm = RiskParams(model="volatility_target", target_vol=5.0, lookback=30, max_leverage=2.0)
    assert exposure(calm, 1.0, closes, [], 252) == 2.0  # capped


def test_kelly_fraction_from_trailing_trade_statistics():
    # p = 3/5 winners, b = mean win 0.02 / mean loss 0.015: K = 0.6 - 0.4 / (4/3) = 0.3; half Kelly 0.15
    risk = RiskParams(model="kelly_fraction", kelly_multiplier=0.5, min_trades=5, lookback=5, fraction=0.2, max_leverage=1.0)
    assert exposure(risk, 1.0, np.empty(0), [0.02, -0.01, 0.03, -0.02, 0.01], 252) == pytest.approx(0.15, rel=1e-12)
    assert exposure(risk, -1.0, np.empty(0), [0.5, 0.02, -0.01], 252) == pytest.approx(-0.2)  # < min_trades: fraction
    assert exposure(risk, 1.0, np.empty(0), [-0.01] * 5, 252) == 0.0  # no winner: K = 0


def test_sizing_sees_only_trades_closed_before_the_decision():
    # kelly with min_trades 1: the first order uses the fallback fraction; the second the one closed trade
    risk = RiskParams(model="kelly_fraction", min_trades=1, lookback=10, fraction=0.3, kelly_multiplier=1.0)
    sleeve = Sleeve("X", 10_000.0, settings(risk=risk))
    fills, trades, _ = sleeve.process(rows([100, 100, 110, 110, 110], [100, 100, 110, 110, 110], [1, 0, NAN, 1, NAN]))
    assert fills[0]["quantity"] == 30.0  # 0.3 x 10,000 // 100
    assert trades[0]["pnl"] > 0  # one winner, no loser: K = p = 1
    assert fills[2]["quantity"] == (10_300 // 110)


@pytest.mark.parametrize("model", ["none", "spread_pct", "participation_rate"])
def test_batch_size_never_changes_a_bit(model):
    rng = np.random.default_rng(11)
    n = 300
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    targets = np.where(rng.random(n) < 0.05, rng.choice([-1.0, 0.0, 0.5, 1.0], n), NAN)
    series = synthetic_series(closes, volume=400.0, spread_bps=4.0)
    cfg = settings(slippage=SlippageParams(model=model, rate=0.05), fee_bps=2.0, borrow_bps=300.0, risk=RiskParams(fraction=0.9))
    whole = Sleeve("X", 50_000.0, cfg).process(decision_rows(series, targets))
    pieces = Sleeve("X", 50_000.0, cfg)
    got = {"fills": [], "trades": [], "equity": []}
    data = decision_rows(series, targets)
    for lo, hi in zip([0, 1, 7, 8, 150, 151], [1, 7, 8, 150, 151, n]):
        f, t, e = pieces.process({k: v[lo:hi] for k, v in data.items()})
        got["fills"] += f
        got["trades"] += t
        got["equity"].append(e["equity"])
    assert got["fills"] == whole[0] and got["trades"] == whole[1]
    assert np.array_equal(np.concatenate(got["equity"]), whole[2]["equity"])
    assert len(whole[0]) > 10


def decision_batch(symbol: str, series, targets, lo=0, hi=None) -> pa.RecordBatch:
    h = series.history
    hi = len(h) if hi is None else hi
    return pa.RecordBatch.from_pydict({
        "symbol": [symbol] * (hi - lo), "timeframe": ["1m"] * (hi - lo), "ts": h.ts[lo:hi], "open": h.open[lo:hi],
        "high": h.high[lo:hi], "low": h.low[lo:hi], "close": h.close[lo:hi], "volume": h.volume[lo:hi],
        "target": np.asarray(targets[lo:hi], float), "spread_bps": series.spread_bps[lo:hi], "signal": h.signal[lo:hi],
    }, schema=DECISION)  # fmt: skip


def test_the_operator_splits_cash_into_sleeves_and_snapshot_restore_resumes_exactly():
    rng = np.random.default_rng(5)
    a = synthetic_series(100 * np.exp(np.cumsum(rng.normal(0, 0.004, 120))), "A")
    b = synthetic_series(50 * np.exp(np.cumsum(rng.normal(0, 0.004, 120))), "B")
    ta = np.where(rng.random(120) < 0.08, rng.choice([-1.0, 1.0], 120), NAN)
    tb = np.where(rng.random(120) < 0.08, rng.choice([-1.0, 1.0], 120), NAN)
    params = ExecutionParams(symbols=["A", "B"], initial_cash=20_000.0, risk=RiskParams(fraction=0.8), fee_bps=1.0)

    def run(op, lo, hi):
        out = op.on_batch("decisions", pa.concat_batches([decision_batch("A", a, ta, lo, hi), decision_batch("B", b, tb, lo, hi)]))
        return {stream: batch.to_pylist() for stream, batch in out}

    whole = Execution(params, OperatorContext("execution")).on_batch(
        "decisions", pa.concat_batches([decision_batch("A", a, ta), decision_batch("B", b, tb)])
    )
    first = Execution(params, OperatorContext("execution"))
    part1 = run(first, 0, 60)
    restored = Execution(params, OperatorContext("execution"))
    restored.restore(first.snapshot())
    part2 = run(restored, 60, 120)
    run(first, 60, 90)  # the original goes on; the restored copy must not share its state
    whole = {stream: batch.to_pylist() for stream, batch in whole}
    for stream in ("equity", "fills"):
        merged = part1.get(stream, []) + part2.get(stream, [])
        assert sorted(merged, key=lambda r: (r["symbol"], r["ts"])) == sorted(whole[stream], key=lambda r: (r["symbol"], r["ts"]))
    # each sleeve started with half the book; sleeve A's first equity row is its 10,000
    assert whole["equity"][0]["equity"] == 10_000.0


def test_a_decision_for_a_symbol_outside_the_book_is_an_error():
    op = Execution(ExecutionParams(symbols=["A"]), OperatorContext("execution"))
    with pytest.raises(ValueError, match="symbol 'B', which is not in the book's symbols"):
        op.on_batch("decisions", decision_batch("B", synthetic_series([1.0, 2.0], "B"), [NAN, NAN]))


def test_sleeve_settings_carry_the_params():
    s = sleeve_settings(ExecutionParams(symbols=["A"], fee_bps=2.5, units="fractional"))
    assert s.fee_rate == 2.5e-4 and not s.whole_units
