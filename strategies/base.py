"""The strategy protocol: a declared warm-up and one decision per confirmed bar.

A strategy is a small class (backtesting.py's ``Strategy.next`` and NautilusTrader's
``Strategy`` with a frozen config are the shapes users know)::

    class MyStrategy:
        warmup_bars = 21                      # bars of history needed for a decision

        def __init__(self, params: dict): ... # the RunConfig's strategy.params

        def on_bar(self, bar: Bar, history: History) -> float | None:
            # history: the last bars up to and including ``bar`` (newest last)
            return +1.0 | -1.0 | 0.0 | None   # target exposure; None = keep

Rules (the same in a backtest and in the pre-paper runner, which runs the same class):
    * ``on_bar`` is called once per confirmed bar, oldest first, once at least
      ``warmup_bars`` bars (this one included) are in ``history``; never for a bar
      still forming, never with a future bar in the window.
    * It returns the *target exposure*: ``+1`` fully long, ``-1`` fully short, ``0``
      flat, anything in between a partial position, as a fraction of the sleeve's
      equity *before* risk sizing (the ``portfolio`` risk model scales it). ``None``
      (or NaN) means no new decision: the previous target stands.
    * A decision taken at bar ``t``'s close is filled at bar ``t+1``'s open by the
      ``execution`` node; a strategy never sees a fill, cash or position.
    * The strategy may keep state in its attributes (it is one instance per symbol);
      the operator's snapshot pickles it.

:class:`Strategy` is a base class implementing the protocol's helpers: a pydantic
``Params`` model (unknown keys are errors, so ``strategy.params.slw`` is rejected by
name) and :meth:`Strategy.decide`, the decisions for many bars at once, which the
built-in strategies vectorise (a user strategy gets a loop over ``on_bar``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["Bar", "History", "Strategy", "StrategyParams", "BUILTIN", "strategy_class", "make_strategy"]


class StrategyParams(BaseModel):
    """Base of a strategy's params model: frozen, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Bar:
    """One confirmed bar as a strategy sees it.

    Attributes:
        symbol: the instrument.
        timeframe: ``1m``, ...
        ts: bar open time, int64 ns UTC; the bar covers [ts, ts + timeframe).
        open, high, low, close, vwap: quote currency.
        volume: units traded in the bar.
        signal: the strategy's input signal (e.g. ``vwap_deviation_bps``) at the bar's
            end (its last value with event time < the bar's end); NaN without one.
    """

    symbol: str
    timeframe: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    signal: float


@dataclass(frozen=True)
class History:
    """The bars up to now, oldest first, as float64/int64 numpy arrays of shape (n,).

    Attributes:
        ts: bar open times, int64 ns UTC, strictly increasing.
        open, high, low, close, vwap: quote currency.
        volume: units.
        signal: the input signal at each bar's end (NaN: none).
    """

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    signal: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def upto(self, stop: int, keep: int | None = None) -> History:
        """Rows ``[stop - keep, stop)`` (``keep`` None: from the start): the window a bar sees."""
        start = 0 if keep is None else max(0, stop - keep)
        return History(*(getattr(self, name)[start:stop] for name in _COLUMNS))

    def bar(self, i: int, symbol: str = "", timeframe: str = "") -> Bar:
        """Row ``i`` as a :class:`Bar`."""
        return Bar(symbol, timeframe, int(self.ts[i]), *(float(getattr(self, n)[i]) for n in _COLUMNS[1:]))

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray]) -> History:
        """A history from ``{column: array}``; a missing ``signal``/``vwap`` is NaN/close."""
        n = len(columns["ts"])
        values = {
            "ts": np.asarray(columns["ts"], dtype=np.int64),
            "signal": np.asarray(columns.get("signal", np.full(n, np.nan)), dtype=np.float64),
            "vwap": np.asarray(columns.get("vwap", columns["close"]), dtype=np.float64),
        }
        for name in ("open", "high", "low", "close", "volume"):
            values[name] = np.asarray(columns[name], dtype=np.float64)
        return cls(**values)


_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "vwap", "signal")


class Strategy:
    """Base class of the built-in strategies (and of user strategies that want it).

    Subclasses set ``Params`` and implement :meth:`on_bar`; vectorised ones also
    override :meth:`decide`. ``signal`` names the signal kind the strategy reads
    (``None``: bars only); the run config must then list it in ``indicators``.
    """

    Params: ClassVar[type[StrategyParams]] = StrategyParams
    signal: ClassVar[str | None] = None

    def __init__(self, params: Mapping[str, Any] | StrategyParams | None = None) -> None:
        self.params = params if isinstance(params, StrategyParams) else self.Params.model_validate(dict(params or {}))

    @property
    def warmup_bars(self) -> int:
        """Bars (the decision bar included) needed before the first decision; >= 1."""
        return 1

    def on_bar(self, bar: Bar, history: History) -> float | None:
        """The target exposure after ``bar`` (the last row of ``history``), or None: keep."""
        raise NotImplementedError

    def decide(self, history: History, first: int) -> np.ndarray:
        """Targets for bars ``first..len(history)-1`` (float64; NaN = keep).

        The default calls :meth:`on_bar` per bar with the window of the last
        ``warmup_bars`` bars; bars before the warm-up get NaN.
        """
        return decide_by_bars(self, history, first)


def decide_by_bars(strategy: Any, history: History, first: int, symbol: str = "", timeframe: str = "") -> np.ndarray:
    """Targets for bars ``first..`` by calling ``strategy.on_bar`` once per bar (any protocol object).

    Raises:
        ValueError: a target outside [-1, 1] (names the bar).
    """
    n = len(history)
    out = np.full(max(0, n - first), np.nan)
    warmup = int(strategy.warmup_bars)
    for i in range(max(first, warmup - 1), n):
        window = history.upto(i + 1, warmup)
        value = strategy.on_bar(history.bar(i, symbol, timeframe), window)
        out[i - first] = check_target(value, type(strategy).__name__, int(history.ts[i]))
    return out


def check_target(value: Any, name: str, ts: int) -> float:
    """A strategy's return value as a float target (None -> NaN).

    Raises:
        ValueError: not a number in [-1, 1].
    """
    if value is None:
        return np.nan
    target = float(value)
    if not (target != target or -1.0 <= target <= 1.0):  # NaN is 'keep'
        raise ValueError(f"strategy {name} returned target {value!r} for the bar at ts={ts}; expected -1..1 or None")
    return target


#: Built-in strategies by name.
BUILTIN: dict[str, str] = {
    "dual_sma": "strategies.dual_sma:DualSma",
    "breakout": "strategies.breakout:Breakout",
    "mean_reversion": "strategies.mean_reversion:MeanReversion",
}


def strategy_class(name: str) -> type:
    """The class of a built-in strategy name or of a dotted path ``pkg.module:Class``.

    Raises:
        ValueError: an unknown name, or a path whose module or class cannot be imported,
            or a class without ``on_bar``/``warmup_bars``.
    """
    target = BUILTIN.get(name)
    if target is None:
        if ":" not in name:
            raise ValueError(f"unknown strategy {name!r} (built-in: {', '.join(BUILTIN)}; or a dotted path pkg.module:Class)")
        target = name
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"strategy {name!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(cls, "on_bar", None)) or not hasattr(cls, "warmup_bars"):
        raise ValueError(f"strategy {name!r} ({cls.__qualname__}) lacks on_bar() or warmup_bars (see strategies/base.py)")
    return cls


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """An instance of strategy ``name`` (:func:`strategy_class`) with ``params``.

    Raises:
        ValueError: unknown strategy.
        pydantic.ValidationError: bad params (for :class:`Strategy` subclasses).
    """
    return strategy_class(name)(dict(params or {}))
