"""Risk models: how much of a sleeve's equity a strategy's target becomes.

A strategy returns a target in [-1, 1] (``strategies/base.py``); the risk model turns
it into a signed *exposure*, a multiple of the sleeve's equity, using only what is
known at the decision bar's close (closes up to and including that bar, trades closed
before it). The execution node then buys ``exposure x equity / (price x (1 + fee))``
units at the next bar's open.

Models:
    * ``fixed_fraction``: ``exposure = fraction x target``.
    * ``volatility_target``: ``exposure = target x min(target_vol / realised_vol,
      max_leverage)``; ``realised_vol`` = sample standard deviation (ddof 1) of the
      last ``lookback`` close-to-close log returns x sqrt(bars_per_year) (the
      annualised volatility of Moreira & Muir, "Volatility-Managed Portfolios",
      J. Finance 2017). 0 until ``lookback + 1`` closes exist, and for zero volatility.
    * ``kelly_fraction``: ``exposure = target x clip(kelly_multiplier x K, 0,
      max_leverage)`` with the Kelly estimate ``K = p - (1 - p) / b`` (Kelly 1956;
      Thorp, "The Kelly criterion in blackjack, sports betting and the stock market",
      2006) from the last ``lookback`` closed trades of the sleeve: ``p`` the share of
      winners, ``b`` = mean winning return / mean losing |return|. With fewer than
      ``min_trades`` closed trades it uses ``fraction``; with no losing trade ``K = p``,
      with no winner ``K = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from graph.operator import Params

__all__ = ["RiskParams", "exposure"]


class RiskParams(Params):
    """The risk model of a ``execution`` node (``risk`` in the run config).

    Attributes:
        model: ``fixed_fraction`` | ``volatility_target`` | ``kelly_fraction``.
        fraction: fixed_fraction's f (and kelly's fallback), (0, max_leverage].
        target_vol: volatility_target's annualised target volatility (0.2 = 20 %), > 0.
        lookback: bars of returns (volatility_target) or closed trades (kelly), >= 2.
        max_leverage: cap on |exposure| for volatility_target and kelly, > 0.
        kelly_multiplier: the fraction of the Kelly estimate taken ("half Kelly": 0.5), (0, 1].
        min_trades: kelly: closed trades needed before the estimate is used, >= 1.
    """

    model: Literal["fixed_fraction", "volatility_target", "kelly_fraction"] = "fixed_fraction"
    fraction: float = Field(default=1.0, gt=0, le=100)
    target_vol: float = Field(default=0.2, gt=0, le=100)
    lookback: int = Field(default=60, ge=2, le=1_000_000)
    max_leverage: float = Field(default=1.0, gt=0, le=100)
    kelly_multiplier: float = Field(default=0.5, gt=0, le=1)
    min_trades: int = Field(default=10, ge=1)


def exposure(
    risk: RiskParams,
    target: float,
    closes: np.ndarray,
    trade_returns: Sequence[float],
    bars_per_year: float,
) -> float:
    """Signed exposure (multiple of sleeve equity) for ``target`` under ``risk``.

    Args:
        risk: the model.
        target: the strategy's target, -1..1.
        closes: float64, the sleeve's last closes up to the decision bar (newest last).
        trade_returns: net returns (fractions) of the sleeve's closed trades, oldest first.
        bars_per_year: annualisation of per-bar volatility.

    Returns:
        ``target x scale`` where scale >= 0 depends on the model (see the module docstring).
    """
    if target == 0.0:
        return 0.0
    if risk.model == "fixed_fraction":
        return risk.fraction * target
    if risk.model == "volatility_target":
        if len(closes) < risk.lookback + 1:
            return 0.0
        returns = np.diff(np.log(closes[-(risk.lookback + 1) :]))
        vol = float(np.std(returns, ddof=1)) * math.sqrt(bars_per_year)
        if not vol > 0:
            return 0.0
        return target * min(risk.target_vol / vol, risk.max_leverage)
    recent = list(trade_returns)[-risk.lookback :]
    if len(recent) < risk.min_trades:
        return target * min(risk.fraction, risk.max_leverage)
    wins = [r for r in recent if r > 0]
    losses = [-r for r in recent if r < 0]
    p = len(wins) / len(recent)
    if not wins:
        kelly = 0.0
    elif not losses:
        kelly = p  # b is infinite: K = p
    else:
        b = (sum(wins) / len(wins)) / (sum(losses) / len(losses))
        kelly = p - (1.0 - p) / b
    return target * min(max(risk.kelly_multiplier * kelly, 0.0), risk.max_leverage)
