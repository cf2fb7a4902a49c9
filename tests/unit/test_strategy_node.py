"""The ``strategy`` and ``portfolio`` operators without Ray: alignment of bars and signals,
batching, corrections, out-of-order bars, book aggregation, snapshot/restore.

Timelines: ``b0 b1 | wm`` -- confirmed bars 0 and 1 arrive, then a watermark.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from actors.portfolio import BookState, Portfolio, PortfolioParams, book_equity
from actors.strategy import StrategyNode, StrategyNodeParams
from graph.operator import OperatorContext
from graph.schemas import EQUITY, SIGNAL
from tests.backtests import MINUTE, bar_batch, synthetic_series

T0 = 1_600_000_000 * 1_000_000_000


def node(**params) -> StrategyNode:
    base = {"strategy": "dual_sma", "params": {"fast": 3, "slow": 8}}
    return StrategyNode(StrategyNodeParams.model_validate({**base, **params}), OperatorContext("strategy"))


def decisions(emits) -> list[dict]:
    return [row for stream, batch in emits if stream == "decisions" for row in batch.to_pylist()]


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    """Row lists equal, NaN equal to NaN (pandas)."""
    pd.testing.assert_frame_equal(pd.DataFrame(got), pd.DataFrame(expected), check_exact=True)


def walk(closes: np.ndarray, seed: int = 0) -> np.ndarray:
    return closes if closes is not None else 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.004, 200)))


def test_bars_wait_for_the_watermark_past_their_end():
    # b0 b1 | wm(end of b0) -> only b0 is decided; wm(end of b1) -> b1
    op = node()
    series = synthetic_series(walk(None))
    assert op.on_batch("bars", bar_batch(series, 0, 2)) == []
    first = decisions(op.on_watermark(T0 + MINUTE))
    assert [r["ts"] for r in first] == [T0]
    assert [r["ts"] for r in decisions(op.on_watermark(T0 + 2 * MINUTE))] == [T0 + MINUTE]


@pytest.mark.parametrize("strategy,params", [("dual_sma", {"fast": 3, "slow": 8}), ("breakout", {"lookback": 12})])
def test_batching_never_changes_a_decision(strategy, params):
    series = synthetic_series(walk(None, 3))
    n = len(series.history)
    whole = node(strategy=strategy, params=params)
    whole.on_batch("bars", bar_batch(series))
    expected = decisions(whole.on_eof())
    sliced = node(strategy=strategy, params=params)
    got = []
    for lo in range(0, n, 7):
        sliced.on_batch("bars", bar_batch(series, lo, min(n, lo + 7)))
        got += decisions(sliced.on_watermark(int(series.history.ts[min(n, lo + 7) - 1]) + MINUTE))
    got += decisions(sliced.on_eof())
    assert_same_rows(got, expected)
    assert len(got) == n
    assert sum(np.isfinite(r["target"]) for r in got) > 3


def test_signal_and_spread_are_their_last_values_before_the_bar_end():
    #   signals: dev @ T0+10s = -50 | dev @ T0+60s (bar 1's first instant) = +50 | spread @ T0+59s = 7
    #   bar 0 [T0, T0+60s): signal -50, spread 7;  bar 1: signal +50, spread 7 (carried)
    op = node(strategy="mean_reversion", params={"entry_bps": 40, "exit_bps": 5}, signal="vwap_deviation_bps")
    rows = [
        {"provider": "p", "symbol": "X", "ts": T0 + 10 * 10**9, "name": "vwap_deviation_bps", "value": -50.0, "score": None, "metadata": "{}"},
        {"provider": "p", "symbol": "X", "ts": T0 + 60 * 10**9, "name": "vwap_deviation_bps", "value": 50.0, "score": None, "metadata": "{}"},
        {"provider": "p", "symbol": "X", "ts": T0 + 59 * 10**9, "name": "spread_bps", "value": 7.0, "score": None, "metadata": "{}"},
        {"provider": "p", "symbol": "X", "ts": T0 + 30 * 10**9, "name": "rsi_14_1m", "value": 99.0, "score": None, "metadata": "{}"},
    ]  # fmt: skip
    series = synthetic_series(np.array([100.0, 101.0, 102.0]))
    op.on_batch("signals", pa.RecordBatch.from_pylist(rows[:1] + rows[2:], schema=SIGNAL))
    op.on_batch("bars", bar_batch(series, 0, 2))
    op.on_batch("signals", pa.RecordBatch.from_pylist(rows[1:2], schema=SIGNAL))  # arrives after the bars: still aligned
    out = decisions(op.on_watermark(T0 + 2 * MINUTE))
    assert [(r["signal"], r["spread_bps"], r["target"]) for r in out] == [(-50.0, 7.0, 1.0), (50.0, 7.0, -1.0)]
    op.on_batch("bars", bar_batch(series, 2, 3))
    (last,) = decisions(op.on_eof())  # no new signal row: bar 2 carries the last values
    assert (last["signal"], last["spread_bps"]) == (50.0, 7.0)
    assert op.metrics()["signal_rows"] == 3


def test_corrected_bars_are_counted_not_re_decided_and_old_bars_quarantined():
    op = node()
    series = synthetic_series(walk(None))
    op.on_batch("bars", bar_batch(series, 0, 5))
    op.on_watermark(T0 + 5 * MINUTE)
    op.on_batch("bars", bar_batch(series, 2, 3, status="corrected"))
    op.on_batch("bars", bar_batch(series, 3, 4))  # a confirmed bar not newer than the last one decided
    op.on_batch("bars", bar_batch(series, 0, 5, status="forming"))
    emits = op.on_watermark(T0 + 6 * MINUTE)
    assert decisions(emits) == []
    (quarantined,) = [b for s, b in emits if s == "quarantine"]
    assert quarantined.column("reason").to_pylist() == ["out_of_order_bar"]
    assert op.metrics()["corrections_ignored"] == 1


def test_strategy_node_snapshot_restore_resumes_exactly():
    series = synthetic_series(walk(None, 9))
    whole = node()
    whole.on_batch("bars", bar_batch(series))
    expected = decisions(whole.on_eof())
    first = node()
    first.on_batch("bars", bar_batch(series, 0, 90))
    got = decisions(first.on_watermark(int(series.history.ts[80])))
    restored = node()
    restored.restore(first.snapshot())
    first.on_batch("bars", bar_batch(series, 90, 120))  # must not leak into the restored copy
    restored.on_batch("bars", bar_batch(series, 90))
    got += decisions(restored.on_eof())
    assert_same_rows(got, expected)


def test_unknown_strategy_or_bad_params_fail_at_validation():
    with pytest.raises(ValueError, match="unknown strategy"):
        StrategyNodeParams.model_validate({"strategy": "nope"})
    with pytest.raises(ValueError, match="slow"):
        StrategyNodeParams.model_validate({"strategy": "dual_sma", "params": {"fast": 9, "slow": 4}})


def equity_rows(symbol: str, ts: list[int], equity: list[float], position=0.0, close=1.0) -> pa.RecordBatch:
    n = len(ts)
    return pa.RecordBatch.from_pydict({
        "symbol": [symbol] * n, "ts": ts, "cash": equity, "position": [position] * n, "close": [close] * n,
        "exposure": [0.0] * n, "equity": equity,
    }, schema=EQUITY)  # fmt: skip


def test_book_equity_carries_each_sleeve_forward_like_pandas_ffill():
    # A trades at minutes 0,1,3; B at 1,2; C never: each has 1,000 of the 3,000 book
    a = equity_rows("A", [T0, T0 + MINUTE, T0 + 3 * MINUTE], [1_000.0, 1_010.0, 990.0])
    b = equity_rows("B", [T0 + MINUTE, T0 + 2 * MINUTE], [1_005.0, 1_020.0])
    book = book_equity(pa.Table.from_batches([b, a]), BookState(["A", "B", "C"], 3_000.0))
    frame = pd.concat([pd.Series(r.column("equity").to_numpy(), index=r.column("ts").to_numpy(), name=s) for s, r in (("A", a), ("B", b))], axis=1)
    expected = frame.sort_index().ffill().fillna(1_000.0).sum(axis=1) + 1_000.0
    assert book.column("ts").to_pylist() == list(expected.index)
    np.testing.assert_allclose(book.column("equity").to_numpy(), expected.to_numpy(), rtol=1e-15)


def test_portfolio_releases_book_rows_by_watermark_and_restores():
    params = PortfolioParams(symbols=["A", "B"], initial_cash=2_000.0)
    op = Portfolio(params, OperatorContext("portfolio"))
    op.on_batch("equity", equity_rows("A", [T0, T0 + MINUTE], [1_000.0, 1_001.0]))
    out = op.on_watermark(T0 + MINUTE)  # bar T0 ended; bar T0+1m has not
    assert out[0][1].column("ts").to_pylist() == [T0] and out[0][1].column("equity").to_pylist() == [2_000.0]
    restored = Portfolio(params, OperatorContext("portfolio"))
    restored.restore(op.snapshot())
    restored.on_batch("equity", equity_rows("B", [T0 + MINUTE], [999.0]))
    (stream, rows), = restored.on_eof()
    assert rows.column("equity").to_pylist() == [1_001.0 + 999.0]
    assert op.on_eof()[0][1].column("equity").to_pylist() == [1_001.0 + 1_000.0]  # the original never saw B
