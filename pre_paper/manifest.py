"""The promotion contract: a backtest's ``run_manifest.json`` is a pre-paper run's only configuration.

:func:`load_promoted` reads a manifest (or a run directory), refuses it unless it
verifies, and derives everything the runner needs from it and from the run's own
``config.json`` (a hashed artifact the manifest lists):

* the symbols, the timeframe the strategy decides on, the bars per year;
* the ``strategy`` node params (``backtest.manifest.strategy_node_params``: the same
  strategy class with the same params, its signal and spread inputs as the backtest
  graph named them, ``backtest/graphs.py``), and the strategy's declared warm-up;
* the ``execution`` node params of the run (``backtest.engine.execution_params``): the
  risk, slippage, fee and borrow models for paper fills.

Refused, each problem naming the file and the field: a missing or unreadable file,
invalid JSON, content that does not match its ``manifest_hash`` (edited after signing),
a manifest without a field the runner needs or with a wrong type (wrong schema), an
artifact whose size or SHA-256 differs from the manifest, a run not recorded in its
artifacts directory's ``chain.jsonl`` or linked to the wrong predecessor, and a
``config.json`` that disagrees with the manifest. Nothing is written (no lock file:
the artifacts directory may be read-only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.execution import ExecutionParams
from actors.strategy import StrategyNodeParams
from backtest.config import ConfigError, RunConfig, parse_run_config
from backtest.engine import execution_params
from backtest.graphs import signal_name
from backtest.manifest import MANIFEST, manifest_hash, strategy_node_params, verify_run
from graph.params import Timeframe
from graph.spec import _pydantic_problems
from strategies.base import make_strategy, strategy_class

__all__ = ["ManifestError", "PromotedRun", "load_promoted"]


class ManifestError(ValueError):
    """A manifest the runner refuses; each line names the file and the field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("; ".join(f"{path}: {p}" for p in problems))


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Data(_Open):
    symbols: list[str] = Field(min_length=1)
    timeframe: Timeframe
    bars_per_year: float = Field(gt=0)


class _Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    params: dict[str, Any]
    timeframe: Timeframe
    warmup_bars: int = Field(ge=1)


class _File(BaseModel):
    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Contract(_Open):
    """The manifest fields a pre-paper run reads (``backtest/artifacts.py: identity``)."""

    run_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    tickgraph_version: str
    data: _Data
    strategy: _Strategy
    indicators: list[dict[str, Any]]
    execution: dict[str, Any]
    risk: dict[str, Any]
    initial_cash: float = Field(gt=0)
    files: list[_File] = Field(min_length=1)
    chain_prev: str | None
    manifest_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PromotedRun:
    """A verified backtest atom, as the pre-paper runner uses it.

    Attributes:
        path: the ``run_manifest.json`` (absolute).
        run_dir: its run directory.
        manifest: the manifest document.
        run_hash, manifest_hash: the run's identity.
        symbols: the symbols the backtest traded (the runner's symbols).
        timeframe: the base timeframe the strategy decides on.
        warmup_bars: the strategy's declared warm-up (bars).
        strategy_params: the ``strategy`` node params (a plain dict).
        execution_params: the ``execution`` node params (paper fills).
        config: the run's :class:`~backtest.config.RunConfig` (from ``config.json``).
    """

    path: Path
    run_dir: Path
    manifest: dict[str, Any]
    run_hash: str
    manifest_hash: str
    symbols: tuple[str, ...]
    timeframe: str
    warmup_bars: int
    strategy_params: dict[str, Any]
    execution_params: dict[str, Any]
    config: RunConfig

    def strategy(self) -> Any:
        """A fresh instance of the manifest's strategy (its class and params)."""
        return make_strategy(self.strategy_params["strategy"], self.strategy_params["params"])

    def identity(self) -> dict[str, Any]:
        """The ``backtest_atom`` section of a pre-paper manifest."""
        return {
            "source_run_id": self.run_hash,
            "manifest_path": str(self.path),
            "manifest_hash": self.manifest_hash,
            "impl_version": self.manifest["tickgraph_version"],
            "strategy": {k: self.manifest["strategy"][k] for k in ("name", "params", "timeframe", "warmup_bars")},
            "data": {k: self.manifest["data"].get(k) for k in ("source", "symbols", "timeframe", "start", "end", "content_sha256")},
        }


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise ManifestError(path, ["manifest not found (a backtest run's run_manifest.json, e.g. artifacts/backtests/<run_hash>/run_manifest.json)"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, [f"cannot read: {exc}"]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(path, [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    if not isinstance(doc, dict):
        raise ManifestError(path, ["<root>: a manifest is a JSON object"])
    return doc


def load_promoted(path: str | Path) -> PromotedRun:
    """Read and verify a backtest manifest (see the module docstring).

    Args:
        path: ``run_manifest.json`` or its run directory.

    Returns:
        :class:`PromotedRun`.

    Raises:
        ManifestError: every problem found, each naming the file and the field.
    """
    path = Path(path).expanduser().resolve()
    doc = _read(path)
    path = path / MANIFEST if path.is_dir() else path
    if doc.get("manifest_hash") != manifest_hash(doc):
        raise ManifestError(path, [f"manifest_hash: {doc.get('manifest_hash')!r} does not match the manifest's content (edited after signing, or corrupt)"])
    try:
        _Contract.model_validate(doc)
    except ValidationError as exc:
        raise ManifestError(path, _pydantic_problems(exc)) from None
    run_dir = path.parent
    problems = verify_run(run_dir)
    if problems:
        raise ManifestError(path, [f"files/chain: {p}" for p in problems])
    config = _config(run_dir, path, doc)
    return PromotedRun(
        path=path,
        run_dir=run_dir,
        manifest=doc,
        run_hash=doc["run_hash"],
        manifest_hash=doc["manifest_hash"],
        symbols=tuple(doc["data"]["symbols"]),
        timeframe=doc["strategy"]["timeframe"],
        warmup_bars=int(doc["strategy"]["warmup_bars"]),
        strategy_params=_strategy_params(doc, config, path),
        execution_params=ExecutionParams.model_validate(execution_params(config).model_dump()).model_dump(mode="json"),
        config=config,
    )


def _config(run_dir: Path, path: Path, doc: dict[str, Any]) -> RunConfig:
    """The run's ``config.json`` (verified by its hash above), checked against the manifest."""
    source = run_dir / "config.json"
    try:
        config = parse_run_config(json.loads(source.read_text(encoding="utf-8")), str(source))
    except (OSError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        raise ManifestError(path, [f"config.json: {p}" for p in problems]) from None
    mismatched = [
        name for name, ours, theirs in (
            ("data.symbols", list(config.symbols), doc["data"]["symbols"]),
            ("strategy.timeframe", config.timeframe, doc["strategy"]["timeframe"]),
            ("strategy.name", config.strategy.name, doc["strategy"]["name"]),
            ("strategy.params", dict(config.strategy.params), doc["strategy"]["params"]),
        ) if ours != theirs
    ]  # fmt: skip
    if mismatched:
        raise ManifestError(path, [f"{name}: differs from the run's config.json" for name in mismatched])
    return config


def _strategy_params(doc: dict[str, Any], config: RunConfig, path: Path) -> dict[str, Any]:
    """The strategy node params, with the signal names the backtest graph used (``backtest/graphs.py``)."""
    params = strategy_node_params(doc)
    names = {ind.kind: signal_name(ind.kind, ind.params) for ind in config.indicators}
    declared = getattr(strategy_class(params["strategy"]), "signal", None)
    params["signal"] = names.get(declared) if declared else None
    params["spread"] = names.get("spread_bps", "spread_bps")
    try:
        StrategyNodeParams.model_validate(params)
    except ValidationError as exc:
        raise ManifestError(path, _pydantic_problems(exc, ("strategy",))) from None
    warmup = int(make_strategy(params["strategy"], params["params"]).warmup_bars)
    if warmup != params["history_bars"]:
        raise ManifestError(path, [f"strategy.warmup_bars: {params['history_bars']} is not the strategy's declared warm-up {warmup}"])
    return params
