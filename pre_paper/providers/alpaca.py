"""REST backfill from Alpaca's market data v2 stock bars (keys as for the ``alpaca`` live feed).

``GET {url}/v2/stocks/{symbol}/bars?timeframe=1Min&start=...&end=...&limit=10000&feed=iex
&adjustment=raw[&page_token=...]`` with the headers ``APCA-API-KEY-ID`` and
``APCA-API-SECRET-KEY`` (https://docs.alpaca.markets/reference/stockbars). The answer is
``{"bars": [{"t", "o", "h", "l", "c", "v", "n", "vw"}, ...], "symbol", "next_page_token"}``;
pages are followed until ``next_page_token`` is null. ``t`` is the bar's start (RFC-3339);
``start``/``end`` are inclusive on Alpaca's side, so the request asks ``[start, end - 1 ns]``
and the rows are filtered to ``[start, end)`` here.

Timeframes: ``1m 5m 15m 1h 1d`` -> ``1Min 5Min 15Min 1Hour 1Day`` (Alpaca has no 1s
bars: a 1s request fails with a clear error). Alpaca's ``1Day`` bar is stamped at
midnight New York time; the loader moves it to its session's open, and drops intraday
bars outside the calendar's sessions (Alpaca's IEX bars include extended hours).
"""

from __future__ import annotations

from typing import Literal

import aiohttp
import numpy as np
import pandas as pd
from pydantic import Field

from actors.live.alpaca import KEY_ID_VARIABLE, SECRET_VARIABLE
from actors.live.keys import Secret, require_key
from actors.live.parsing import FrameError, rfc3339_ns
from pre_paper.providers.base import OHLCV, ProviderError, bars_frame
from pre_paper.providers.rest import RestSpec, get_json, run_sync

__all__ = ["AlpacaBarsSpec", "AlpacaBars", "ALPACA_TIMEFRAMES"]

#: tickgraph timeframe -> Alpaca ``timeframe`` parameter.
ALPACA_TIMEFRAMES = {"1m": "1Min", "5m": "5Min", "15m": "15Min", "1h": "1Hour", "1d": "1Day"}


class AlpacaBarsSpec(RestSpec):
    """An ``alpaca`` provider entry (see :class:`~pre_paper.providers.rest.RestSpec` for the rest).

    Attributes:
        kind: ``alpaca``.
        url: default ``https://data.alpaca.markets``.
        feed: ``iex`` (free) or ``sip``.
        adjustment: ``raw`` (as traded; what the live feed's bars are), ``split``, ``dividend``, ``all``.
        page_limit: bars per page (Alpaca allows up to 10,000).
    """

    kind: Literal["alpaca"]
    url: str = "https://data.alpaca.markets"
    feed: Literal["iex", "sip"] = "iex"
    adjustment: Literal["raw", "split", "dividend", "all"] = "raw"
    page_limit: int = Field(10_000, ge=1, le=10_000)


def _rfc3339(ns: int) -> str:
    stamp = pd.Timestamp(int(ns), tz="UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{stamp.value % 1_000_000_000:09d}Z"


class AlpacaBars:
    """Alpaca v2 stock bars (see the module docstring).

    Args:
        spec: the provider entry.
        keys_file: ``spec.keys_file`` resolved against the graph file.

    Raises:
        actors.live.keys.MissingKeyError: a key variable is set nowhere (names it, never a value).
    """

    source = "backfill"
    name = "alpaca"

    def __init__(self, spec: AlpacaBarsSpec, keys_file=None) -> None:
        self.spec = spec
        self._key_id: Secret = require_key(KEY_ID_VARIABLE, "alpaca", keys_file)
        self._secret: Secret = require_key(SECRET_VARIABLE, "alpaca", keys_file)
        self.requests = 0

    def fetch_bars(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> pd.DataFrame:
        """Bars opening in ``[start_ts, end_ts)`` (every page).

        Raises:
            ProviderError: unsupported timeframe, HTTP error, malformed answer.
        """
        frame = ALPACA_TIMEFRAMES.get(tf)
        if frame is None:
            raise ProviderError(f"alpaca: no {tf} bars (Alpaca offers {', '.join(ALPACA_TIMEFRAMES)})")
        return run_sync(self._fetch(self.spec.symbols.get(symbol, symbol), frame, int(start_ts.value), int(end_ts.value)))

    async def _fetch(self, symbol: str, frame: str, start: int, end: int) -> pd.DataFrame:
        url = f"{self.spec.url.rstrip('/')}/v2/stocks/{symbol}/bars"
        headers = {"APCA-API-KEY-ID": self._key_id.reveal(), "APCA-API-SECRET-KEY": self._secret.reveal(), "Accept": "application/json"}
        params = {"timeframe": frame, "start": _rfc3339(start), "end": _rfc3339(end - 1), "limit": self.spec.page_limit,
                  "feed": self.spec.feed, "adjustment": self.spec.adjustment}  # fmt: skip
        rows: list[dict] = []
        async with aiohttp.ClientSession() as session:
            while True:
                self.requests += 1
                body = await get_json(session, "alpaca", url, params, headers, secrets=[self._key_id, self._secret],
                                      timeout_s=self.spec.timeout_s, retries=self.spec.retries, max_wait_s=self.spec.max_wait_s)  # fmt: skip
                if not isinstance(body, dict) or not isinstance(body.get("bars") or [], list):
                    raise ProviderError(f"alpaca: {url} answered without a 'bars' list")
                rows += body.get("bars") or []
                token = body.get("next_page_token")
                if not token:
                    break
                params = {**params, "page_token": token}
        return _frame(rows, start, end, url)


def _frame(rows: list[dict], start: int, end: int, url: str) -> pd.DataFrame:
    names = {"t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap"}
    ts, values = [], {name: [] for name in (*OHLCV, "vwap")}
    for i, row in enumerate(rows):
        try:
            stamp = rfc3339_ns(row["t"], "t")
            numbers = {names[k]: float(row[k]) for k in ("o", "h", "l", "c", "v")}
        except (KeyError, TypeError, ValueError, FrameError) as exc:
            raise ProviderError(f"alpaca: {url} bar {i} is malformed: {exc}") from None
        if not start <= stamp < end:
            continue
        ts.append(stamp)
        for name, value in numbers.items():
            values[name].append(value)
        values["vwap"].append(float(row["vw"]) if isinstance(row.get("vw"), (int, float)) else np.nan)
    return bars_frame(np.asarray(ts, dtype=np.int64), {k: np.asarray(v, dtype=np.float64) for k, v in values.items()})
