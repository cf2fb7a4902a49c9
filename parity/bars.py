"""Compare stored or exported bars with a reference export (e.g. a charting platform's CSV).

``python run.py parity bars --local LOCAL --reference REF.csv ...`` (``commands/parity.py``).

Inputs:
    * ``LOCAL``: a CSV of bars (e.g. exported ``bars_ohlcv`` rows), a Parquet file, or
      the folder of a ``parquet_sink`` (``bars_dataset``); ``--symbol``/``--timeframe``
      pick one series when it holds several. A bar stored twice (a correction appended
      later) counts once, its last row.
    * ``REF``: a CSV with a time column and open, high, low, close, volume columns.

Column names are matched case-insensitively, ignoring spaces, ``_`` and ``-``, first
alias wins: time ``ts time timestamp datetime date open_time t``; ``open o``; ``high
h``; ``low l``; ``close c``; volume ``volume vol v``; optional ``vwap`` and trade count
``trade_count trades count``. Times are bar OPEN times and may be:

    * ISO-8601 with an offset (``2012-06-21T09:30:00-04:00``, ``...Z``): converted to UTC;
    * ISO-8601 without one (``2012-06-21 13:30:00``): UTC, or ``--tz`` if given;
    * dates only (``2012-06-21``, daily bars): matched to local bars by their calendar
      date in UTC (or ``--tz``), since a platform labels a daily bar by its date;
    * integers: unix seconds (< 1e11), milliseconds (< 1e14), microseconds (< 1e17),
      else nanoseconds; decimals (``1340285400.5``) are read exactly. ``--time-unit``
      overrides the guess.

Tolerances: ``--price-tolerance`` applies to open, high, low, close and vwap,
``--volume-tolerance`` to volume; a value ``x`` allows ``|local - reference| <= x``, a
value ``x%`` allows ``|local - reference| <= x/100 * |reference|``. ``trade_count`` is
compared exactly when both sides have it. A bar only in the reference is *missing*,
only in local is *extra*.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from graph.times import iso_ns

__all__ = [
    "BarCompareError",
    "Tolerance",
    "parse_tolerance",
    "parse_times",
    "read_reference",
    "read_local",
    "compare_bars",
]

_ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("ts", "time", "timestamp", "datetime", "date", "opentime", "t"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "vwap": ("vwap",),
    "trade_count": ("tradecount", "trades", "count"),
}
_REQUIRED = ("time", "open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close", "vwap")
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
#: Numeric times below each limit are read in that unit (1e11 s is the year 5138).
_UNIT_GUESS = (("s", Decimal("1e11")), ("ms", Decimal("1e14")), ("us", Decimal("1e17")))
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NS_PER_DAY = 86_400 * 1_000_000_000


class BarCompareError(ValueError):
    """Bad input to the bar comparison: names the file, the column or row, and the value."""


@dataclass(frozen=True)
class Tolerance:
    """An allowed difference: absolute (``value``) or relative to the reference (``percent``)."""

    value: float
    relative: bool = False

    def allows(self, local: float, reference: float) -> bool:
        """Whether ``|local - reference|`` is within this tolerance (NaN equals NaN)."""
        if math.isnan(local) or math.isnan(reference):
            return math.isnan(local) and math.isnan(reference)
        limit = self.value / 100.0 * abs(reference) if self.relative else self.value
        return abs(local - reference) <= limit

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


def parse_tolerance(text: str, option: str) -> Tolerance:
    """``"0.01"`` (absolute) or ``"0.5%"`` (relative) -> :class:`Tolerance`.

    Raises:
        BarCompareError: not a non-negative finite number, optionally followed by ``%``.
    """
    raw = text.strip()
    relative = raw.endswith("%")
    try:
        value = float(raw[:-1] if relative else raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise BarCompareError(f"{option} {text!r}: expected a number >= 0, e.g. 0.01 or 0.5% (relative)")
    return Tolerance(value, relative)


# ------------------------------------------------------------------------------ reading
def _normalize(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _find_columns(columns: list[str], source: str, required: tuple[str, ...]) -> dict[str, str]:
    """Canonical field -> the file's column, by alias; raises if a required one is missing."""
    by_norm: dict[str, str] = {}
    for column in columns:
        by_norm.setdefault(_normalize(column), column)
    found = {}
    for field, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in by_norm:
                found[field] = by_norm[alias]
                break
    missing = [f for f in required if f not in found]
    if missing:
        wanted = "; ".join(f"{f} ({' / '.join(_ALIASES[f])})" for f in missing)
        raise BarCompareError(f"{source}: no column for {wanted}; columns are {', '.join(map(str, columns))}")
    return found


def parse_times(values: pd.Series, source: str, unit: str | None = None, tz: str = "UTC") -> tuple[np.ndarray, bool]:
    """Bar times in any accepted format -> int64 ns UTC.

    Args:
        values: the time column as strings (or numbers).
        source: file name, for errors.
        unit: ``s``, ``ms``, ``us`` or ``ns`` for numeric times; None guesses by magnitude.
        tz: IANA zone for ISO times without offset and for date-only values.

    Returns:
        ``(ts, date_only)``: int64 ns UTC per row, shape (n,); ``date_only`` is True
        when every value is a bare date (then ``ts`` = UTC midnight of that date).

    Raises:
        BarCompareError: an empty or unparsable value (names its 1-based data row).
    """
    text = values.astype("string").str.strip()
    empty = text.isna() | (text == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0]) + 1
        raise BarCompareError(f"{source}: data row {row}: empty time")
    strings = text.tolist()
    if all(_DECIMAL.match(s) for s in strings):
        return _numeric_times(strings, source, unit), False
    if unit is not None:
        bad = next(s for s in strings if not _DECIMAL.match(s))
        raise BarCompareError(f"{source}: --time-unit {unit} given but time {bad!r} is not a number")
    if all(_DATE_ONLY.match(s) for s in strings):
        days = pd.to_datetime(pd.Series(strings), format="%Y-%m-%d", errors="coerce")
        _raise_on_nat(days, strings, source)
        return days.to_numpy(dtype="datetime64[ns]").astype(np.int64), True
    parsed = pd.to_datetime(pd.Series(strings), format="ISO8601", errors="coerce", utc=True)
    _raise_on_nat(parsed, strings, source)
    naive = [not _has_offset(s) for s in strings]
    ts = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    if tz != "UTC" and any(naive):
        local = pd.to_datetime(pd.Series(strings)[naive], format="ISO8601").dt.tz_localize(tz)
        ts[np.asarray(naive)] = local.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ts, False


def _has_offset(text: str) -> bool:
    return bool(re.search(r"(Z|[+-]\d{2}:?\d{2})$", text))


def _raise_on_nat(parsed: pd.Series, strings: list[str], source: str) -> None:
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise BarCompareError(
            f"{source}: data row {bad[0] + 1}: time {strings[bad[0]]!r} is not ISO-8601 "
            "(e.g. 2012-06-21T13:30:00Z), a date (2012-06-21) or a unix time"
        )


def _numeric_times(strings: list[str], source: str, unit: str | None) -> np.ndarray:
    """Unix times -> int64 ns, exactly (decimals through :class:`decimal.Decimal`)."""
    if unit is None:
        magnitude = max(abs(Decimal(s)) for s in strings)
        unit = next((u for u, limit in _UNIT_GUESS if magnitude < limit), "ns")
    scale = _UNIT_NS[unit]
    limit = int(np.iinfo(np.int64).max) // scale
    too_big = next((s for s in strings if abs(Decimal(s)) > limit), None)
    if too_big is not None:
        raise BarCompareError(f"{source}: time {too_big!r} in unit {unit} does not fit int64 nanoseconds")
    if all(_INTEGER.match(s) for s in strings):
        return np.array([int(s) for s in strings], dtype=np.int64) * np.int64(scale)
    out = np.empty(len(strings), dtype=np.int64)
    for i, s in enumerate(strings):
        try:
            out[i] = int((Decimal(s) * scale).to_integral_value())
        except (InvalidOperation, OverflowError):
            raise BarCompareError(f"{source}: data row {i + 1}: time {s!r} is not a unix time in {unit}") from None
    return out


def _bar_frame(raw: pd.DataFrame, columns: dict[str, str], ts: np.ndarray, source: str) -> pd.DataFrame:
    """Numeric bar columns + ``ts``; raises on non-numeric values."""
    frame = pd.DataFrame({"ts": ts})
    for field in ("open", "high", "low", "close", "volume", "vwap", "trade_count"):
        if field not in columns:
            continue
        numbers = pd.to_numeric(raw[columns[field]], errors="coerce")
        bad = numbers.isna() & raw[columns[field]].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BarCompareError(
                f"{source}: data row {row + 1}: {columns[field]} {raw[columns[field]].iloc[row]!r} is not a number"
            )
        frame[field] = numbers.astype("float64").to_numpy()
    return frame


def _last_per_time(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per ``ts`` (the last), sorted; returns the frame and the number dropped."""
    deduped = frame.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable").reset_index(drop=True)
    return deduped, len(frame) - len(deduped)


def read_reference(path: str | Path, time_unit: str | None = None, tz: str = "UTC") -> tuple[pd.DataFrame, dict[str, Any]]:
    """A reference bar CSV -> bars.

    Args:
        path: CSV with a header row.
        time_unit: unit of numeric times, None to guess.
        tz: zone of ISO times without offset / of dates.

    Returns:
        ``(bars, info)``: bars has ``ts`` (int64 ns UTC, bar open time) and float64
        ``open high low close volume`` (+ ``vwap``, ``trade_count`` if present), one row
        per time, sorted; info has ``columns`` (field -> CSV column), ``date_only``,
        ``duplicates``.

    Raises:
        BarCompareError: unreadable file, missing columns, bad times or numbers.
    """
    source = str(path)
    try:
        raw = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BarCompareError(f"{source}: cannot read as CSV: {exc}") from exc
    columns = _find_columns(list(raw.columns), source, _REQUIRED)
    ts, date_only = parse_times(raw[columns["time"]], source, time_unit, tz)
    bars, duplicates = _last_per_time(_bar_frame(raw, columns, ts, source))
    return bars, {"columns": columns, "date_only": date_only, "duplicates": duplicates}


def read_local(path: str | Path, symbol: str | None = None, timeframe: str | None = None,
               time_unit: str | None = None, tz: str = "UTC") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Local bars (CSV, Parquet file, or ``parquet_sink`` folder) -> one series of bars.

    Args:
        path: a ``.csv`` file, a Parquet file, or a folder (``bars_dataset``).
        symbol, timeframe: filters; required when the data holds several series.
        time_unit, tz: as for :func:`read_reference` (CSV only; Parquet ``ts`` is typed).

    Returns:
        ``(bars, info)`` like :func:`read_reference`; info also has ``symbol`` and
        ``timeframe`` when known.

    Raises:
        BarCompareError: unreadable input, missing columns, no rows after the filters,
            or several series without a filter.
    """
    source = str(path)
    path = Path(path)
    if not path.exists():
        raise BarCompareError(f"{source}: no such file or folder")
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        raw, ts = _read_parquet(path, source)
        columns = _find_columns(list(raw.columns), source, _REQUIRED)
    else:
        try:
            raw = pd.read_csv(path, dtype=str, skipinitialspace=True)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise BarCompareError(f"{source}: cannot read as CSV: {exc}") from exc
        columns = _find_columns(list(raw.columns), source, _REQUIRED)
        ts = None
    info: dict[str, Any] = {"columns": columns}
    for name, wanted in (("symbol", symbol), ("timeframe", timeframe)):
        if name in raw.columns:
            values = raw[name].astype(str)
            if wanted is not None:
                keep = (values == wanted).to_numpy()
                raw = raw[keep].reset_index(drop=True)
                ts = ts[keep] if ts is not None else None
                if raw.empty:
                    raise BarCompareError(
                        f"{source}: no bars with {name} {wanted!r} (present: {', '.join(sorted(set(values)))})"
                    )
            elif values.nunique() > 1:
                raise BarCompareError(
                    f"{source}: bars of several {name}s ({', '.join(sorted(set(values)))}); choose one with --{name}"
                )
            info[name] = str(raw[name].iloc[0]) if len(raw) else wanted
        elif wanted is not None:
            info[name] = wanted
    if raw.empty:
        raise BarCompareError(f"{source}: no bars")
    if ts is None:
        ts, _ = parse_times(raw[columns["time"]], source, time_unit, tz)
    bars, duplicates = _last_per_time(_bar_frame(raw, columns, ts, source))
    info["duplicates"] = duplicates
    return bars, info


def _read_parquet(path: Path, source: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Bars from a Parquet file or sink folder: the frame and its ``ts`` as int64 ns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from actors.parquet_sink import bars_dataset, latest_bars

    try:
        table = latest_bars(bars_dataset(path).to_table()) if path.is_dir() else pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise BarCompareError(f"{source}: cannot read as Parquet bars: {exc}") from exc
    if "ts" not in table.column_names:
        raise BarCompareError(f"{source}: Parquet bars lack column 'ts'; columns are {', '.join(table.column_names)}")
    ts = table["ts"]
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    return table.drop(["ts"]).to_pandas().assign(ts=ts.to_numpy()), ts.to_numpy()


# ------------------------------------------------------------------------------ comparing


def _local_dates(ts: np.ndarray, tz: str) -> np.ndarray:
    """UTC midnight (int64 ns) of each timestamp's calendar date in ``tz``."""
    local = pd.to_datetime(pd.Series(ts), utc=True).dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()
    return local.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _values(row: pd.Series, fields: list[str]) -> dict[str, Any]:
    return {f: (None if pd.isna(row[f]) else (int(row[f]) if f == "trade_count" else float(row[f]))) for f in fields}


def compare_bars(local: pd.DataFrame, reference: pd.DataFrame, price_tolerance: Tolerance,
                 volume_tolerance: Tolerance, *, date_only: bool = False, tz: str = "UTC") -> dict[str, Any]:
    """Diff two bar series by bar open time.

    Args:
        local, reference: frames from :func:`read_local` / :func:`read_reference`.
        price_tolerance: for open, high, low, close (and vwap when both have it).
        volume_tolerance: for volume.
        date_only: reference times are dates: match local bars by calendar date in ``tz``.
        tz: zone of the dates when ``date_only``.

    Returns:
        ``{"within_tolerance", "counts": {"local", "reference", "matched", "equal",
        "differing", "missing", "extra"}, "tolerances", "compared_fields", "missing": [...],
        "extra": [...], "differing": [{"ts", "time", "fields": {field: {"local",
        "reference", "difference"}}}]}``; ``missing`` = in the reference only, ``extra``
        = in local only; each listed with ``ts`` (int64 ns UTC), ``time`` (ISO) and values.
    """
    local = local.copy()
    local["key"] = _local_dates(local["ts"].to_numpy(), tz) if date_only else local["ts"]
    reference = reference.assign(key=reference["ts"])
    fields = [f for f in ("open", "high", "low", "close", "volume", "vwap", "trade_count")
              if f in local.columns and f in reference.columns]  # fmt: skip
    merged = local.merge(reference, on="key", how="outer", suffixes=("_local", "_reference"), indicator=True)
    merged = merged.sort_values("key", kind="stable")
    report: dict[str, Any] = {"missing": [], "extra": [], "differing": []}
    equal = 0
    for _, row in merged.iterrows():
        key = int(row["key"])
        where = {"ts": key, "time": iso_ns(key)[:10] if date_only else iso_ns(key)}
        if row["_merge"] == "right_only":
            report["missing"].append({**where, **_values(row.rename(lambda c: c.removesuffix("_reference")), fields)})
            continue
        if row["_merge"] == "left_only":
            report["extra"].append({**where, **_values(row.rename(lambda c: c.removesuffix("_local")), fields)})
            continue
        differences = {}
        for field in fields:
            a, b = float(row[f"{field}_local"]), float(row[f"{field}_reference"])
            if field == "trade_count":
                ok = a == b or (math.isnan(a) and math.isnan(b))
            else:
                ok = (volume_tolerance if field == "volume" else price_tolerance).allows(a, b)
            if not ok:
                differences[field] = {"local": a, "reference": b, "difference": a - b}
        if differences:
            if date_only:
                where["local_ts"] = int(row["ts_local"])
            report["differing"].append({**where, "fields": differences})
        else:
            equal += 1
    counts = {
        "local": len(local),
        "reference": len(reference),
        "matched": equal + len(report["differing"]),
        "equal": equal,
        "differing": len(report["differing"]),
        "missing": len(report["missing"]),
        "extra": len(report["extra"]),
    }
    return {
        "within_tolerance": not (counts["differing"] or counts["missing"] or counts["extra"]),
        "counts": counts,
        "tolerances": {"price": str(price_tolerance), "volume": str(volume_tolerance)},
        "compared_fields": fields,
        **report,
    }
