"""The ``HistoricalProvider`` protocol: where the bars a cache lacks come from.

A provider answers ``fetch_bars(symbol, tf, start_ts, end_ts)`` with the bars whose open
time lies in ``[start_ts, end_ts)``, as a pandas DataFrame indexed by a tz-aware
``DatetimeIndex`` named ``ts`` (the bar open time) with float64 columns ``open, high,
low, close, volume`` and optionally ``vwap``: the seed's interface
(``shared/seeds/004_pre_paper_history.md``). An empty frame means "no bars there"; a
failure raises :class:`ProviderError` (never with a key in its text).

Providers only read: :mod:`pre_paper.providers.parquet` (backtest / tickgraph Parquet),
:mod:`pre_paper.providers.store` (tickgraph's ``bars_ohlcv`` table), and the REST
backfills :mod:`pre_paper.providers.alpaca` and :mod:`pre_paper.providers.finnhub`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["HistoricalProvider", "ProviderError", "OHLCV", "bars_frame", "frame_arrays", "ProviderChain"]

#: The columns every provider returns (``vwap`` is optional).
OHLCV = ("open", "high", "low", "close", "volume")


class ProviderError(RuntimeError):
    """A provider could not answer (HTTP error, unreadable file, unsupported timeframe)."""


@runtime_checkable
class HistoricalProvider(Protocol):
    """Fetches bars for missing ranges (see the module docstring).

    Attributes:
        name: shown in reasons and logs (``alpaca``, ``store``, ...).
        source: the cache ``source`` of its bars: ``historical`` (data the system already
            had: backtest Parquet, the store) or ``backfill`` (fetched from a vendor).
    """

    name: str
    source: str

    def fetch_bars(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> pd.DataFrame:
        """Bars of ``symbol``/``tf`` opening in ``[start_ts, end_ts)``, ascending (see the module docstring)."""
        ...


def bars_frame(ts: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A provider's answer from int64 ns UTC open times and OHLCV(+vwap) arrays, sorted by ``ts``."""
    ts = np.asarray(ts, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    data = {name: np.asarray(columns[name], dtype=np.float64)[order] for name in (*OHLCV, "vwap") if name in columns}
    index = pd.DatetimeIndex(pd.to_datetime(ts[order], unit="ns", utc=True), name="ts")
    return pd.DataFrame(data, index=index)


def frame_arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{"ts": int64 ns UTC, open..volume, vwap (NaN if absent)}`` of a provider's answer.

    Raises:
        ProviderError: no tz-aware DatetimeIndex, or a missing OHLCV column.
    """
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ProviderError("a provider must return a DataFrame indexed by a tz-aware DatetimeIndex (bar open times)")
    missing = [c for c in OHLCV if c not in frame.columns]
    if missing:
        raise ProviderError(f"a provider's bars lack the column(s) {', '.join(missing)}")
    out = {"ts": index.tz_convert("UTC").as_unit("ns").asi8.copy()}
    for name in OHLCV:
        out[name] = frame[name].to_numpy(dtype=np.float64)
    out["vwap"] = frame["vwap"].to_numpy(dtype=np.float64) if "vwap" in frame.columns else np.full(len(frame), np.nan)
    return out


class ProviderChain:
    """Several providers asked in order; for a bar more than one has, the first one's wins.

    Every provider is asked for the whole range (the chain cannot tell a quiet slot from a
    missing bar); a failing provider is skipped and its error kept in :attr:`errors`.

    Args:
        providers: in order of precedence.
    """

    name = "chain"
    source = "historical"

    def __init__(self, providers: Sequence[HistoricalProvider]) -> None:
        self.providers = list(providers)
        self.errors: list[str] = []
        self.answers: list[dict] = []

    def fetch_by_source(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> list[tuple[str, pd.DataFrame]]:
        """``[(cache source, bars), ...]`` per provider that answered, in precedence order.

        Also records per provider ``{"provider", "start", "end", "bars" | "error"}`` in
        :attr:`answers` and the error texts in :attr:`errors`.
        """
        out = []
        for provider in self.providers:
            record = {"provider": provider.name, "start": start_ts.isoformat(), "end": end_ts.isoformat()}
            try:
                frame = provider.fetch_bars(symbol, tf, start_ts, end_ts)
            except ProviderError as exc:
                record["error"] = str(exc)
                self.errors.append(f"{provider.name}: {exc}")
            else:
                record["bars"] = int(len(frame))
                out.append((provider.source, frame))
            self.answers.append(record)
        return out

    def fetch_bars(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> pd.DataFrame:
        """The merged answer of every provider (first wins per ``ts``).

        Raises:
            ProviderError: every provider failed (the message lists each one's error).
        """
        answers = self.fetch_by_source(symbol, tf, start_ts, end_ts)
        if not answers and self.providers:
            raise ProviderError("; ".join(self.errors[-len(self.providers):]))
        frames = [frame for _, frame in answers if len(frame)]
        if not frames:
            return bars_frame(np.empty(0, np.int64), {c: np.empty(0) for c in OHLCV})
        merged = pd.concat(frames)
        return merged[~merged.index.duplicated(keep="first")].sort_index()
