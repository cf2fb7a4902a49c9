"""LOBSTER message + orderbook files (https://lobsterdata.com/info/DataStructure.php).

A LOBSTER input row is a pair: message row i and orderbook row i (the book after the
message). One pair, one outcome: a tick, or one quarantine row. A malformed orderbook
row quarantines its pair once (reason ``malformed_row``, detail naming the orderbook file
and row), instead of the book error *and* a ``bad_quote`` for the message it left
without a book (which made "ticks read" 501 for a 500-row file).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actors.tick_formats.chunks import BLOCK_BYTES, MALFORMED, TickChunk
from actors.tick_formats.csv_layer import CsvChunks, RawChunk, count_rows, csv_header, drive
from actors.tick_formats.values import F64, I64, SECONDS, STR, Errors, parse, rejections, ticks_batch
from graph.schemas import QUARANTINE_ROW

__all__ = ["lobster_midnight_ns", "read_lobster"]

_MESSAGE_COLUMNS = ["time", "type", "order_id", "size", "price", "direction"]
_MESSAGE_TYPES = {"time": SECONDS, "type": I64, "size": F64, "price": F64, "direction": I64}
_BOOK_COLUMNS = ("ask_price", "ask_size", "bid_price", "bid_size")
_EMPTY_LEVEL = 9_999_999_999  # LOBSTER's dummy price of an unoccupied level
_TRADE_TYPES = pa.array([4, 5])


def lobster_midnight_ns(day: str, tz: str) -> int:
    """Local midnight of a date in a time zone, DST-correct.

    Args:
        day: ``YYYY-MM-DD``.
        tz: IANA time zone name, e.g. ``America/New_York``.

    Returns:
        int ns since the epoch, UTC (e.g. 2012-06-21 in New York: 04:00 UTC).
    """
    local = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=ZoneInfo(tz))
    delta = local - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def read_lobster(
    message_file: Path,
    orderbook_file: Path,
    symbol: str,
    midnight_ns: int,
    provider: str = "lobster",
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[TickChunk]:
    """Read a LOBSTER message file and its orderbook file (any level count) in lockstep.

    Args:
        message_file: no header; time (s after local midnight, 0-9 decimals), type,
            order_id, size (shares), price ($ x 10000), direction (resting order: -1 sell, 1 buy).
        orderbook_file: no header; ask_price_1, ask_size_1, bid_price_1, bid_size_1, ...;
            row i is the book after message i.
        symbol: the instrument, e.g. "AMZN".
        midnight_ns: local midnight of the file's date, int ns UTC (:func:`lobster_midnight_ns`).
        provider: the TICK ``provider`` value.
        block_bytes: CSV bytes read per step.

    Yields:
        TickChunk: one tick per message; types 4/5 are trades (price $, size, aggressor side
        "buy" for direction -1, "sell" for 1), other types quote ticks (price/size null); all
        carry the level-1 book ($, shares), null for an empty level (+-9999999999). ``ts`` =
        midnight_ns + exact decimal time; ``seq`` = 0-based message row. A pair whose
        message or orderbook row is malformed is one quarantine row (the message's error
        first), ``source`` = the message file.

    Raises:
        ValueError: the two files differ in row count, or the orderbook is not 4 x levels wide.
        FileNotFoundError: a file cannot be opened.
    """
    width = len(csv_header(orderbook_file)) or 4  # an empty file has no first line
    if width % 4:
        raise ValueError(f"{orderbook_file}: expected 4 x levels columns, got {width}")
    book_names = [f"{name}_{level}" for level in range(1, width // 4 + 1) for name in _BOOK_COLUMNS]
    book_types = {f"{name}_1": F64 for name in _BOOK_COLUMNS}
    source = str(message_file)
    messages = drive(
        CsvChunks(message_file, _MESSAGE_TYPES, _MESSAGE_COLUMNS, block_bytes),
        lambda chunk: _lobster_messages(chunk, source, symbol, midnight_ns),
    )
    books = drive(
        CsvChunks(orderbook_file, book_types, book_names, block_bytes),
        lambda chunk: _lobster_book(chunk, str(orderbook_file)),
    )
    book, end = _BookBuffer(books, message_file, orderbook_file), 0
    for rows, end, cols, bad, rows_read, slow in messages:  # see _lobster_messages
        book_bad, (ask, ask_size, bid, bid_size) = book.take(rows, end)
        found = [bad] if bad is not None else []
        if book_bad:  # the pair's orderbook row is malformed: the pair is quarantined, once
            drop = np.isin(rows, np.fromiter(book_bad, dtype=np.int64))
            found.append(_book_rejections(source, symbol, rows[drop], cols["ts"].filter(pa.array(drop)), book_bad))
            keep = pa.array(~drop)
            rows = rows[~drop]
            cols = {name: values.filter(keep) for name, values in cols.items()}
            ask, ask_size, bid, bid_size = (values.filter(keep) for values in (ask, ask_size, bid, bid_size))
        is_trade = pc.is_in(cols["type"], _TRADE_TYPES)
        direction = cols["direction"]
        side = pc.if_else(pc.equal(direction, -1), "buy", pc.if_else(pc.equal(direction, 1), "sell", None))
        none = pa.scalar(None, STR)
        ticks = ticks_batch(
            len(rows), None, symbol=symbol, ts=cols["ts"], provider=provider, seq=rows,
            price=pc.if_else(is_trade, pc.divide(cols["price"], 10_000.0), None),
            size=pc.if_else(is_trade, cols["size"], None), side=pc.if_else(is_trade, side, none),
            bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size,
        )  # fmt: skip
        quarantine = _sorted_concat(found)
        yield TickChunk(ticks, quarantine, rows_read, slow)
    book.finish(end)


def _sorted_concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch | None:
    if not batches:
        return None
    table = pa.Table.from_batches(batches, schema=QUARANTINE_ROW).combine_chunks()
    return table.take(pc.sort_indices(table, [("row", "ascending")])).to_batches()[0]


def _book_rejections(
    source: str, symbol: str, rows: np.ndarray, ts: pa.Array, book_bad: dict[int, tuple[str, str, str]]
) -> pa.RecordBatch:
    """One QUARANTINE_ROW per message row whose orderbook row was malformed."""
    records = []
    for row, when in zip(rows.tolist(), ts.to_pylist()):
        book_file, detail, raw = book_bad[row]
        records.append({
            "source": source, "row": row, "symbol": symbol, "ts": when, "reason": MALFORMED,
            "detail": f"orderbook file {book_file} row {row}: {detail}", "raw": raw,
        })  # fmt: skip
    return pa.RecordBatch.from_pylist(records, schema=QUARANTINE_ROW)


def _lobster_messages(chunk: RawChunk, source: str, symbol: str, midnight_ns: int) -> tuple[tuple, bool]:
    """((good rows, end row, {ts, type, size, price, direction}, quarantine, rows read, slow), had errors)."""
    errors = Errors(len(chunk.rows))
    cols = {name: parse(chunk.columns[name], kind, name, errors) for name, kind in _MESSAGE_TYPES.items()}
    for name, values in cols.items():
        errors.require(values, name)
    seconds = cols.pop("time")
    start = seconds.offset * 2  # decimal128 little-endian: the low int64 is the unscaled value
    unscaled = np.frombuffer(seconds.buffers()[1], dtype="<i8")[start : start + 2 * len(seconds) : 2]
    cols["ts"] = pa.array(unscaled + midnight_ns, mask=seconds.is_null().to_numpy(zero_copy_only=False))
    bad = rejections(source, chunk, errors, symbol, cols["ts"])
    good = pa.array(~errors.bad)
    if errors.found:
        cols = {name: values.filter(good) for name, values in cols.items()}
    end = chunk.start + chunk.rows_read
    result = (chunk.rows[~errors.bad], end, cols, bad, chunk.rows_read, chunk.raw is not None)
    return result, bool(errors.found or chunk.bad)


def _lobster_book(chunk: RawChunk, source: str) -> tuple[tuple, bool]:
    """((good rows, end row, [ask $, ask size, bid $, bid size], {bad row: (file, detail, raw)}), had errors)."""
    errors = Errors(len(chunk.rows))
    cols = [parse(chunk.columns[f"{name}_1"], F64, f"{name}_1", errors) for name in _BOOK_COLUMNS]
    for name, values in zip(_BOOK_COLUMNS, cols):
        errors.require(values, f"{name}_1")
    ask, ask_size, bid, bid_size = cols
    no_ask, no_bid = pc.greater_equal(ask, _EMPTY_LEVEL), pc.less_equal(bid, -_EMPTY_LEVEL)
    book = [
        pc.if_else(no_ask, None, pc.divide(ask, 10_000.0)), pc.if_else(no_ask, None, ask_size),
        pc.if_else(no_bid, None, pc.divide(bid, 10_000.0)), pc.if_else(no_bid, None, bid_size),
    ]  # fmt: skip
    bad = {row: (source, detail, line) for row, detail, line in chunk.bad}
    for pos, (_, detail) in errors.found.items():
        bad[int(chunk.rows[pos])] = (source, detail, chunk.raw_text(pos) or "")
    if errors.found:
        book = [values.filter(pa.array(~errors.bad)) for values in book]
    result = (chunk.rows[~errors.bad], chunk.start + chunk.rows_read, book, bad)
    return result, bool(errors.found or chunk.bad)


class _BookBuffer:
    """Orderbook rows read ahead of the messages, matched to them by data row."""

    def __init__(self, parts: Iterator[tuple], message_file: Path, orderbook_file: Path) -> None:
        self.parts, self.files = parts, (message_file, orderbook_file)
        self.rows = np.zeros(0, dtype=np.int64)
        self.book = [pa.array([], F64) for _ in range(4)]
        self.bad: dict[int, tuple[str, str, str]] = {}
        self.end, self.done = 0, False

    def take(self, rows: np.ndarray, end: int) -> tuple[dict[int, tuple[str, str, str]], list[pa.Array]]:
        """For message rows ``rows`` (all < ``end``): the malformed book rows among them
        (row -> (orderbook file, detail, raw line)) and the book after each (null there)."""
        while self.end < end and not self.done:
            part = next(self.parts, None)
            if part is None:
                self.done = True
                break
            part_rows, self.end, book, bad = part
            self.rows = np.concatenate([self.rows, part_rows])
            self.book = [pa.concat_arrays([old, new]) for old, new in zip(self.book, book)]
            self.bad.update(bad)
        if self.end < end:
            self._mismatch()
        pos = np.minimum(np.searchsorted(self.rows, rows), max(len(self.rows) - 1, 0))
        hit = (self.rows[pos] == rows) if len(self.rows) else np.zeros(len(rows), dtype=bool)
        index = pa.array(pos, mask=~hit)
        taken = [values.take(index) for values in self.book]
        keep = int(np.searchsorted(self.rows, end))
        self.rows, self.book = self.rows[keep:], [values.slice(keep) for values in self.book]
        if not self.bad:
            return {}, taken
        wanted = set(rows.tolist())
        bad = {row: found for row, found in self.bad.items() if row in wanted}
        self.bad = {row: found for row, found in self.bad.items() if row >= end}
        return bad, taken

    def finish(self, end: int) -> None:
        """Check that the orderbook has no rows beyond the last message row ``end``."""
        if self.end > end or (not self.done and next(self.parts, None) is not None):
            self._mismatch()

    def _mismatch(self) -> None:
        message_file, orderbook_file = self.files
        raise ValueError(
            f"LOBSTER files differ in row count: message file {message_file} has "
            f"{count_rows(message_file)} rows, orderbook file {orderbook_file} has "
            f"{count_rows(orderbook_file)}; row i of the orderbook must be the book after message i"
        )
