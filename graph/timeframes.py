"""Timeframes: the bar lengths tickgraph knows, and their length in nanoseconds.

Intraday timeframes are aligned to the Unix epoch (UTC): a ``1m`` bar opens at a
whole UTC minute. ``1d`` is not a fixed length: it follows the instrument's trading
session in its exchange time zone (see ``actors/bars.py``).
"""

from __future__ import annotations

NS_PER_SECOND = 1_000_000_000

#: Fixed-length timeframes, in nanoseconds.
INTRADAY_NS: dict[str, int] = {
    "1s": NS_PER_SECOND,
    "1m": 60 * NS_PER_SECOND,
    "5m": 5 * 60 * NS_PER_SECOND,
    "15m": 15 * 60 * NS_PER_SECOND,
    "1h": 3600 * NS_PER_SECOND,
}

DAILY = "1d"

#: Every timeframe, shortest first.
TIMEFRAMES: tuple[str, ...] = (*INTRADAY_NS, DAILY)


def check_timeframe(value: str) -> str:
    """Return ``value`` if it names a timeframe.

    Raises:
        ValueError: ``'7q' is not a timeframe (1s, 1m, 5m, 15m, 1h, 1d)``.
    """
    if value not in TIMEFRAMES:
        raise ValueError(f"{value!r} is not a timeframe ({', '.join(TIMEFRAMES)})")
    return value
