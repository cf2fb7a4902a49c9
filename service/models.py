"""Request and response models of the service: the one source of the OpenAPI document.

Every query string, JSON body and JSON response of ``service/routes/`` is one of these
pydantic models; ``service/openapi.py`` builds ``/openapi.json`` from them, so the
document and the validation can never disagree.

Times: ``ts`` fields are int64 ns UTC (exact for Python and Arrow clients; JavaScript
numbers round them to ~256 ns), ``time`` fields the same instant as ISO-8601 text.
Query and body times accept either form: int ns, or ISO-8601 with a UTC offset
(``2012-06-21T13:30:00Z``). Prices are in the instrument's quote currency, sizes in
shares/contracts/coins.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graph.timeframes import TIMEFRAMES

__all__ = [
    "SYMBOL_PATTERN",
    "MAX_SYMBOLS",
    "MAX_BARS",
    "ErrorDetail",
    "ErrorResponse",
    "SeriesPath",
    "RunPath",
    "BarsQuery",
    "Bar",
    "BarsResponse",
    "WsQuery",
    "BarMessage",
    "ReplayRequest",
    "JobRun",
    "JobList",
    "JobsQuery",
    "SignalsQuery",
    "Signal",
    "SignalsResponse",
    "ExportRequestBody",
    "StreamParity",
    "JobParity",
    "Health",
    "SymbolsResponse",
    "parse_time",
    "check_symbols",
]

#: A symbol as the tick schemas store it (``AMZN``, ``BTCUSDT``, ``BRK.B``, ``ES:H25``).
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}$"
#: Most symbols in one replay or export request.
MAX_SYMBOLS = 64
#: Most bars in one REST response.
MAX_BARS = 50_000

Timeframe = Literal["1s", "1m", "5m", "15m", "1h", "1d"]
assert set(Timeframe.__args__) == set(TIMEFRAMES)  # one list of timeframes (graph/timeframes.py)

#: A point in time: int ns UTC, or ISO-8601 text with offset.
TimeValue = int | str


def parse_time(value: int | str) -> int:
    """Query/body time -> int64 ns UTC (see the module docstring for the accepted forms).

    Raises:
        ValueError: not a time, or ISO text without offset (the message says which).
    """
    from actors.replayer import parse_time_ns

    return parse_time_ns(value)


def check_symbols(value: list[str]) -> list[str]:
    """``value`` if every entry is a symbol (:data:`SYMBOL_PATTERN`) and none repeats.

    Raises:
        ValueError: naming the first bad entry (``symbols[2]: 'a b' is not a symbol ...``).
    """
    for i, symbol in enumerate(value):
        if not re.match(SYMBOL_PATTERN, symbol):
            raise ValueError(f"symbols[{i}]: {symbol!r} is not a symbol (letters, digits, . _ : / -; at most 32)")
    if len(set(value)) != len(value):
        raise ValueError("symbols are repeated")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Model):
    """What was wrong: the request field (``symbol``, ``from``, ``body``, ``symbols[2]``) and why."""

    field: str | None = Field(description="the offending request field, or null when no one field is to blame")
    message: str


class ErrorResponse(_Model):
    """Every 4xx/5xx answer of the service: ``{"error": {"field": ..., "message": ...}}``."""

    error: ErrorDetail


class _TimeRange(_Model):
    """``from``/``to`` as int ns UTC after validation; ``to`` must be after ``from``."""

    start: int | None = Field(None, alias="from", description="first bar open time / event time, inclusive")
    end: int | None = Field(None, alias="to", description="end of the range, exclusive")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None or value == "" else parse_time(value)

    @model_validator(mode="after")
    def _ordered(self) -> _TimeRange:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("'to' must be after 'from'")
        return self


class SeriesPath(_Model):
    """Path of the per-series routes: ``{symbol}/{timeframe}``."""

    symbol: str = Field(pattern=SYMBOL_PATTERN)
    timeframe: Timeframe


class RunPath(_Model):
    """Path of the per-job routes: ``{run_id}`` (a ``job_runs`` id, 32 hex digits)."""

    run_id: str = Field(pattern=r"^[0-9a-f]{32}$")


class BarsQuery(_TimeRange):
    """Query of ``GET /api/v1/bars/{symbol}/{timeframe}``."""

    limit: int | None = Field(
        None, ge=1, le=MAX_BARS, description="most bars returned, the latest in the range (json default 1000; csv default all)"
    )
    format: Literal["json", "csv"] = Field("json", description="csv: the canonical bar export (run.py parity bars reads it)")


class Bar(_Model):
    """One stored (confirmed) OHLCV bar; ``ts`` is the bar open time, the bar covers [ts, ts + timeframe)."""

    ts: int
    time: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trade_count: int


class BarsResponse(_Model):
    """Confirmed bars of one symbol and timeframe, oldest first."""

    symbol: str
    timeframe: Timeframe
    count: int
    bars: list[Bar]


class WsQuery(_Model):
    """Query of ``WS /ws/bars/{symbol}/{timeframe}``."""

    backfill: int = Field(0, ge=0, le=10_000, description="first send the last N confirmed bars of the stream")


class BarMessage(_Model):
    """A WebSocket message: a bar update and the stream's parity chain hash at that bar.

    ``type`` is ``BAR_FORMING`` (the open bar's current values), ``BAR_CONFIRMED`` (the
    bar closed), ``BAR_CORRECTED`` (a late tick amended a confirmed bar) or ``BAR_PARTIAL``
    (a bar not seen whole: open when the run stopped, or begun before a live session's
    first tick; never final). ``hash`` is
    the SHA-256 chain (``parity/canonical.py``, stream ``bars``) over this stream's
    confirmed and corrected rows of this ``run`` up to and including this one; a forming
    message carries the chain so far. ``seq`` counts the run's messages on the stream from 1.
    """

    type: Literal["BAR_FORMING", "BAR_CONFIRMED", "BAR_CORRECTED", "BAR_PARTIAL"]
    symbol: str
    timeframe: Timeframe
    run: str = Field(description="the publishing run (a replay job's run_id, or the api node's run)")
    seq: int
    hash: str
    bar: dict[str, Any]


class ReplayRequest(_Model):
    """Body of ``POST /v1/replay/ticks`` (seed 003)."""

    provider: Literal["files", "tick_data"] = Field(
        "files", description="files: the replay graph's tick files; tick_data: the store's tick_data table"
    )
    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS)
    start: TimeValue = Field(description="first event time replayed (inclusive)")
    end: TimeValue = Field(description="end of the replay (exclusive), after start")
    speed: float = Field(0.0, ge=0, le=1_000_000, allow_inf_nan=False, description="0 burst, 1.0 original pace, 10.0 ten times faster")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        return check_symbols(value)

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: Any) -> int:
        return parse_time(value)

    @model_validator(mode="after")
    def _ordered(self) -> ReplayRequest:
        if self.end <= self.start:
            raise ValueError("'end' must be after 'start'")
        return self


class JobRun(_Model):
    """A ``job_runs`` row in the seed-003 shape (times as ISO-8601 UTC; ``*_ns`` as int ns)."""

    run_id: str
    job_name: str
    provider: str | None
    status: Literal["running", "completed", "failed", "cancelled"]
    symbols: list[str]
    rows_written: int | None
    min_ts: str | None
    max_ts: str | None
    min_ts_ns: int | None
    max_ts_ns: int | None
    started_at: str
    completed_at: str | None
    error_message: str | None
    progress: float | None = Field(description="fraction of the requested event-time range replayed, 0..1")
    metadata: dict[str, Any]
    download: str | None = Field(None, description="exports: the file's URL")


class JobList(_Model):
    """Recent jobs, newest first."""

    jobs: list[JobRun]


class JobsQuery(_Model):
    """Query of the job lists."""

    limit: int = Field(20, ge=1, le=500)


class SignalsQuery(_TimeRange):
    """Query of ``GET /v1/signals``."""

    symbol: str = Field(pattern=SYMBOL_PATTERN)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    run_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="only signals of this replay (metadata replay_run_id)")
    limit: int = Field(5000, ge=1, le=MAX_BARS)


class Signal(_Model):
    """One stored signal value (``signals`` table)."""

    provider: str
    symbol: str
    ts: int
    time: str
    name: str
    value: float | None
    score: float | None
    metadata: dict[str, Any] | None


class SignalsResponse(_Model):
    """Signal values, oldest first."""

    count: int
    signals: list[Signal]


class ExportRequestBody(_Model):
    """Body of ``POST /v1/exports`` (the ``run.py export`` job)."""

    dataset: Literal["ticks", "bars", "signals"]
    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS)
    start: TimeValue
    end: TimeValue
    format: Literal["parquet", "csv"] = "csv"
    timeframe: Timeframe | None = Field(None, description="bars only (default 1m)")
    provider: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    names: list[str] | None = Field(None, max_length=64, description="signals only: these signal names")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        return check_symbols(value)

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: Any) -> int:
        return parse_time(value)

    @model_validator(mode="after")
    def _ordered(self) -> ExportRequestBody:
        if self.end <= self.start:
            raise ValueError("'end' must be after 'start'")
        if self.timeframe is not None and self.dataset != "bars":
            raise ValueError("'timeframe' is for dataset 'bars' only")
        if self.names is not None and self.dataset != "signals":
            raise ValueError("'names' is for dataset 'signals' only")
        return self


class StreamParity(_Model):
    """The parity chain of one live WebSocket stream (symbol, timeframe) in this service."""

    symbol: str
    timeframe: Timeframe
    run: str
    messages: int = Field(description="confirmed and corrected rows hashed")
    hash: str


class JobParity(_Model):
    """The parity hashes of a replay job's parity node (run summary), per stream."""

    run_id: str
    status: str
    streams: dict[str, dict[str, Any]]


class SymbolsResponse(_Model):
    """``GET /v1/symbols``: what the service can show."""

    symbols: list[str]
    timeframes: list[Timeframe]
    signals: list[str]


class Health(_Model):
    """``GET /healthz``."""

    status: Literal["ok"]
    streams: int
    clients: int
    ray: bool
