"""Frame parsing helpers shared by the live connectors: strict numbers, exact times, row buffers.

Every helper raises :class:`FrameError` with a quarantine reason code when a value is
malformed, so a connector turns any bad frame (or bad item inside a batched frame)
into one QUARANTINE row instead of an exception. Reason codes:

=====================  ==========================================================
reason                 meaning
=====================  ==========================================================
``not_json``           the frame is not valid JSON (or not UTF-8)
``bad_frame``          valid JSON of the wrong shape (e.g. a list where an object is due)
``missing_field``      a required field is absent or null
``bad_number``         a price/size is not a finite number (``"abc"``, ``"NaN"``, ``true``)
``bad_timestamp``      a time is not an integer of ms / not RFC-3339
``unknown_message``    an object of a message type the connector does not know
=====================  ==========================================================

Times are converted exactly (integer arithmetic, never through a float): ms -> ns by
``* 1_000_000``, RFC-3339 with 0-9 fractional digits -> ns.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from graph.schemas import ORIGIN_LIVE, QUARANTINE_ROW, TICK

__all__ = [
    "FrameError",
    "REASONS",
    "number",
    "integer",
    "ms_to_ns",
    "rfc3339_ns",
    "require",
    "text",
    "loads",
    "TickRows",
    "QuarantineRows",
]

#: Quarantine reasons a live source emits, see the module docstring.
REASONS: tuple[str, ...] = ("not_json", "bad_frame", "missing_field", "bad_number", "bad_timestamp", "unknown_message")
#: Longest ``raw`` text kept in a quarantine row (characters); longer frames are cut.
RAW_LIMIT = 4096
_NS_PER_S = 1_000_000_000
_MS_MAX = 10**14  # ~ year 5138: anything larger is not a ms timestamp
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))"
)


class FrameError(ValueError):
    """A malformed frame or item: ``reason`` is a code from :data:`REASONS`, ``detail`` a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def require(obj: dict[str, Any], name: str, what: str) -> Any:
    """``obj[name]``, or :class:`FrameError` ``missing_field`` naming ``what`` (e.g. ``"trade"``)."""
    value = obj.get(name)
    if value is None:
        raise FrameError("missing_field", f"{what} has no field {name!r}")
    return value


def text(value: Any, name: str) -> str:
    """A non-empty string (symbols, sides); anything else is :class:`FrameError` ``bad_frame``."""
    if not isinstance(value, str) or not value:
        raise FrameError("bad_frame", f"{name} {value!r} is not a non-empty string")
    return value


def loads(frame: str) -> Any:
    """The frame's JSON value, or :class:`FrameError` ``not_json``."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise FrameError("not_json", "frame is not valid JSON") from None


def number(value: Any, name: str) -> float:
    """A finite float from a JSON number or a decimal string (``"4149.74000000"``).

    Raises:
        FrameError: ``bad_number`` for booleans, other types, unparsable text, NaN, +-inf.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FrameError("bad_number", f"{name} {value!r} is not a number")
    try:
        result = float(value)
    except ValueError:
        raise FrameError("bad_number", f"{name} {value!r} is not a number") from None
    if not math.isfinite(result):
        raise FrameError("bad_number", f"{name} {value!r} is not a finite number")
    return result


def integer(value: Any, name: str) -> int:
    """An int from a JSON integer (ids, sequence numbers); booleans and floats are rejected.

    Raises:
        FrameError: ``bad_number``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError("bad_number", f"{name} {value!r} is not an integer")
    return value


def ms_to_ns(value: Any, name: str) -> int:
    """Milliseconds since the epoch (JSON integer) -> int64 ns UTC, exactly.

    Raises:
        FrameError: ``bad_timestamp`` if not an integer in (0, 10**14).
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _MS_MAX:
        raise FrameError("bad_timestamp", f"{name} {value!r} is not a time in ms since the epoch")
    return value * 1_000_000


_DAY_CACHE: dict[tuple[int, int, int], int] = {}


def rfc3339_ns(value: Any, name: str) -> int:
    """RFC-3339 text (``2021-04-17T16:43:30.244075Z``, 0-9 fraction digits, Z or +hh:mm) -> int64 ns UTC.

    Exact: the fraction is read as an integer of nanoseconds, never through a float.

    Raises:
        FrameError: ``bad_timestamp``.
    """
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise FrameError("bad_timestamp", f"{name} {value!r} is not an RFC-3339 time")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise FrameError("bad_timestamp", f"{name} {value!r} is not a valid date and time")
    key = (year, month, day)
    day_s = _DAY_CACHE.get(key)
    if day_s is None:
        try:
            day_s = calendar.timegm((year, month, day, 0, 0, 0))
            if day > calendar.monthrange(year, month)[1]:
                raise ValueError
        except (ValueError, OverflowError):
            raise FrameError("bad_timestamp", f"{name} {value!r} is not a valid date") from None
        if len(_DAY_CACHE) < 4096:
            _DAY_CACHE[key] = day_s
    seconds = day_s + hour * 3600 + minute * 60 + second
    fraction = match.group(7) or ""
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    if match.group(8):
        offset = int(match.group(9)) * 3600 + int(match.group(10)) * 60
        seconds -= offset if match.group(8) == "+" else -offset
    return seconds * _NS_PER_S + nanos


@dataclass
class TickRows:
    """TICK rows collected for the next micro-batch, as column lists.

    Attributes:
        max_event_ts: largest ``ts`` among rows that advance the watermark (exchange
            event times of real-time messages), None if no such row.
        first_ns: wall time (ns) the first pending row was added, for ``linger_ms``.
    """

    columns: dict[str, list] = field(default_factory=lambda: {name: [] for name in _TICK_VARIABLE})
    max_event_ts: int | None = None
    first_ns: int | None = None

    def __len__(self) -> int:
        return len(self.columns["ts"])

    def add(
        self,
        symbol: str,
        ts: int,
        seq: int,
        *,
        price: float | None = None,
        size: float | None = None,
        side: str | None = None,
        bid: float | None = None,
        ask: float | None = None,
        bid_size: float | None = None,
        ask_size: float | None = None,
        advances_watermark: bool = True,
        now_ns: int | None = None,
    ) -> None:
        """Append one tick (a trade: price and size; a quote: bid/ask, price None).

        Args:
            symbol, ts (ns UTC), seq: the tick's identity.
            advances_watermark: False for ticks whose ``ts`` is a receive time or that
                replay history (subscription snapshots, backfills): they never move the
                watermark, so a late exchange time cannot hide behind them.
            now_ns: wall time of the append (starts the linger clock of a new batch).
        """
        c = self.columns
        c["symbol"].append(symbol)
        c["ts"].append(ts)
        c["price"].append(price)
        c["size"].append(size)
        c["side"].append(side)
        c["bid"].append(bid)
        c["ask"].append(ask)
        c["bid_size"].append(bid_size)
        c["ask_size"].append(ask_size)
        c["seq"].append(seq)
        c["advances_watermark"].append(None if advances_watermark else False)
        if advances_watermark and (self.max_event_ts is None or ts > self.max_event_ts):
            self.max_event_ts = ts
        if self.first_ns is None:
            self.first_ns = now_ns

    def take(self, provider: str) -> tuple[pa.RecordBatch, int | None]:
        """The pending rows as one TICK batch (origin ``live``) and their ``max_event_ts``; then empty."""
        n = len(self)
        c = self.columns
        arrays = {name: pa.array(c[name], type=TICK.field(name).type) for name in _TICK_VARIABLE}
        arrays["provider"] = pa.array([provider] * n, type=pa.string())
        arrays["origin"] = pa.array([ORIGIN_LIVE] * n, type=pa.string())
        batch = pa.RecordBatch.from_arrays([arrays[name] for name in TICK.names], schema=TICK)
        top = self.max_event_ts
        self.columns = {name: [] for name in _TICK_VARIABLE}
        self.max_event_ts = None
        self.first_ns = None
        return batch, top


_TICK_VARIABLE = ("symbol", "ts", "price", "size", "side", "bid", "ask", "bid_size", "ask_size", "seq", "advances_watermark")


@dataclass
class QuarantineRows:
    """QUARANTINE rows of malformed frames collected for the next micro-batch.

    ``source`` is ``<node>/<provider>`` and ``row`` the frame's receive time (ns UTC)
    plus the item's index inside the frame: (source, row, reason) is unique and
    ordered by arrival, across runs too (the table's primary key).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, source: str, row: int, error: FrameError, raw: str, symbol: str | None = None, ts: int | None = None) -> None:
        """Append one rejected frame or item; ``raw`` is cut to :data:`RAW_LIMIT` characters."""
        if len(raw) > RAW_LIMIT:
            raw = raw[:RAW_LIMIT] + f"... ({len(raw)} characters)"
        self.rows.append(
            {"source": source, "row": row, "symbol": symbol, "ts": ts, "reason": error.reason, "detail": error.detail, "raw": raw}
        )

    def take(self) -> pa.RecordBatch:
        """The pending rows as one QUARANTINE batch; then empty."""
        batch = pa.RecordBatch.from_pylist(self.rows, schema=QUARANTINE_ROW)
        self.rows = []
        return batch
