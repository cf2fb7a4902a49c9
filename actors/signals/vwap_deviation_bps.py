"""``vwap_deviation_bps``: trade price against the session VWAP in bps (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from actors import indicators as ind
from actors.sessions import DEFAULT_SESSION, Session, SessionCalendar
from actors.signals.base import NO_WATERMARK, ConflatedParams, TickSignal, floats
from graph.operator import OperatorContext, Params

__all__ = ["VwapDeviationBps", "VwapDeviationParams"]


class VwapDeviationParams(ConflatedParams):
    """Params of ``vwap_deviation_bps``.

    Attributes:
        conflate_ms: see :class:`ConflatedParams` (the VWAP still takes every trade).
        sessions: symbol -> :class:`~actors.sessions.Session` over which the VWAP
            accumulates (reset at each session open, local exchange time); the key
            ``"default"`` applies to unlisted symbols, else UTC 00:00-24:00 (crypto).
            Use the same sessions as the bar engine's ``1d`` bars.
    """

    sessions: dict[str, Session] = Field(default_factory=dict)

    def session_for(self, symbol: str) -> Session:
        """The session of ``symbol``: its own, else ``"default"``, else UTC 00:00-24:00."""
        return self.sessions.get(symbol) or self.sessions.get("default") or DEFAULT_SESSION


class VwapDeviationBps(TickSignal):
    """``vwap_deviation_bps``: ``(price - VWAP) / VWAP * 10,000`` on every trade.

    VWAP = sum(price * size) / sum(size) over the trades of the current trading session
    so far, this trade included (Berkowitz, Logue & Noser 1988). The session is the
    symbol's :class:`~actors.sessions.Session` in its exchange time zone (DST-aware);
    the sums restart at each session open. Trades outside the session (pre/post market)
    get no value and do not enter the VWAP (counted ``outside_session``), as for ``1d``
    bars. Trades are rows with a price; non-finite or <= 0 prices and non-finite or
    negative sizes are skipped (``invalid``; the normalizer quarantines those before).
    Until the session has volume (only zero-size trades) the VWAP is undefined and no
    value is emitted (``undefined``).

    Sums run sequentially in (ts, arrival) order from the session open, carried across
    batches, so the value is independent of batching and equals a running
    ``Series.cumsum`` over the session's trades.
    """

    Params: ClassVar[type[Params]] = VwapDeviationParams
    _state = (*TickSignal._state, "_session", "_cum_pv", "_cum_volume", "_key_calendar")

    def __init__(self, params: VwapDeviationParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._calendars: dict[Session, SessionCalendar] = {}
        self._calendar_list: list[SessionCalendar] = []
        self._key_calendar = np.empty(0, dtype=np.int32)  # key id -> index in _calendar_list
        self._session = np.empty(0, dtype=np.int64)  # key id -> open of the session summed (ns UTC)
        self._cum_pv = np.empty(0, dtype=np.float64)
        self._cum_volume = np.empty(0, dtype=np.float64)
        self._counts.update(trades=0, outside_session=0, invalid=0, undefined=0)

    @classmethod
    def default_name(cls, params: VwapDeviationParams) -> str:
        """``vwap_deviation_bps``."""
        return "vwap_deviation_bps"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"unit": "bps", "session": {"tz", "open", "close"}}`` (+ ``"conflate_ms"`` when conflated)."""
        return {"unit": "bps", "session": self.params.session_for(symbol).model_dump(), **self._conflation()}

    def _on_new_key(self, kid: int, key: tuple[str, str]) -> None:
        self._session = np.append(self._session, NO_WATERMARK)
        self._cum_pv = np.append(self._cum_pv, 0.0)
        self._cum_volume = np.append(self._cum_volume, 0.0)
        session = self.params.session_for(key[1])
        if session not in self._calendars:
            self._calendars[session] = SessionCalendar(session)
            self._calendar_list.append(self._calendars[session])
        self._key_calendar = np.append(self._key_calendar, list(self._calendars).index(session)).astype(np.int32)

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot`; session calendars are rebuilt from the params."""
        super().restore(state)
        self._calendars = {}
        for _, symbol in self._keys:
            session = self.params.session_for(symbol)
            self._calendars.setdefault(session, SessionCalendar(session))
        self._calendar_list = list(self._calendars.values())
        sessions = list(self._calendars)
        self._key_calendar = np.array(
            [sessions.index(self.params.session_for(symbol)) for _, symbol in self._keys], dtype=np.int32
        )

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        price_column = batch.column("price") if "price" in batch.schema.names else None
        if price_column is None or price_column.null_count == batch.num_rows:
            return np.zeros(batch.num_rows, dtype=bool), {}
        price, size = floats(price_column), floats(batch.column("size"))
        trades = batch.num_rows - price_column.null_count
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(price) & (price > 0) & np.isfinite(size) & (size >= 0)
        used = int(valid.sum())
        self._counts["trades"] += trades
        self._counts["invalid"] += trades - used  # a trade row (price set) that fails the checks
        return (None if used == batch.num_rows else valid), {"price": price, "size": size}

    def _compute(self, kid: np.ndarray, ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
        price, size = cols["price"], cols["size"]
        opens = np.empty(len(ts), dtype=np.int64)
        in_session = np.empty(len(ts), dtype=bool)
        which = self._key_calendar[kid]
        for index, calendar in enumerate(self._calendar_list):  # per distinct session (usually 1 or 2)
            rows = which == index
            if rows.all():
                opens, _, in_session = calendar.locate(ts)
            elif rows.any():
                opens[rows], _, in_session[rows] = calendar.locate(ts[rows])
        value = np.full(len(ts), np.nan)
        self._counts["outside_session"] += int((~in_session).sum())
        rows = np.flatnonzero(in_session)
        if len(rows) == 0:
            return value
        k, o, p, s = kid[rows], opens[rows], price[rows], size[rows]
        starts = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (o[1:] != o[:-1])])
        group_key, group_open = k[starts], o[starts]
        continuing = self._session[group_key] == group_open  # same session as the carried sums
        cum_pv = ind.session_cumsum(p * s, starts, np.where(continuing, self._cum_pv[group_key], 0.0))
        cum_volume = ind.session_cumsum(s, starts, np.where(continuing, self._cum_volume[group_key], 0.0))
        deviation = ind.vwap_deviation_bps(p, cum_pv, cum_volume)
        self._counts["undefined"] += int(np.count_nonzero(cum_volume == 0))
        value[rows] = deviation
        ends = np.r_[starts[1:], len(k)] - 1  # last row of each group; a key's last group is its newest session
        self._session[group_key] = group_open
        self._cum_pv[group_key] = cum_pv[ends]
        self._cum_volume[group_key] = cum_volume[ends]
        return value
