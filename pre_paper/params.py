"""The params of a ``pre_paper`` node: how history is kept and checked, never what to trade.

What to trade -- symbols, base timeframe, strategy and params, execution and risk -- is the
backtest manifest's (``params.manifest``, verified here, before anything starts: the
promotion contract of :mod:`pre_paper.manifest`). Those settings given to the node are
refused by name (:data:`FORBIDDEN`), so the manifest stays the single source of truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from graph.operator import Params
from graph.params import OutputFile, resolve_path
from pre_paper.calendars import ALWAYS_OPEN, check_calendar_name
from pre_paper.history import DEFAULT_GRACE_S, DEFAULT_SAFETY_MARGIN
from pre_paper.manifest import ManifestError, load_promoted
from pre_paper.providers import ProviderSpec, build_providers

__all__ = ["FORBIDDEN", "PrePaperParams"]

#: Params a backtest manifest owns: given to a pre_paper node, each is an error.
FORBIDDEN = (
    "strategy", "params", "timeframe", "symbols", "signal", "spread", "history_bars", "warmup_bars", "risk",
    "execution", "slippage", "fee_bps", "borrow_bps", "units", "initial_cash", "bars_per_year", "indicators",
)  # fmt: skip


class PrePaperParams(Params):
    """Params of a ``pre_paper`` node.

    Attributes:
        manifest: a backtest's ``run_manifest.json`` (or its run directory), relative to
            the graph file; verified (hash, files, chain) before anything starts.
        cache: the history cache (SQLite), default ``artifacts/pre_paper_cache/pre_paper_cache.db``.
        providers: where missing bars come from, asked in order (``pre_paper/providers``).
        auto_backfill: fetch gaps from the providers (at start and when gaps appear).
        safety_margin_bars: bars kept beyond the strategy's warm-up and pattern age.
        staleness_grace_s: the staleness tolerance is 2 x timeframe + this (default 300 s).
        backfill_retry_s: at least this much clock time between two fetches for one symbol.
        calendars: symbol (or ``default``) -> trading calendar (``XNYS``, ``24/7``, any
            exchange-calendars name); default ``{default: 24/7}``.
        clock: ``wall`` (live) or ``event`` (replayed sessions); see the module docstring.
        paper_fills: also fill the decisions with the manifest's execution model.
    """

    manifest: str = Field(min_length=1)
    cache: OutputFile = Path("artifacts/pre_paper_cache/pre_paper_cache.db")
    providers: list[ProviderSpec] = Field(default_factory=list)
    auto_backfill: bool = True
    safety_margin_bars: int = Field(DEFAULT_SAFETY_MARGIN, ge=0, le=100_000)
    staleness_grace_s: float = Field(DEFAULT_GRACE_S, ge=0)
    backfill_retry_s: float = Field(30.0, ge=0)
    calendars: dict[str, str] = Field(default_factory=lambda: {"default": ALWAYS_OPEN})
    clock: Literal["wall", "event"] = "wall"
    paper_fills: bool = False
    # The manifest's own settings: declared only to be refused by name.
    strategy: Any = None
    params: Any = None
    timeframe: Any = None
    symbols: Any = None
    signal: Any = None
    spread: Any = None
    history_bars: Any = None
    warmup_bars: Any = None
    risk: Any = None
    execution: Any = None
    slippage: Any = None
    fee_bps: Any = None
    borrow_bps: Any = None
    units: Any = None
    initial_cash: Any = None
    bars_per_year: Any = None
    indicators: Any = None

    @field_validator(*FORBIDDEN, mode="before")
    @classmethod
    def _owned_by_the_manifest(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise ValueError(
                f"'{info.field_name}' is not allowed here: a pre_paper node takes its strategy, params, timeframe, "
                "symbols, execution and risk from the backtest manifest (params.manifest), the single source of truth"
            )
        return value

    @field_validator("manifest", mode="before")
    @classmethod
    def _manifest_given(cls, value: Any) -> Any:
        if value in (None, ""):
            raise ValueError(
                "no backtest manifest: set params.manifest (artifacts/backtests/<run_hash>/run_manifest.json), "
                "pass --manifest to `python run.py pre-paper`, or set TICKGRAPH_PRE_PAPER_MANIFEST"
            )
        return value

    @field_validator("manifest")
    @classmethod
    def _manifest_verifies(cls, value: str, info: ValidationInfo) -> str:
        path = resolve_path(value, info)
        try:
            load_promoted(path)
        except ManifestError as exc:
            raise ValueError(str(exc)) from None
        return str(path)

    @field_validator("calendars")
    @classmethod
    def _known_calendars(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            check_calendar_name(name)
        return value

    @model_validator(mode="after")
    def _providers_build(self, info: ValidationInfo) -> PrePaperParams:
        base_dir = Path((info.context or {}).get("base_dir") or Path.cwd())
        if self.providers:
            build_providers(self.providers, base_dir, Path(self.manifest).parent)  # a missing key or file fails here
        return self

    def calendar_for(self, symbol: str) -> str:
        """The trading calendar name of ``symbol``."""
        return self.calendars.get(symbol) or self.calendars.get("default") or ALWAYS_OPEN
