"""Strategies: the protocol (``base.py``) and the built-in ones, one module each.

``dual_sma`` (fast/slow simple moving average crossover), ``breakout`` (Donchian
channel), ``mean_reversion`` (on the ``vwap_deviation_bps`` signal). The ``strategy``
node kind (``actors/strategy.py``) runs any of them, or a user's class named by a
dotted path, on confirmed bars, in a backtest and in the pre-paper runner alike.
"""

from strategies.base import BUILTIN, Bar, History, Strategy, StrategyParams, make_strategy, strategy_class

__all__ = ["BUILTIN", "Bar", "History", "Strategy", "StrategyParams", "make_strategy", "strategy_class"]
