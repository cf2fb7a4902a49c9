"""Tardis.dev ``trades`` and ``quotes`` CSV files (https://docs.tardis.dev/downloadable-csv-files).

Tardis never quotes a field; timestamps are integer microseconds since the epoch UTC,
converted to ns with an overflow check (a file of nanoseconds is quarantined row by row
as ``bad_timestamp``, never wrapped to 1840). Trade ``side`` must be ``buy``, ``sell`` or
``unknown`` (-> null); any other text, e.g. ``"buy`` with a stray quote, is a malformed row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from actors.tick_formats.chunks import BLOCK_BYTES, TickChunk
from actors.tick_formats.csv_layer import CsvChunks, RawChunk, csv_header, drive
from actors.tick_formats.values import F64, I64, STR, Errors, checked_scale, int_or_null, parse, parse_choice
from actors.tick_formats.values import rejections, ticks_batch

__all__ = ["TARDIS_TRADE_COLUMNS", "TARDIS_QUOTE_COLUMNS", "TARDIS_SIDES", "read_tardis_trades", "read_tardis_quotes"]

TARDIS_TRADE_COLUMNS = {
    "exchange": STR, "symbol": STR, "timestamp": I64, "id": STR, "side": STR, "price": F64, "amount": F64,
}  # fmt: skip
TARDIS_QUOTE_COLUMNS = {
    "exchange": STR, "symbol": STR, "timestamp": I64,
    "ask_amount": F64, "ask_price": F64, "bid_price": F64, "bid_amount": F64,
}  # fmt: skip
#: Tardis trade ``side`` values and what they become in TICK (aggressor side; unknown -> null).
TARDIS_SIDES: dict[str, str | None] = {"buy": "buy", "sell": "sell", "unknown": None}
_US_TO_NS = 1_000


def _read_tardis(path: Path, types: dict[str, pa.DataType], block_bytes: int, trades: bool) -> Iterator[TickChunk]:
    source = str(path)
    missing = [name for name in types if name not in csv_header(path)]
    if missing:
        kind = "trades" if trades else "quotes"
        raise ValueError(f"{source}: Tardis {kind} file lacks column(s) {', '.join(missing)}")

    def convert(chunk: RawChunk) -> tuple[TickChunk, bool]:
        n = len(chunk.rows)
        errors = Errors(n)
        cols = {name: parse(chunk.columns[name], kind, name, errors) for name, kind in types.items()}
        for name in ("exchange", "symbol", "timestamp", *(("price", "amount") if trades else ())):
            errors.require(cols[name], name)
        ts = checked_scale(cols["timestamp"], _US_TO_NS, "us", "timestamp", errors)
        rows = pa.array(chunk.rows)
        if trades:  # seq = the integer trade id; the data row where the venue gives none
            seq = pc.coalesce(int_or_null(cols["id"]), rows)
            side = parse_choice(cols["side"], TARDIS_SIDES, "side", errors)
            values = {"price": cols["price"], "size": cols["amount"], "side": side}
        else:
            seq = rows
            values = {
                "bid": cols["bid_price"], "ask": cols["ask_price"],
                "bid_size": cols["bid_amount"], "ask_size": cols["ask_amount"],
            }  # fmt: skip
        ticks = ticks_batch(n, errors, symbol=cols["symbol"], ts=ts, provider=cols["exchange"], seq=seq, **values)
        bad = rejections(source, chunk, errors, cols["symbol"], ts)
        return TickChunk(ticks, bad, chunk.rows_read, chunk.raw is not None), bool(errors.found or chunk.bad)

    yield from drive(CsvChunks(path, types, None, block_bytes), convert)


def read_tardis_trades(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[TickChunk]:
    """Read a Tardis.dev ``trades`` CSV.

    Args:
        path: header ``exchange, symbol, timestamp, local_timestamp, id, side, price, amount``
            (extra columns ignored); ``.gz`` is decompressed.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: ``provider`` = exchange; ``ts`` = timestamp (us) x 1000, ns UTC; price,
        size = amount (base units); side = taker side (``buy``/``sell``; ``unknown`` -> null);
        seq = id (the 0-based data row where id is empty or not an integer).

    Raises:
        ValueError: a required column is missing from the header.
        FileNotFoundError: the file cannot be opened.
    """
    return _read_tardis(path, TARDIS_TRADE_COLUMNS, block_bytes, trades=True)


def read_tardis_quotes(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[TickChunk]:
    """Read a Tardis.dev ``quotes`` CSV (ask fields first).

    Args:
        path: header ``exchange, symbol, timestamp, local_timestamp, ask_amount, ask_price,
            bid_price, bid_amount`` (extra columns ignored); ``.gz`` is decompressed.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: quote ticks (price/size null); bid, ask, bid_size, ask_size (empty -> null);
        ``provider`` = exchange; ``ts`` = timestamp (us) x 1000, ns UTC; seq = 0-based data row.

    Raises:
        ValueError: a required column is missing from the header.
        FileNotFoundError: the file cannot be opened.
    """
    return _read_tardis(path, TARDIS_QUOTE_COLUMNS, block_bytes, trades=False)
