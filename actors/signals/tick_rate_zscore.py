"""``tick_rate_zscore``: ticks per interval against a rolling mean and sd (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from actors import indicators as ind
from actors.signals.base import SignalParams, TickSignal
from graph.operator import Emit, OperatorContext, Params
from graph.params import Timeframe
from graph.timeframes import INTRADAY_NS

__all__ = ["TickRateZScore", "TickRateParams"]


def _count_pairs(kid: np.ndarray, interval: np.ndarray, keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (key, interval) pairs and their row counts, sorted by (key, interval).

    One ``np.bincount`` over ``key * span + interval offset`` when the batch spans few
    intervals (the usual case); a sort otherwise.
    """
    low = int(interval.min())
    span = int(interval.max()) - low + 1
    if span * keys <= 4 * len(kid) + 4096:
        counts = np.bincount(kid.astype(np.int64) * span + (interval - low), minlength=span * keys)
        pairs = np.flatnonzero(counts)
        return (pairs // span).astype(np.int32), pairs % span + low, counts[pairs]
    order = ind.sort_by_key_ts(kid, interval)
    if order is not None:
        kid, interval = kid[order], interval[order]
    starts = np.flatnonzero(np.r_[True, (kid[1:] != kid[:-1]) | (interval[1:] != interval[:-1])])
    return kid[starts], interval[starts], np.diff(np.r_[starts, len(kid)])


class TickRateParams(SignalParams):
    """Params of ``tick_rate_zscore``.

    Attributes:
        interval: counting interval, an intraday timeframe (``1s 1m 5m 15m 1h``),
            epoch-aligned like bars.
        window: number of preceding intervals in the rolling mean and sd, >= 2.
        ticks: which ticks count: ``all``, ``trades`` (price set) or ``quotes`` (price null).
    """

    interval: Timeframe = "1s"
    window: int = Field(default=60, ge=2, le=1_000_000)
    ticks: Literal["all", "trades", "quotes"] = "all"

    @field_validator("interval")
    @classmethod
    def _intraday(cls, value: str) -> str:
        if value not in INTRADAY_NS:
            raise ValueError(f"{value!r} is not an intraday interval ({', '.join(INTRADAY_NS)})")
        return value


class TickRateZScore(TickSignal):
    """``tick_rate_zscore``: ticks per interval against the rolling mean and sd of the intervals before.

    Ticks are counted per key in epoch-aligned intervals ``[i * L, (i + 1) * L)``. An
    interval is final when the watermark reaches its end (or at end-of-stream); then
    ``z = (count - mean) / sd`` with the mean and sample sd (ddof 1) of the counts of
    the ``window`` intervals before it, empty intervals counting 0 (Chandola et al.
    2009; :func:`~actors.indicators.rolling_zscore`). A value is emitted, at ``ts`` =
    the interval's open time, for each interval with at least one tick, once the key
    has ``window`` intervals of history (its first tick opens the history: earlier
    intervals are unknown, not empty); sd == 0 gives no value (``undefined``). A tick
    in an interval already final is late (quarantined).
    """

    Params: ClassVar[type[Params]] = TickRateParams
    _state = (*TickSignal._state, "_open", "_first", "_history")

    def __init__(self, params: TickRateParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._interval_ns = INTRADAY_NS[params.interval]
        empty_i = np.empty(0, dtype=np.int64)
        self._open = (np.empty(0, dtype=np.int32), empty_i, empty_i)  # (key, interval, count) sorted
        self._first = np.empty(0, dtype=np.int64)  # key id -> first interval with a tick
        self._history = (np.empty(0, dtype=np.int32), empty_i, empty_i)  # recent final (key, interval, count)
        self._counts.update(intervals=0, undefined=0, warming_up=0)

    @classmethod
    def default_name(cls, params: TickRateParams) -> str:
        """``tick_rate_zscore_<interval>_<window>`` (``tick_rate_zscore_1s_60``)."""
        suffix = "" if params.ticks == "all" else f"_{params.ticks}"
        return f"tick_rate_zscore_{params.interval}_{params.window}{suffix}"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"interval", "window", "ticks", "ddof": 1}``."""
        p = self.params
        return {"interval": p.interval, "window": p.window, "ticks": p.ticks, "ddof": 1}

    def _on_new_key(self, kid: int, key: tuple[str, str]) -> None:
        self._first = np.append(self._first, np.iinfo(np.int64).max)

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        if self.params.ticks == "all":
            return None, {}
        trade = batch.column("price").is_valid().to_numpy(zero_copy_only=False)
        return (trade if self.params.ticks == "trades" else ~trade), {}

    def _late_mask(self, ts: np.ndarray) -> np.ndarray:
        return ts // self._interval_ns < self._watermark // self._interval_ns  # interval already final

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Count the batch's ticks into the open intervals.

        Returns:
            ``quarantine`` rows for ticks in intervals already final, if any.
        """
        self._check_columns(stream, batch)
        self._counts["rows_in"] += batch.num_rows
        if batch.num_rows == 0:
            return []
        mask, _ = self._select(batch)
        if mask is not None and not mask.any():
            return []
        ts = batch.column("ts").to_numpy()
        mask, late = self._split_late(batch, ts, mask)
        kid = self._codes(batch.column("provider"), batch.column("symbol"))
        interval = ts // self._interval_ns
        if mask is not None:
            rows = np.flatnonzero(mask)
            kid, interval = kid[rows], interval[rows]
        if len(kid):
            new = _count_pairs(kid, interval, len(self._keys))
            np.minimum.at(self._first, new[0], new[1])
            open_kid, open_interval, open_count = self._open
            if len(open_kid):
                kid = np.concatenate([open_kid, new[0]])
                interval = np.concatenate([open_interval, new[1]])
                weight = np.concatenate([open_count, new[2]])
                order = ind.sort_by_key_ts(kid, interval)
                if order is not None:
                    kid, interval, weight = kid[order], interval[order], weight[order]
                starts = np.flatnonzero(np.r_[True, (kid[1:] != kid[:-1]) | (interval[1:] != interval[:-1])])
                new = (kid[starts], interval[starts], np.add.reduceat(weight, starts))
            self._open = new
        return self._quarantine(late)

    def _release(self, watermark: int | None) -> list[Emit]:
        kid, interval, count = self._open
        final = np.ones(len(kid), dtype=bool) if watermark is None else interval < watermark // self._interval_ns
        if not final.any():
            return []
        self._open = (kid[~final], interval[~final], count[~final])
        kid, interval, count = kid[final], interval[final], count[final]
        self._counts["intervals"] += len(kid)
        window = self.params.window
        # history (older final intervals) then the newly final ones, grouped by key
        old_kid, old_interval, old_count = self._history
        all_kid = np.concatenate([old_kid, kid])
        all_interval = np.concatenate([old_interval, interval])
        all_count = np.concatenate([old_count, count])
        target = np.r_[np.zeros(len(old_kid), dtype=bool), np.ones(len(kid), dtype=bool)]
        order = ind.sort_by_key_ts(all_kid, all_interval)
        if order is not None:
            all_kid, all_interval, all_count, target = all_kid[order], all_interval[order], all_count[order], target[order]
        targets = np.flatnonzero(target)
        z = ind.rolling_zscore(all_kid, all_interval, all_count, targets, window)
        scored_kid, scored_interval = all_kid[targets], all_interval[targets]
        warm = scored_interval - window >= self._first[scored_kid]
        keep = warm & np.isfinite(z)
        self._counts["warming_up"] += int((~warm).sum())
        self._counts["undefined"] += int((warm & ~keep).sum())
        # keep what later windows need: per key, the intervals after its newest final one - window
        newest = np.full(len(self._keys), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(newest, kid, interval)
        recent = all_interval > newest[all_kid] - window
        self._history = (all_kid[recent], all_interval[recent], all_count[recent])
        return self._signals(scored_kid[keep], scored_interval[keep] * self._interval_ns, z[keep], None)
