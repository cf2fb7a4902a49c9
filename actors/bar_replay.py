"""The ``bar_replay`` source: stored bars (and signals) replayed in event time.

Reads ``bars_ohlcv`` (and, with ``signals``, the ``signals`` rows of those names) of
``symbols`` / ``timeframe`` with bar open time in ``[start, end)`` from a store
(``db/read.py``) and emits them as a stream: BAR batches with status ``confirmed``
on ``bars`` and SIGNAL batches on ``signals``, in bar-time order, each group of bar
times followed by the watermark of their end. Every signal row with event time before
that end is emitted before that watermark, as a live graph would have delivered it,
so a backtest on stored bars aligns bars and signals exactly as one on replayed ticks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field, field_validator, model_validator

from actors.replayer import parse_time_ns
from actors.strategy import bar_end
from db.engine import absolute_sqlite_url
from graph.operator import Emit, OperatorContext, Params, Source, Watermark
from graph.params import Timeframe
from graph.schemas import BAR, BAR_CONFIRMED, SIGNAL

__all__ = ["BarReplay", "BarReplayParams", "read_stored_bars"]


class BarReplayParams(Params):
    """Params of a ``bar_replay`` source.

    Attributes:
        url: the store (SQLAlchemy URL); never echoed in errors.
        symbols: the symbols to replay (at least one).
        timeframe: bar timeframe (default ``1m``).
        start, end: bar open time range ``[start, end)``: int ns UTC or ISO-8601 with offset.
        signals: ``signals.name`` values to replay alongside (e.g. ``vwap_deviation_bps``).
        batch_bars: distinct bar times per emitted group (default 1,000).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str
    symbols: list[str] = Field(min_length=1)
    timeframe: Timeframe = "1m"
    start: int | None = None
    end: int | None = None
    signals: list[str] = Field(default_factory=list)
    batch_bars: int = Field(default=1_000, ge=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> int | None:
        return None if value is None else parse_time_ns(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return absolute_sqlite_url(value)

    @model_validator(mode="after")
    def _check(self) -> BarReplayParams:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end} ns) must be after start ({self.start} ns)")
        return self


async def _read(params: BarReplayParams) -> tuple[pa.Table, pa.Table]:
    from db.read import read_range_async

    bars = await read_range_async(
        params.url, "bars_ohlcv", symbols=params.symbols, start_ns=params.start, end_ns=params.end,
        where={"timeframe": params.timeframe},
    )  # fmt: skip
    signals = pa.table({f.name: pa.array([], f.type) for f in SIGNAL})
    if params.signals:
        last = None if params.end is None else int(bar_end(params.end, params.timeframe))
        parts = [
            await read_range_async(params.url, "signals", symbols=params.symbols, start_ns=params.start, end_ns=last, where={"name": name})
            for name in params.signals
        ]
        signals = pa.concat_tables([p.select(SIGNAL.names).cast(SIGNAL) for p in parts])
    return bars, signals


def read_stored_bars(params: BarReplayParams) -> tuple[pa.Table, pa.Table]:
    """The stored bars (BAR, status confirmed, sorted by (ts, symbol)) and signals (sorted by ts).

    Raises:
        db.engine.StoreError / sqlalchemy errors: the store cannot be read.
    """
    bars, signals = asyncio.run(_read(params))
    bars = bars.append_column("status", pa.array([BAR_CONFIRMED] * bars.num_rows, pa.string())).select(BAR.names).cast(BAR)
    bars = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    signals = signals.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    return bars, signals


class BarReplay(Source):
    """Replays stored bars and signals; see the module docstring."""

    Params: ClassVar[type[Params]] = BarReplayParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"bars": BAR, "signals": SIGNAL}

    def __init__(self, params: BarReplayParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._rows = {"bars": 0, "signals": 0}

    def events(self) -> Iterator[Emit | Watermark]:
        """BAR and SIGNAL batches per group of ``batch_bars`` bar times, each followed by its watermark."""
        bars, signals = read_stored_bars(self.params)
        times = np.unique(bars.column("ts").to_numpy())
        bar_ts = bars.column("ts").to_numpy()
        signal_ts = signals.column("ts").to_numpy()
        bar_lo = signal_lo = 0
        for g in range(0, len(times), self.params.batch_bars):
            last = times[min(g + self.params.batch_bars, len(times)) - 1]
            end = int(bar_end(last, self.params.timeframe))
            bar_hi = int(np.searchsorted(bar_ts, last, side="right"))
            signal_hi = int(np.searchsorted(signal_ts, end, side="left"))
            if signal_hi > signal_lo:
                yield ("signals", signals.slice(signal_lo, signal_hi - signal_lo).combine_chunks().to_batches()[0])
                self._rows["signals"] += signal_hi - signal_lo
            yield ("bars", bars.slice(bar_lo, bar_hi - bar_lo).combine_chunks().to_batches()[0])
            self._rows["bars"] += bar_hi - bar_lo
            yield Watermark(end)
            bar_lo, signal_lo = bar_hi, signal_hi

    def metrics(self) -> dict[str, Any]:
        """Rows emitted: ``bars``, ``signals``."""
        return dict(self._rows)
