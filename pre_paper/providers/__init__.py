"""Historical providers of the pre-paper runner: the protocol and the four kinds.

A ``pre_paper`` node lists them under ``providers`` (asked in order for every missing
range; for a bar more than one has, the first one's wins)::

    providers:
      - {kind: backtest_parquet}                        # the manifest's run's decisions.parquet
      - {kind: backtest_parquet, path: ../out/parquet/bars}
      - {kind: store, url: "sqlite:///tickgraph.db"}    # bars_ohlcv, read-only
      - {kind: alpaca, feed: iex}                       # APCA_API_KEY_ID / APCA_API_SECRET_KEY
      - {kind: finnhub, market: crypto, symbols: {BTCUSDT: "BINANCE:BTCUSDT"}}   # FINNHUB_API_KEY
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from pre_paper.providers.alpaca import AlpacaBars, AlpacaBarsSpec
from pre_paper.providers.base import HistoricalProvider, ProviderChain, ProviderError, bars_frame, frame_arrays
from pre_paper.providers.finnhub import FinnhubCandles, FinnhubCandlesSpec
from pre_paper.providers.parquet import ParquetProvider, ParquetProviderSpec
from pre_paper.providers.store import StoreProvider, StoreProviderSpec

__all__ = [
    "HistoricalProvider",
    "ProviderChain",
    "ProviderError",
    "ProviderSpec",
    "bars_frame",
    "frame_arrays",
    "build_provider",
    "build_providers",
]

#: One entry of ``providers`` (discriminated by ``kind``).
ProviderSpec = Annotated[
    ParquetProviderSpec | StoreProviderSpec | AlpacaBarsSpec | FinnhubCandlesSpec, Field(discriminator="kind")
]


def _resolve(path: str | None, base_dir: Path) -> Path | None:
    if path is None:
        return None
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir / candidate).resolve()


def build_provider(spec, base_dir: Path, run_dir: Path | None = None) -> HistoricalProvider:
    """The provider of one ``providers`` entry.

    Args:
        spec: a :data:`ProviderSpec` model.
        base_dir: the graph file's directory (relative paths).
        run_dir: the manifest's run directory (the default ``backtest_parquet`` path).

    Raises:
        ProviderError: a Parquet path that does not exist.
        actors.live.keys.MissingKeyError: a REST provider's key is set nowhere.
    """
    if isinstance(spec, ParquetProviderSpec):
        path = _resolve(spec.path, base_dir)
        if path is None:
            if run_dir is None:
                raise ProviderError("backtest_parquet: no path and no manifest run directory")
            path = run_dir / "decisions.parquet"
        return ParquetProvider(path)
    if isinstance(spec, StoreProviderSpec):
        return StoreProvider(spec.url)
    keys_file = _resolve(spec.keys_file, base_dir)
    if isinstance(spec, AlpacaBarsSpec):
        return AlpacaBars(spec, keys_file)
    return FinnhubCandles(spec, keys_file)


def build_providers(specs, base_dir: Path, run_dir: Path | None = None) -> ProviderChain:
    """A :class:`ProviderChain` of :func:`build_provider` for each entry, in order."""
    return ProviderChain([build_provider(spec, base_dir, run_dir) for spec in specs])
