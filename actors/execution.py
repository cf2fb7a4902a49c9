"""The ``execution`` node kind: per-symbol sleeves that fill decisions at the next bar's open.

Input: DECISION batches (``actors/strategy.py``). Outputs, all per symbol sleeve:
``equity`` (EQUITY: one row per decision row, marked at that bar's close), ``fills``
(FILL) and ``trades`` (TRADE: a round trip when it closes; the lots still open at
end-of-stream, with null exit fields). Keyed by symbol: each symbol's sleeve lives on
one shard, so symbols run in parallel. Fill, fee, borrow and sizing conventions are in
``actors/sleeve.py``; the risk models in ``actors/sizing.py``.

Sleeves: the book's ``initial_cash`` is split equally across ``symbols`` (a sleeve per
symbol, each trading its own cash), so a symbol's fills never wait for another's
and the book's equity is the sum of the sleeves (``actors/portfolio.py``). This is
the DAG-friendly form of a multi-asset book: a feedback edge from the portfolio to
execution (shared cash) would make the graph cyclic and the shards sequential.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from actors.sizing import RiskParams
from actors.sleeve import Sleeve, SleeveSettings, SlippageParams
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.schemas import EQUITY, FILL, TRADE

__all__ = ["Execution", "ExecutionParams", "sleeve_settings", "equity_batch"]


class ExecutionParams(Params):
    """Params of an ``execution`` node.

    Attributes:
        symbols: every symbol of the book (the initial cash is split across them).
        initial_cash: the whole book's starting cash, quote currency, > 0.
        risk: the risk model (:class:`~actors.sizing.RiskParams`).
        slippage: the slippage model (:class:`~actors.sleeve.SlippageParams`).
        fee_bps: fee in bps of notional, charged on entry and exit fills, >= 0.
        borrow_bps: borrow cost in bps per year of short notional, >= 0.
        units: ``whole`` (default, as backtesting.py) or ``fractional`` sizes.
        bars_per_year: bars in a year (borrow accrual, volatility), > 0.
    """

    symbols: list[str] = Field(min_length=1)
    initial_cash: float = Field(default=100_000.0, gt=0)
    risk: RiskParams = Field(default_factory=RiskParams)
    slippage: SlippageParams = Field(default_factory=SlippageParams)
    fee_bps: float = Field(default=0.0, ge=0, le=10_000)
    borrow_bps: float = Field(default=0.0, ge=0, le=1_000_000)
    units: Literal["whole", "fractional"] = "whole"
    bars_per_year: float = Field(default=525_600.0, gt=0)

    @field_validator("symbols")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"symbols must be unique, got {value}")
        return value


def sleeve_settings(params: ExecutionParams) -> SleeveSettings:
    """The :class:`SleeveSettings` of an execution node's params."""
    return SleeveSettings(
        risk=params.risk,
        slippage=params.slippage,
        fee_bps=params.fee_bps,
        borrow_bps=params.borrow_bps,
        bars_per_year=params.bars_per_year,
        whole_units=params.units == "whole",
    )


def equity_batch(symbol: str, columns: dict[str, np.ndarray]) -> pa.RecordBatch:
    """An EQUITY batch of one sleeve's columns (``ts, cash, position, close, exposure, equity``)."""
    n = len(columns["ts"])
    arrays = [pa.array(np.full(n, symbol, dtype=object), pa.string())]
    arrays += [pa.array(columns[f.name], f.type) for f in EQUITY if f.name != "symbol"]
    return pa.RecordBatch.from_arrays(arrays, schema=EQUITY)


class Execution(Operator):
    """Fills strategy decisions per symbol sleeve; see the module docstring."""

    Params: ClassVar[type[Params]] = ExecutionParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"equity": EQUITY, "fills": FILL, "trades": TRADE}
    keyed: ClassVar[bool] = True

    def __init__(self, params: ExecutionParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._settings = sleeve_settings(params)
        self._cash = params.initial_cash / len(params.symbols)
        self._sleeves: dict[str, Sleeve] = {}
        self._counts = {"rows": 0, "fills": 0, "trades_closed": 0}

    def sleeve(self, symbol: str) -> Sleeve:
        """The sleeve of ``symbol`` (created with its share of the initial cash).

        Raises:
            ValueError: ``symbol`` is not one of the book's ``symbols``.
        """
        sleeve = self._sleeves.get(symbol)
        if sleeve is None:
            if symbol not in self.params.symbols:
                raise ValueError(
                    f"execution node {self.ctx.node_id!r}: decision for symbol {symbol!r}, "
                    f"which is not in the book's symbols {self.params.symbols}"
                )
            sleeve = self._sleeves[symbol] = Sleeve(symbol, self._cash, self._settings)
        return sleeve

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Apply DECISION rows (any symbols; each symbol's rows in ts order)."""
        if batch.num_rows == 0:
            return []
        self._counts["rows"] += batch.num_rows
        symbols = batch.column("symbol").to_numpy(zero_copy_only=False)
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in ("ts", "open", "close", "volume", "target", "spread_bps")}
        fills, trades, equity = [], [], []
        for symbol in sorted(set(symbols.tolist())):
            rows = np.flatnonzero(symbols == symbol)
            f, t, e = self.sleeve(symbol).process({name: values[rows] for name, values in columns.items()})
            fills += f
            trades += t
            equity.append(equity_batch(symbol, e))
        return self._emits(equity, fills, trades)

    def on_eof(self) -> list[Emit]:
        """Emit the lots still open as TRADE rows with null exit fields."""
        return self._emits([], [], [row for symbol in sorted(self._sleeves) for row in self._sleeves[symbol].open_trades()])

    def _emits(self, equity: list[pa.RecordBatch], fills: list[dict], trades: list[dict]) -> list[Emit]:
        self._counts["fills"] += len(fills)
        self._counts["trades_closed"] += sum(1 for t in trades if t["exit_ts"] is not None)
        out: list[Emit] = []
        if equity:
            out.append(("equity", pa.concat_batches(equity) if len(equity) > 1 else equity[0]))
        if fills:
            out.append(("fills", pa.RecordBatch.from_pylist(fills, schema=FILL)))
        if trades:
            out.append(("trades", pa.RecordBatch.from_pylist(trades, schema=TRADE)))
        return out

    def metrics(self) -> dict[str, Any]:
        """Counters: decision ``rows``, ``fills``, ``trades_closed``."""
        return dict(self._counts)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every sleeve (cash, position, lots, pending/working orders) and the counters."""
        return copy.deepcopy({"sleeves": self._sleeves, "counts": self._counts})

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` of a node with the same params."""
        state = copy.deepcopy(state)
        self._sleeves, self._counts = state["sleeves"], state["counts"]
