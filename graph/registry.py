"""The kind registry: a YAML node ``kind`` -> its operator class, imported lazily.

``KINDS`` maps a kind to ``"module:Class"``; a class is imported only when a graph uses
its kind (a replay never imports the websocket stack). The registry lives in ``graph/``
and names the classes as strings, so ``graph/`` never imports ``actors/`` (which imports
``graph/``: the operator contract, schemas, params).
"""

from __future__ import annotations

import importlib

from graph.operator import Operator, Source

__all__ = ["KINDS", "load_kind"]

KINDS: dict[str, str] = {
    # sources: replay
    "file_replay": "actors.file_replay:FileReplay",
    "replay": "actors.replayer:Replayer",
    # sources: live feeds
    "binance": "actors.live.binance:BinanceSource",
    "coinbase": "actors.live.coinbase:CoinbaseSource",
    "finnhub": "actors.live.finnhub:FinnhubSource",
    "alpaca": "actors.live.alpaca:AlpacaSource",
    # operators
    "normalizer": "actors.normalizer:Normalizer",
    "bars": "actors.bars:BarEngine",
    "vwap_deviation_bps": "actors.signals.vwap_deviation_bps:VwapDeviationBps",
    "spread_bps": "actors.signals.spread_bps:SpreadBps",
    "rsi": "actors.signals.rsi:Rsi",
    "bollinger_pctb": "actors.signals.bollinger_pctb:BollingerPctB",
    "tick_rate_zscore": "actors.signals.tick_rate_zscore:TickRateZScore",
    "parity": "actors.parity:ParityTracker",
    # backtests: strategy -> execution -> portfolio; bars from the store
    "strategy": "actors.strategy:StrategyNode",
    "execution": "actors.execution:Execution",
    "portfolio": "actors.portfolio:Portfolio",
    "bar_replay": "actors.bar_replay:BarReplay",
    # pre-paper: a promoted backtest on live bars, and its audit artifacts
    "pre_paper": "actors.pre_paper:PrePaper",
    "pre_paper_audit": "actors.pre_paper_audit:PrePaperAudit",
    # sinks
    "sql_store": "actors.store:SqlStore",
    "parquet_sink": "actors.parquet_sink:ParquetSink",
    "catalog": "actors.catalog_sink:CatalogSink",
    "recorder": "actors.recorder:Recorder",
    "api": "actors.api:ApiSink",
}


def load_kind(kind: str) -> type[Operator] | type[Source]:
    """The operator class registered for ``kind``.

    Raises:
        KeyError: ``kind`` is not registered; the message lists the known kinds.
    """
    try:
        target = KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
