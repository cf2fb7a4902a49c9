"""The run config of a backtest (``RunConfig``), validated before any work.

A run config is JSON (``python run.py backtest run CONFIG.json``, ``POST /runs``)::

    {"symbols": ["AMZN"], "timeframe": "1m",
     "start": "2012-06-21T13:30:00Z", "end": "2012-06-21T20:00:00Z",
     "data": {"source": "store", "url": "sqlite:///tickgraph.db"},
     "strategy": {"name": "dual_sma", "params": {"fast": 10, "slow": 30}},
     "risk": {"model": "fixed_fraction", "fraction": 0.95},
     "execution": {"fee_bps": 1.0, "slippage": {"model": "none"}},
     "validation": {"permutation": {"trials": 200}},
     "seed": 42, "initial_cash": 100000, "bars_per_year": 98280}

``data`` is ``{"source": "store", "url": ...}`` (bars, and signals, from the store's
``bars_ohlcv``/``signals``) or ``{"source": "ticks", "files": [...], "sessions":
{...}}`` (tick files, the ``replay`` kind's ``files``, replayed through the bar
engine). ``indicators`` lists signal nodes the strategy reads (``[{"kind":
"vwap_deviation_bps"}]``; ``spread_bps`` also feeds the ``spread_pct`` slippage).
Relative file paths resolve against ``base_dir`` (the config file's directory).

:func:`load_run_config` reports every problem with its path (``strategy.params.slow:
slow (5) must be greater than fast (10)``), like graph files do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from actors.replayer import parse_time_ns
from actors.sizing import RiskParams
from actors.sleeve import SlippageParams
from graph.params import Timeframe
from graph.spec import _pydantic_problems
from strategies.base import strategy_class

__all__ = [
    "ConfigError",
    "StoreData",
    "TickData",
    "IndicatorSpec",
    "StrategySpec",
    "ExecutionSpec",
    "ValidationSpec",
    "RunConfig",
    "SIGNAL_KINDS",
    "load_run_config",
    "parse_run_config",
]

#: Signal kinds a strategy can read (``indicators``), and whether they run on ticks or bars.
SIGNAL_KINDS: dict[str, str] = {
    "vwap_deviation_bps": "ticks",
    "spread_bps": "ticks",
    "tick_rate_zscore": "ticks",
    "rsi": "bars",
    "bollinger_pctb": "bars",
}


class ConfigError(ValueError):
    """A run config that cannot run; each line names the source and the field path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreData(_Model):
    """Bars (and signals) read from a store.

    Attributes:
        source: ``store``.
        url: SQLAlchemy URL of the store (default the main job's ``sqlite:///tickgraph.db``).
    """

    source: Literal["store"]
    url: str = "sqlite:///tickgraph.db"


class TickData(_Model):
    """Tick files replayed through the normalizer and the bar engine.

    Attributes:
        source: ``ticks``.
        files: the ``replay`` kind's ``files`` entries (lobster, tardis_trades, ...).
        sessions: the ``bars`` kind's ``sessions`` (``1d`` bars, VWAP resets).
    """

    source: Literal["ticks"]
    files: list[dict[str, Any]] = Field(min_length=1)
    sessions: dict[str, dict[str, str]] = Field(default_factory=dict)


class IndicatorSpec(_Model):
    """A signal node whose values the strategy (or the spread slippage) reads.

    Attributes:
        kind: a signal kind (:data:`SIGNAL_KINDS`).
        params: its params (validated by the kind's own model).
    """

    kind: Literal["vwap_deviation_bps", "spread_bps", "tick_rate_zscore", "rsi", "bollinger_pctb"]
    params: dict[str, Any] = Field(default_factory=dict)


class StrategySpec(_Model):
    """Which strategy, with which params.

    Attributes:
        name: a built-in name (``dual_sma``, ``breakout``, ``mean_reversion``) or ``pkg.module:Class``.
        params: the strategy's params (its defaults filled in the canonical config).
    """

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ExecutionSpec(_Model):
    """Fills: slippage, fees, borrow and unit rounding (``actors/sleeve.py``).

    Attributes:
        slippage: the slippage model.
        fee_bps: fee per fill in bps of notional (entry and exit), >= 0.
        borrow_bps: borrow cost per year on short notional, bps, >= 0.
        units: ``whole`` (default) or ``fractional`` sizes.
    """

    slippage: SlippageParams = Field(default_factory=SlippageParams)
    fee_bps: float = Field(default=0.0, ge=0, le=10_000)
    borrow_bps: float = Field(default=0.0, ge=0, le=1_000_000)
    units: Literal["whole", "fractional"] = "whole"


class PermutationSpec(_Model):
    """Permutation test: ``trials`` shuffles of the bar returns (>= 19)."""

    trials: int = Field(default=200, ge=19, le=100_000)


class BootstrapSpec(_Model):
    """Block bootstrap of the Sharpe ratio: ``samples``, ``block_bars`` (None: sqrt(n)), ``confidence``."""

    samples: int = Field(default=1_000, ge=10, le=1_000_000)
    block_bars: int | None = Field(default=None, ge=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)


class MonteCarloSpec(_Model):
    """Monte Carlo of trade order: ``samples`` reshuffles of the closed trades."""

    samples: int = Field(default=1_000, ge=10, le=1_000_000)


class WalkForwardSpec(_Model):
    """Walk-forward: rolling ``in_sample_bars`` windows pick params from ``grid``, the next
    ``out_of_sample_bars`` score them (``grid``: strategy param -> values)."""

    grid: dict[str, list[Any]] = Field(min_length=1)
    in_sample_bars: int = Field(ge=2)
    out_of_sample_bars: int = Field(ge=2)


class ValidationSpec(_Model):
    """The validation suites to run (each omitted one is skipped)."""

    permutation: PermutationSpec | None = None
    bootstrap: BootstrapSpec | None = None
    monte_carlo: MonteCarloSpec | None = None
    walk_forward: WalkForwardSpec | None = None


class RunConfig(_Model):
    """One backtest (see the module docstring).

    Attributes:
        symbols: the book's symbols (several allowed; unique).
        timeframe: bar timeframe the strategy decides on.
        start, end: the event-time range ``[start, end)``, ISO-8601 with offset or int ns
            UTC (stored as int ns); end after start.
        data: :class:`StoreData` or :class:`TickData`.
        indicators: signal nodes the strategy reads.
        strategy: :class:`StrategySpec`.
        risk: the risk model (``actors/sizing.py``).
        execution: :class:`ExecutionSpec`.
        validation: :class:`ValidationSpec`.
        seed: seeds every random draw of the validation suites.
        initial_cash: the book's starting cash (quote currency), split equally across symbols.
        bars_per_year: annualisation (525,600 for 24/7 1m bars; 98,280 = 252 x 390 for
            US equity regular-hours 1m bars).
    """

    symbols: list[str] = Field(min_length=1)
    timeframe: Timeframe = "1m"
    start: int
    end: int
    data: Annotated[StoreData | TickData, Field(discriminator="source")]
    indicators: list[IndicatorSpec] = Field(default_factory=list)
    strategy: StrategySpec
    risk: RiskParams = Field(default_factory=RiskParams)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    seed: int = Field(default=0, ge=0, lt=2**63)
    initial_cash: float = Field(default=100_000.0, gt=0)
    bars_per_year: float = Field(default=525_600.0, gt=0)

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str]) -> list[str]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"symbols must be unique, got {', '.join(repeated)} more than once")
        if any(not s for s in value):
            raise ValueError("a symbol must not be empty")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> int:
        return parse_time_ns(value)

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"end ({value} ns) must be after start ({start} ns)")
        return value

    def with_strategy_params(self, params: Mapping[str, Any]) -> RunConfig:
        """A copy with ``strategy.params`` updated by ``params`` (a sweep's combination)."""
        merged = {**self.strategy.params, **params}
        return self.model_copy(update={"strategy": self.strategy.model_copy(update={"params": merged})})


def _semantic_problems(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """Checks that need the strategy class or the signal kinds; fills strategy defaults."""
    from graph.registry import load_kind

    problems: list[str] = []
    try:
        cls = strategy_class(config.strategy.name)
    except ValueError as exc:
        return config, [f"strategy.name: {exc}"]
    model = getattr(cls, "Params", None)
    params = dict(config.strategy.params)
    if model is not None:
        try:
            params = model.model_validate(params).model_dump(mode="json")
        except ValidationError as exc:
            problems += _pydantic_problems(exc, ("strategy", "params"))
    kinds = [ind.kind for ind in config.indicators]
    for i, ind in enumerate(config.indicators):
        if kinds.index(ind.kind) != i:
            problems.append(f"indicators[{i}].kind: {ind.kind!r} is listed twice (first at indicators[{kinds.index(ind.kind)}])")
        try:
            load_kind(ind.kind).Params.model_validate(ind.params)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, ("indicators", i, "params"))
    needed = getattr(cls, "signal", None)
    if needed and needed not in kinds:
        problems.append(f"indicators: strategy {config.strategy.name!r} reads the {needed!r} signal; add {{\"kind\": \"{needed}\"}}")
    return config.model_copy(update={"strategy": config.strategy.model_copy(update={"params": params})}), problems


def parse_run_config(doc: Any, source: str = "<config>") -> RunConfig:
    """Validate a run config document (parsed JSON).

    Args:
        doc: the JSON object.
        source: where it came from, for messages (a file path, ``POST /runs``).

    Returns:
        The :class:`RunConfig`, strategy params completed with their defaults.

    Raises:
        ConfigError: every problem, each naming its field path.
    """
    if not isinstance(doc, dict):
        raise ConfigError(source, ["<root>: a run config must be a JSON object"])
    try:
        config = RunConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(source, _pydantic_problems(exc)) from None
    config, problems = _semantic_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config JSON file.

    Raises:
        ConfigError: unreadable file, invalid JSON (with line and column), or invalid fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    return parse_run_config(doc, str(path))
