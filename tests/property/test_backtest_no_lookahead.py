"""No look-ahead (hypothesis): changing every bar after bar k leaves every decision up to
bar k, and the fills at bar k+1's open, unchanged.

The bars go through the real ``strategy`` and ``execution`` operators. Bar k+1 keeps its
open (the fill price of a decision at bar k's close) and everything else about it and
every later bar is redrawn. Slippage models whose fill at bar k+1 depends on that bar
by definition (``participation_rate`` caps by its volume) are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.execution import Execution, ExecutionParams
from actors.sizing import RiskParams
from actors.sleeve import SlippageParams
from actors.strategy import StrategyNode, StrategyNodeParams
from graph.operator import OperatorContext
from graph.schemas import BAR, SIGNAL

N = 120
T0 = 1_600_000_000 * 1_000_000_000
MINUTE = 60 * 1_000_000_000
STRATEGIES = [
    ("dual_sma", {"fast": 3, "slow": 9}, None),
    ("breakout", {"lookback": 6}, None),
    ("mean_reversion", {"entry_bps": 15, "exit_bps": 3}, "vwap_deviation_bps"),
]


def bars_and_signals(rng: np.random.Generator, n: int, start_close: float) -> tuple[dict, np.ndarray]:
    close = start_close * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    opens = close * np.exp(rng.normal(0, 0.001, n))
    columns = {"open": opens, "close": close, "high": np.maximum(opens, close) * 1.001, "low": np.minimum(opens, close) * 0.999,
               "volume": rng.uniform(100, 1_000, n)}  # fmt: skip
    return columns, rng.normal(0, 20, n)


def run(columns: dict, signal: np.ndarray, spread: np.ndarray, strategy: str, params: dict, signal_name: str | None):
    ts = T0 + MINUTE * np.arange(N)
    bars = pa.RecordBatch.from_pydict({
        "symbol": ["X"] * N, "timeframe": ["1m"] * N, "ts": ts, **columns, "vwap": columns["close"],
        "trade_count": [1] * N, "status": ["confirmed"] * N,
    }, schema=BAR)  # fmt: skip
    rows = [{"provider": "p", "symbol": "X", "ts": int(t) + MINUTE - 1, "name": name, "value": float(v), "score": None, "metadata": "{}"}
            for t, s, p in zip(ts, signal, spread) for name, v in (("vwap_deviation_bps", s), ("spread_bps", p))]  # fmt: skip
    node = StrategyNode(StrategyNodeParams(strategy=strategy, params=params, signal=signal_name), OperatorContext("strategy"))
    node.on_batch("signals", pa.RecordBatch.from_pylist(rows, schema=SIGNAL))
    node.on_batch("bars", bars)
    decisions = pa.concat_batches([b for s, b in node.on_eof() if s == "decisions"])
    execution = Execution(
        ExecutionParams(symbols=["X"], initial_cash=10_000.0, risk=RiskParams(fraction=0.9), fee_bps=3.0, borrow_bps=500.0,
                        slippage=SlippageParams(model="spread_pct", fraction=0.5)),
        OperatorContext("execution"),
    )  # fmt: skip
    emitted = dict(execution.on_batch("decisions", decisions))
    fills = emitted["fills"].to_pandas() if "fills" in emitted else pd.DataFrame(columns=["ts"])
    return decisions.to_pandas(), fills


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, N - 3), which=st.integers(0, len(STRATEGIES) - 1))
def test_bars_after_k_never_change_decisions_up_to_k_or_the_fill_at_k_plus_1(seed, k, which):
    strategy, params, signal_name = STRATEGIES[which]
    rng = np.random.default_rng(seed)
    columns, signal = bars_and_signals(rng, N, 100.0)
    spread = rng.uniform(1, 10, N)
    changed = {name: values.copy() for name, values in columns.items()}
    redraw, redraw_signal = bars_and_signals(rng, N, 80.0)
    for name in changed:
        if name != "open":
            changed[name][k + 1] = redraw[name][k + 1]
        changed[name][k + 2 :] = redraw[name][k + 2 :]
    changed["high"] = np.maximum(changed["high"], np.maximum(changed["open"], changed["close"]))
    changed["low"] = np.minimum(changed["low"], np.minimum(changed["open"], changed["close"]))
    changed_signal, changed_spread = signal.copy(), spread.copy()
    changed_signal[k + 1 :] = redraw_signal[k + 1 :]
    changed_spread[k + 1 :] = rng.uniform(1, 10, N - k - 1)

    decisions, fills = run(columns, signal, spread, strategy, params, signal_name)
    decisions2, fills2 = run(changed, changed_signal, changed_spread, strategy, params, signal_name)
    upto = T0 + MINUTE * k
    pd.testing.assert_frame_equal(decisions[decisions.ts <= upto], decisions2[decisions2.ts <= upto])
    fill_bar = upto + MINUTE
    pd.testing.assert_frame_equal(fills[fills.ts <= fill_bar].reset_index(drop=True), fills2[fills2.ts <= fill_bar].reset_index(drop=True))
