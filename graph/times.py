"""Points in time as int64 ns UTC: parsing, ISO-8601 formatting, and the plausible event-time range.

Every timestamp in tickgraph is an int of nanoseconds since 1970-01-01 UTC. This module
is the one place that turns text into such a number (:func:`parse_time_ns`), a number
into text (:func:`iso_ns`), and that decides which event times are *plausible*.

The plausible range (default ``[1990-01-01, 2100-01-01)`` UTC, configurable per graph in
``event_time.earliest`` / ``event_time.latest``) catches unit mistakes that no type check
can: a file of seconds read as microseconds lands in 1970, nanoseconds read as
microseconds in the year 50,000,000 (or wraps int64). Ticks outside it are quarantined
by the normalizer as ``bad_timestamp`` with a detail that names the likely mistake
(:meth:`EventTimeRange.describe`), and sources never let them move a watermark or a
merge key, so one bogus tick cannot make every later tick late.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NS_PER_S",
    "DEFAULT_EARLIEST_NS",
    "DEFAULT_LATEST_NS",
    "EventTimeRange",
    "iso_ns",
    "parse_time_ns",
    "unit_mistake",
]

NS_PER_S = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_INT64_MAX = (1 << 63) - 1
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$")


def _to_ns(moment: dt.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


#: Default earliest plausible event time: 1990-01-01T00:00:00Z (int64 ns UTC).
DEFAULT_EARLIEST_NS = _to_ns(dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc))
#: Default end of the plausible event times (exclusive): 2100-01-01T00:00:00Z (int64 ns UTC).
DEFAULT_LATEST_NS = _to_ns(dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc))


def iso_ns(ts: int) -> str:
    """``ts`` (int ns UTC) as ISO-8601 with up to 9 decimals, e.g. ``2012-06-21T13:30:00.5Z``.

    Values outside what ``datetime`` can show (years before 1 or after 9999) are written
    as ``<n> ns`` rather than raising, so an error message about a bad value never fails.
    """
    seconds, nanos = divmod(int(ts), NS_PER_S)
    try:
        text = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    except OverflowError:
        return f"{int(ts)} ns"
    return f"{text}.{nanos:09d}".rstrip("0").rstrip(".") + "Z"


def parse_time_ns(value: int | str | dt.datetime) -> int:
    """A point in time as int64 ns UTC.

    Args:
        value: int ns since the epoch (or its decimal text); ISO-8601 text with a UTC
            offset and up to 9 decimals (``2012-06-21T14:00:00.5-04:00``, ``...Z``); or an
            aware ``datetime`` (YAML turns unquoted timestamps into one).

    Returns:
        int ns since 1970-01-01 UTC.

    Raises:
        ValueError: text that is neither, or a time without a UTC offset.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            text = value.isoformat()
            raise ValueError(f"{text!r} has no UTC offset; write e.g. '{text}Z' or '{text}-04:00'")
        return _to_ns(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time (int ns UTC or ISO-8601 text with offset)")
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    match = _ISO.match(text)
    if match is None:
        raise ValueError(
            f"{value!r} is not a time: expected int ns UTC or ISO-8601 with offset, e.g. '2012-06-21T14:00:00Z'"
        )
    day, clock, fraction, offset = match.groups()
    if offset is None:
        raise ValueError(f"{value!r} has no UTC offset; write e.g. '{text}Z' or '{text}-04:00'")
    offset = "+00:00" if offset == "Z" else offset
    try:
        whole = dt.datetime.fromisoformat(f"{day}T{clock}{offset}")
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid time: {exc}") from None
    return _to_ns(whole) + int((fraction or "").ljust(9, "0") or 0)


# Scale factors between units, and what a value off by that factor usually is.
_MISTAKES = (
    (10**3, "milliseconds read as microseconds, or microseconds read as nanoseconds"),
    (10**6, "seconds read as microseconds, or milliseconds read as nanoseconds"),
    (10**9, "seconds read as nanoseconds"),
    (-(10**3), "nanoseconds read as microseconds, or microseconds read as milliseconds"),
    (-(10**6), "nanoseconds read as milliseconds, or microseconds read as seconds"),
    (-(10**9), "nanoseconds read as seconds"),
)
_UNIT_NS = {"s": NS_PER_S, "ms": 1_000_000, "us": 1_000, "ns": 1}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def unit_mistake(value: int, unit: str, earliest_ns: int, latest_ns: int) -> str:
    """Which reading of a raw ``value`` in ``unit`` falls in ``[earliest_ns, latest_ns)``.

    Args:
        value: the number as written in the input (e.g. a Tardis ``timestamp``).
        unit: the unit it was read as: ``s``, ``ms``, ``us`` or ``ns``.
        earliest_ns, latest_ns: the plausible range, int ns UTC.

    Returns:
        e.g. ``"as nanoseconds it is 2020-02-22T00:00:00.123Z: likely nanoseconds in a
        microseconds field"``, or a sentence saying no unit gives a plausible time.
    """
    for other, scale in _UNIT_NS.items():
        if other == unit:
            continue
        ns = value * scale  # Python int: no overflow
        if earliest_ns <= ns < latest_ns:
            return (
                f"as {_UNIT_NAMES[other]} it is {iso_ns(ns)}: likely {_UNIT_NAMES[other]} "
                f"in a {_UNIT_NAMES[unit]} field"
            )
    return f"no unit (s, ms, us, ns) gives a time in [{iso_ns(earliest_ns)}, {iso_ns(latest_ns)})"


@dataclass(frozen=True)
class EventTimeRange:
    """The plausible event times ``[earliest_ns, latest_ns)``, int64 ns UTC.

    Attributes:
        earliest_ns: first plausible event time (default 1990-01-01T00:00:00Z).
        latest_ns: end of the plausible event times, exclusive (default 2100-01-01T00:00:00Z).
    """

    earliest_ns: int = DEFAULT_EARLIEST_NS
    latest_ns: int = DEFAULT_LATEST_NS

    def __post_init__(self) -> None:
        if not self.earliest_ns < self.latest_ns:
            raise ValueError(
                f"the plausible event-time range is empty: latest {iso_ns(self.latest_ns)} "
                f"must be after earliest {iso_ns(self.earliest_ns)}"
            )

    def contains(self, ts: np.ndarray) -> np.ndarray:
        """Bool mask, shape of ``ts`` (int64 ns UTC): ``earliest_ns <= ts < latest_ns``."""
        return (ts >= self.earliest_ns) & (ts < self.latest_ns)

    def plausible_max(self, ts: np.ndarray) -> int | None:
        """The largest plausible value of ``ts`` (int64 ns UTC), or None if it has none."""
        inside = ts[self.contains(ts)]
        return int(inside.max()) if len(inside) else None

    def describe(self, ts: int) -> str:
        """Why ``ts`` (int ns UTC, outside the range) is implausible, and the likely unit mistake.

        Returns:
            e.g. ``"ts 1582329600000000 (1970-01-19T07:32:09.6Z) is outside the plausible
            event-time range [1990-01-01T00:00:00Z, 2100-01-01T00:00:00Z); x1,000,000 it
            is 2020-02-22T00:00:00Z: likely seconds read as microseconds, or milliseconds
            read as nanoseconds"``.
        """
        text = (
            f"ts {ts} ({iso_ns(ts)}) is outside the plausible event-time range "
            f"[{iso_ns(self.earliest_ns)}, {iso_ns(self.latest_ns)})"
        )
        for factor, mistake in _MISTAKES:
            scaled = ts * factor if factor > 0 else ts // -factor
            if self.earliest_ns <= scaled < self.latest_ns and abs(scaled) <= _INT64_MAX:
                shown = f"x{factor:,}" if factor > 0 else f"/{-factor:,}"
                return f"{text}; {shown} it is {iso_ns(scaled)}: likely {mistake}"
        return f"{text}; no factor of 1,000 brings it into the range"
