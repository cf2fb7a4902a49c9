"""Node kinds: one module per actor kind, each a plain operator class.

``KINDS`` maps a YAML ``kind`` to ``"module:Class"``; classes are imported lazily so
that a graph only imports what it uses (a replay never imports the websocket stack).
"""

from __future__ import annotations

import importlib

from graph.operator import Operator, Source

__all__ = ["KINDS", "load_kind"]

KINDS: dict[str, str] = {
    "file_replay": "actors.file_replay:FileReplay",
    "normalizer": "actors.normalizer:Normalizer",
    "bars": "actors.bars:BarEngine",
    "sql_store": "actors.store:SqlStore",
    "parquet_sink": "actors.parquet_sink:ParquetSink",
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
