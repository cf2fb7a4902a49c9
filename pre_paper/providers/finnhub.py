"""REST backfill from Finnhub candles (key as for the ``finnhub`` live feed: ``FINNHUB_API_KEY``).

``GET {url}/stock/candle?symbol=AAPL&resolution=1&from=<unix s>&to=<unix s>`` (``market:
crypto``: ``/crypto/candle?symbol=BINANCE:BTCUSDT``), the key in the ``X-Finnhub-Token``
header (never in a URL). The answer is ``{"s": "ok", "t": [...unix s...], "o": [...],
"h": [...], "l": [...], "c": [...], "v": [...]}`` or ``{"s": "no_data"}``
(https://finnhub.io/docs/api/stock-candles). ``from``/``to`` are inclusive seconds, so
the rows are filtered to ``[start, end)`` here. Resolutions: ``1m 5m 15m 1h 1d`` -> ``1 5
15 60 D`` (no 1s candles). Candles carry no VWAP (cached as NULL).
"""

from __future__ import annotations

from typing import Literal

import aiohttp
import numpy as np
import pandas as pd

from actors.live.finnhub import KEY_VARIABLE
from actors.live.keys import Secret, require_key
from pre_paper.providers.base import OHLCV, ProviderError, bars_frame
from pre_paper.providers.rest import RestSpec, get_json, run_sync

__all__ = ["FinnhubCandlesSpec", "FinnhubCandles", "FINNHUB_RESOLUTIONS"]

#: tickgraph timeframe -> Finnhub ``resolution``.
FINNHUB_RESOLUTIONS = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "1d": "D"}
_NS = 1_000_000_000


class FinnhubCandlesSpec(RestSpec):
    """A ``finnhub`` provider entry (see :class:`~pre_paper.providers.rest.RestSpec` for the rest).

    Attributes:
        kind: ``finnhub``.
        url: default ``https://finnhub.io/api/v1``.
        market: ``stock`` (``/stock/candle``) or ``crypto`` (``/crypto/candle``).
    """

    kind: Literal["finnhub"]
    url: str = "https://finnhub.io/api/v1"
    market: Literal["stock", "crypto"] = "stock"


class FinnhubCandles:
    """Finnhub candles (see the module docstring).

    Raises:
        actors.live.keys.MissingKeyError: ``FINNHUB_API_KEY`` is set nowhere.
    """

    source = "backfill"
    name = "finnhub"

    def __init__(self, spec: FinnhubCandlesSpec, keys_file=None) -> None:
        self.spec = spec
        self._key: Secret = require_key(KEY_VARIABLE, "finnhub", keys_file)
        self.requests = 0

    def fetch_bars(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> pd.DataFrame:
        """Candles opening in ``[start_ts, end_ts)``.

        Raises:
            ProviderError: unsupported timeframe, HTTP error, malformed answer.
        """
        resolution = FINNHUB_RESOLUTIONS.get(tf)
        if resolution is None:
            raise ProviderError(f"finnhub: no {tf} candles (Finnhub offers {', '.join(FINNHUB_RESOLUTIONS)})")
        return run_sync(self._fetch(self.spec.symbols.get(symbol, symbol), resolution, int(start_ts.value), int(end_ts.value)))

    async def _fetch(self, symbol: str, resolution: str, start: int, end: int) -> pd.DataFrame:
        url = f"{self.spec.url.rstrip('/')}/{self.spec.market}/candle"
        params = {"symbol": symbol, "resolution": resolution, "from": start // _NS, "to": (end - 1) // _NS}
        headers = {"X-Finnhub-Token": self._key.reveal(), "Accept": "application/json"}
        self.requests += 1
        async with aiohttp.ClientSession() as session:
            body = await get_json(session, "finnhub", url, params, headers, secrets=[self._key],
                                  timeout_s=self.spec.timeout_s, retries=self.spec.retries, max_wait_s=self.spec.max_wait_s)  # fmt: skip
        if not isinstance(body, dict) or body.get("s") not in ("ok", "no_data"):
            raise ProviderError(f"finnhub: {url} answered without status 'ok' or 'no_data' (s={body.get('s') if isinstance(body, dict) else body!r})")
        if body["s"] == "no_data":
            return bars_frame(np.empty(0, np.int64), {c: np.empty(0) for c in OHLCV})
        try:
            ts = np.asarray(body["t"], dtype=np.int64) * _NS
            arrays = {name: np.asarray(body[key], dtype=np.float64) for name, key in zip(OHLCV, ("o", "h", "l", "c", "v"))}
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"finnhub: {url} answered malformed candles: {type(exc).__name__}: {exc}") from None
        if any(len(a) != len(ts) for a in arrays.values()):
            raise ProviderError(f"finnhub: {url} answered arrays of different lengths")
        keep = (ts >= start) & (ts < end)
        return bars_frame(ts[keep], {name: values[keep] for name, values in arrays.items()})
