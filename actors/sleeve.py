"""One symbol's trading account (a *sleeve*): orders, fills, FIFO lots, cash, equity.

The ``execution`` node keeps one :class:`Sleeve` per symbol; the in-process sweep and
the validation suites drive the same class over whole series, so every path computes
the same bits. Conventions (the same as backtesting.py's broker, see README):

* **Decision -> fill.** A DECISION row's finite ``target`` that differs from the
  current target becomes an order, sized at the decision bar's close (risk model,
  ``actors/sizing.py``) and filled at the **next** bar's open; a decision on the last
  bar is never filled. A new decision replaces any unfilled remainder.
* **Target positions.** The order moves the position to ``desired`` units. Going
  flat or to the other side first closes the whole position; then the new side is
  opened with ``units = (|exposure| x E) // (price x (1 + fee))`` (whole units, the
  default; ``units: fractional`` drops the floor), ``E`` = the cash after closing
  (the sleeve's liquidation value at that fill, net of the closing fee); a resize on
  the same side moves to the units that the same formula gives.
* **Prices.** ``price = open x (1 + s)`` for a buy, ``open x (1 - s)`` for a sell;
  ``s`` = 0 (``none``), ``fraction x spread_bps / 10,000`` of the last quoted spread
  before the fill (``spread_pct``; ``fixed_bps / 10,000`` when no quote was seen), or
  ``impact_bps / 10,000`` (``participation_rate``, which also fills at most ``rate``
  x the fill bar's volume per bar -- the cap uses that bar's traded volume, what it
  could absorb; the decision never sees it -- and carries the rest to later bars).
* **Fees** ``fee_bps`` of notional on every fill, entry and exit (backtesting.py's
  ``commission``, also charged on both sides). **Borrow** ``borrow_bps`` per year on
  the short notional, accrued at every bar's close: ``|position| x close x
  borrow_bps / 10,000 / bars_per_year``.
* **Marking.** After a bar's fills and borrow, ``equity = cash + position x close``.
* **Lots** are matched FIFO into round trips (``TRADE``): pnl = side x size x (exit -
  entry) - entry and exit fees - borrow; ``return_pct`` = pnl / entry notional x 100.

Sums over bars (cash after borrow, a lot's borrow) run sequentially bar by bar, so the
bits do not depend on how rows are batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from actors.sizing import RiskParams, exposure
from graph.operator import Params

__all__ = ["SlippageParams", "SleeveSettings", "Sleeve"]

_BPS = 10_000.0


class SlippageParams(Params):
    """The slippage model (``execution.slippage`` in the run config).

    Attributes:
        model: ``none`` | ``spread_pct`` | ``participation_rate``.
        fraction: spread_pct: the share of the quoted spread paid (0.5 = half spread), [0, 1].
        fixed_bps: spread_pct: the cost in bps when no quote was seen, >= 0.
        rate: participation_rate: the most of a bar's volume filled in it, (0, 1].
        impact_bps: participation_rate: price impact in bps of every fill, >= 0.
    """

    model: Literal["none", "spread_pct", "participation_rate"] = "none"
    fraction: float = Field(default=0.5, ge=0, le=1)
    fixed_bps: float = Field(default=0.0, ge=0, le=10_000)
    rate: float = Field(default=0.1, gt=0, le=1)
    impact_bps: float = Field(default=0.0, ge=0, le=10_000)


@dataclass(frozen=True)
class SleeveSettings:
    """Everything a sleeve needs besides its cash.

    Attributes:
        risk: the risk model.
        slippage: the slippage model.
        fee_bps: fee in bps of notional per fill (>= 0).
        borrow_bps: borrow cost in bps per year of short notional (>= 0).
        bars_per_year: bars in a year (annualises borrow and volatility).
        whole_units: size in whole units (True) or fractional.
    """

    risk: RiskParams
    slippage: SlippageParams
    fee_bps: float
    borrow_bps: float
    bars_per_year: float
    whole_units: bool = True

    @property
    def fee_rate(self) -> float:
        """Fee as a fraction of notional."""
        return self.fee_bps / _BPS


@dataclass
class _Lot:
    side: int  # +1 long, -1 short
    size: float  # units, > 0
    entry_ts: int
    entry_price: float
    fees: float  # entry fee (exit fee added when closed)
    borrow: float = 0.0


@dataclass
class Sleeve:
    """The account of one symbol; :meth:`process` consumes DECISION rows in ts order.

    Attributes:
        symbol: the instrument.
        cash: quote currency (starts at the sleeve's initial cash).
        settings: :class:`SleeveSettings`.
    """

    symbol: str
    cash: float
    settings: SleeveSettings
    position: float = 0.0
    target: float = 0.0
    lots: list[_Lot] = field(default_factory=list)
    pending: tuple[int, float] | None = None  # (decision ts, exposure) to fill at the next open
    working: tuple[int, float] | None = None  # (decision ts, desired units) partly filled
    last_ts: int | None = None
    last_spread: float = math.nan
    closes: np.ndarray = field(default_factory=lambda: np.empty(0))
    trade_returns: list[float] = field(default_factory=list)
    #: False: no FILL rows, and trades only as (entry_ts, exit_ts, pnl) tuples (sweeps' metrics)
    detail: bool = True

    def __post_init__(self) -> None:
        cfg = self.settings
        self._fee_rate = cfg.fee_rate
        self._borrow_per_bar = cfg.borrow_bps / _BPS / cfg.bars_per_year
        self._slippage = cfg.slippage.model
        self._keeps_closes = cfg.risk.model == "volatility_target"
        self._whole = cfg.whole_units

    def process(self, rows: dict[str, np.ndarray]) -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
        """Apply DECISION rows of this symbol (numpy columns, ts strictly increasing).

        Returns:
            (fills: FILL rows, trades closed: TRADE rows, equity: EQUITY columns ``ts,
            cash, position, close, exposure, equity`` with one row per input row).

        Raises:
            ValueError: a row not newer than the previous one (names the symbol and ts).
        """
        ts, close = rows["ts"], rows["close"]
        n = len(ts)
        if n and (np.any(ts[1:] <= ts[:-1]) or (self.last_ts is not None and ts[0] <= self.last_ts)):
            bad = int(ts[0]) if self.last_ts is not None and ts[0] <= self.last_ts else int(ts[1:][ts[1:] <= ts[:-1]][0])
            raise ValueError(f"sleeve {self.symbol}: decision rows out of order at ts={bad}")
        fills: list[dict] = []
        trades: list[dict] = []
        cash_out, position_out = np.empty(n), np.empty(n)
        target = rows["target"]
        decisions = np.flatnonzero(np.isfinite(target)).tolist()
        targets = target[decisions].tolist()
        # Python scalars for the few rows that are events (numpy scalars are slow to compute with)
        spread = rows["spread_bps"]
        self._rows = (ts, rows["open"], rows["volume"], spread, close)
        p, i, count = 0, 0, len(decisions)
        while i < n:
            if self.pending is None and self.working is None:
                while p < count and (decisions[p] < i or targets[p] == self.target):
                    p += 1
                k = decisions[p] if p < count else n
                end = k if k < n else n - 1
                self._mark(i, end + 1, cash_out, position_out)
                if k < n:
                    self._decide(targets[p], int(ts[k]))
                    p += 1
                i = end + 1
                continue
            self._fill(i, fills, trades)
            if self.position < 0 or self._keeps_closes:
                self._mark(i, i + 1, cash_out, position_out)
            else:  # the common event row, inline: no borrow, nothing to remember
                cash_out[i] = self.cash
                position_out[i] = self.position
                self.last_spread = float(spread[i])
            while p < count and decisions[p] < i:
                p += 1
            if p < count and decisions[p] == i:
                if targets[p] != self.target:
                    self._decide(targets[p], int(ts[i]))
                p += 1
            i += 1
        del self._rows
        if n:
            self.last_ts = int(ts[-1])
        equity = cash_out + position_out * close
        gross = np.full(n, np.nan)
        np.divide(np.abs(position_out * close), equity, out=gross, where=equity > 0)
        return fills, trades, {
            "ts": ts, "cash": cash_out, "position": position_out, "close": close, "exposure": gross, "equity": equity,
        }  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_rows", None)
        return state

    def open_trades(self) -> list[dict]:
        """TRADE rows of the lots still open (exit fields null)."""
        return [self._trade_row(lot, lot.size, None, None, lot.fees, lot.borrow) for lot in self.lots]

    # -- internals -----------------------------------------------------------------------------
    def _decide(self, target: float, ts: int) -> None:
        """A new target at the bar opened at ``ts`` becomes the order for the next open (sized now).

        The closes up to that bar are already in ``self.closes`` (:meth:`_mark` ran).
        """
        self.target = target
        value = exposure(self.settings.risk, target, self.closes, self.trade_returns, self.settings.bars_per_year)
        self.pending = (ts, value)
        self.working = None

    def _mark(self, lo: int, hi: int, cash_out: np.ndarray, position_out: np.ndarray) -> None:
        """Borrow accrual and marks for rows ``lo..hi-1`` (no fills among them)."""
        _, _, _, spread, close = self._rows
        rate = self._borrow_per_bar
        if self.position < 0 and rate > 0:
            cost = -self.position * close[lo:hi] * rate
            cash_out[lo:hi] = np.cumsum(np.r_[self.cash, -cost])[1:]
            self.cash = float(cash_out[hi - 1])
            for lot in self.lots:
                lot.borrow = float(np.cumsum(np.r_[lot.borrow, cost * (lot.size / -self.position)])[-1])
        elif hi - lo == 1:
            cash_out[lo] = self.cash
        else:
            cash_out[lo:hi] = self.cash
        if hi - lo == 1:
            position_out[lo] = self.position
        else:
            position_out[lo:hi] = self.position
        self.last_spread = float(spread[hi - 1])
        if self._keeps_closes:  # only the volatility target reads the trailing closes
            keep = self.settings.risk.lookback + 1
            self.closes = np.concatenate([self.closes, close[lo:hi][-keep:]])[-keep:]

    def _slip(self) -> float:
        """The slippage fraction s of a fill now (the same for buys and sells)."""
        if self._slippage == "none":
            return 0.0
        model = self.settings.slippage
        if self._slippage == "spread_pct":
            spread = self.last_spread
            return (model.fraction * spread if spread == spread else model.fixed_bps) / _BPS
        return model.impact_bps / _BPS

    def _fill(self, i: int, fills: list[dict], trades: list[dict]) -> None:
        """Fill the pending order (sizing it) or the working remainder at row ``i``'s open."""
        ts_column, opens, volumes, _, _ = self._rows
        reference = float(opens[i])
        slip = self._slip()
        fee_rate = self._fee_rate
        position = self.position
        if self.pending is not None:
            decision_ts, value = self.pending
            self.pending = None
            if position != 0:  # the cash after closing everything at this fill
                q = -position
                price = reference * (1.0 + slip) if q > 0 else reference * (1.0 - slip)
                equity = self.cash - q * price - abs(q) * price * fee_rate
            else:
                equity = self.cash
            desired = 0.0
            if value != 0 and equity > 0:
                price = reference * (1.0 + slip) if value > 0 else reference * (1.0 - slip)
                cost = price * (1.0 + fee_rate)
                units = abs(value) * equity
                units = float(units // cost) if self._whole else units / cost
                desired = units if value > 0 else -units
            self.working = (decision_ts, desired)
        decision_ts, desired = self.working
        order = desired - position
        if order == 0:
            self.working = None
            return
        cap = math.inf
        if self._slippage == "participation_rate":
            cap = self.settings.slippage.rate * float(volumes[i])
            if self._whole:
                cap = float(math.floor(cap))
        ts = int(ts_column[i])
        if position != 0 and (desired == 0 or (desired > 0) != (position > 0)):
            parts = (-position, desired) if desired != 0 else (-position,)
        else:
            parts = (order,)
        for q in parts:
            if abs(q) > cap:
                q = math.copysign(cap, q)
            if q == 0:
                break
            cap -= abs(q)
            self._execute(ts, decision_ts, q, reference, slip, fills, trades)
        if self.position == desired:
            self.working = None

    def _execute(self, ts: int, decision_ts: int, q: float, reference: float, slip: float, fills: list[dict], trades: list[dict]) -> None:
        side = 1 if q > 0 else -1
        price = reference * (1.0 + slip) if side > 0 else reference * (1.0 - slip)
        fee_rate = self._fee_rate
        fee = abs(q) * price * fee_rate
        self.cash = self.cash - q * price - fee
        remaining = abs(q)
        lots = self.lots
        while remaining > 0 and lots and lots[0].side != side:
            lot = lots[0]
            take = lot.size if lot.size < remaining else remaining
            share = take / lot.size
            entry_fee, borrow = lot.fees * share, lot.borrow * share
            fees = entry_fee + take * price * fee_rate
            pnl = _pnl(lot, take, price, fees, borrow)
            if self.detail:
                trades.append(self._trade_row(lot, take, ts, price, fees, borrow))
            else:
                trades.append((lot.entry_ts, ts, pnl))
            self.trade_returns.append(pnl / (take * lot.entry_price))
            lot.size -= take
            lot.fees -= entry_fee
            lot.borrow -= borrow
            remaining -= take
            if lot.size <= 0:
                lots.pop(0)
        if remaining > 0:
            lots.append(_Lot(side, remaining, ts, price, remaining * price * fee_rate))
        self.position += q
        if self.detail:
            fills.append({
                "symbol": self.symbol, "ts": ts, "decision_ts": decision_ts, "quantity": q, "price": price,
                "reference_price": reference, "fee": fee, "position_after": self.position,
            })  # fmt: skip

    def _trade_row(self, lot: _Lot, size: float, exit_ts: int | None, exit_price: float | None, fees: float, borrow: float) -> dict[str, Any]:
        pnl = None if exit_price is None else _pnl(lot, size, exit_price, fees, borrow)
        return {
            "symbol": self.symbol, "side": "long" if lot.side > 0 else "short", "size": size,
            "entry_ts": lot.entry_ts, "entry_price": lot.entry_price, "exit_ts": exit_ts, "exit_price": exit_price,
            "fees": fees, "borrow_cost": borrow, "pnl": pnl,
            "return_pct": None if pnl is None else pnl / (size * lot.entry_price) * 100.0,
        }  # fmt: skip


def _pnl(lot: _Lot, size: float, exit_price: float, fees: float, borrow: float) -> float:
    """Net pnl of ``size`` units of ``lot`` closed at ``exit_price`` (quote currency)."""
    return lot.side * size * (exit_price - lot.entry_price) - fees - borrow
