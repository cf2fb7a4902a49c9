"""Tick file readers, one module per input format, over a shared CSV layer.

=================  ===========================================================
module             what it reads
=================  ===========================================================
``canonical``      CSV (header) or Parquet files whose columns are named as TICK
``lobster``        LOBSTER message + orderbook file pairs (NASDAQ, level 1..n)
``tardis``         Tardis.dev ``trades`` and ``quotes`` CSV files
``tick_table``     the store's ``tick_data`` table
``csv_layer``      the CSV layer under the text formats (fast typed path + exact line path)
``values``         column conversions with per-row errors (shared by the formats)
``chunks``         :class:`TickChunk` (what every reader yields), ``open_input``, reason codes
=================  ===========================================================

Every reader is a generator of :class:`TickChunk`; readers parse, they never judge values
(the normalizer does) and never sort. Every input row leaves as a tick or as one
quarantine row (``malformed_row``, ``missing_value``, ``bad_timestamp``) naming the
file, the row and the field.
"""

from __future__ import annotations

from actors.tick_formats.canonical import CANONICAL_SIDES, canonical_columns, is_parquet, read_canonical
from actors.tick_formats.chunks import BAD_TIMESTAMP, BLOCK_BYTES, MALFORMED, MISSING, PARQUET_ROWS, TickChunk, open_input
from actors.tick_formats.csv_layer import count_rows, csv_header
from actors.tick_formats.lobster import lobster_midnight_ns, read_lobster
from actors.tick_formats.tardis import TARDIS_QUOTE_COLUMNS, TARDIS_SIDES, TARDIS_TRADE_COLUMNS
from actors.tick_formats.tardis import read_tardis_quotes, read_tardis_trades
from actors.tick_formats.tick_table import read_tick_table

__all__ = [
    "BAD_TIMESTAMP",
    "BLOCK_BYTES",
    "CANONICAL_SIDES",
    "MALFORMED",
    "MISSING",
    "PARQUET_ROWS",
    "TARDIS_QUOTE_COLUMNS",
    "TARDIS_SIDES",
    "TARDIS_TRADE_COLUMNS",
    "TickChunk",
    "canonical_columns",
    "count_rows",
    "csv_header",
    "is_parquet",
    "lobster_midnight_ns",
    "open_input",
    "read_canonical",
    "read_lobster",
    "read_tardis_quotes",
    "read_tardis_trades",
    "read_tick_table",
]
