"""Independent reference computations for tests: raw fixture files -> trades -> bars, in pandas.

Nothing here imports tickgraph: these are the expectations the code under test is
checked against. Timestamps come from Python ``decimal`` and pandas, bars from a plain
``groupby`` on floored timestamps.
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from tests.conftest import LOBSTER_MESSAGES, TARDIS_TRADES

TF_FREQ = {"1s": "1s", "1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h"}


def lobster_trades(path=LOBSTER_MESSAGES, date: str = "2012-06-21", tz: str = "America/New_York") -> pd.DataFrame:
    """LOBSTER executions (types 4, 5) as columns ts (int64 ns UTC), price ($), size (shares), in file order."""
    raw = pd.read_csv(path, header=None, names=["time", "type", "order_id", "size", "price", "direction"], dtype={"time": str})
    trades = raw[raw["type"].isin([4, 5])].copy()
    midnight = pd.Timestamp(date, tz=tz).tz_convert("UTC").value
    trades["ts"] = [midnight + int(Decimal(t) * 1_000_000_000) for t in trades["time"]]
    trades["price"] = trades["price"] / 10_000
    trades["size"] = trades["size"].astype("float64")
    return trades[["ts", "price", "size"]].reset_index(drop=True)


def tardis_trades(path=TARDIS_TRADES) -> pd.DataFrame:
    """Tardis trades as columns ts (int64 ns UTC), price (USDT), size (BTC), in file order."""
    raw = pd.read_csv(path)
    return pd.DataFrame({"ts": raw["timestamp"] * 1000, "price": raw["price"].astype(float), "size": raw["amount"].astype(float)})


def reference_bars(trades: pd.DataFrame, timeframe: str, session: tuple[str, str, str] | None = None) -> pd.DataFrame:
    """OHLCV + vwap + trade_count per bar, indexed by bar open time ts (int64 ns UTC).

    Args:
        trades: columns ts, price, size in event order.
        timeframe: ``1s 1m 5m 15m 1h`` (epoch-aligned) or ``1d``.
        session: for ``1d``: (tz, "HH:MM" open, "HH:MM" close); the bar of a local
            date opens at that date's session open; trades outside it are excluded.
    """
    t = trades.copy()
    when = pd.to_datetime(t["ts"], utc=True)
    if timeframe == "1d":
        tz, open_, close = session or ("UTC", "00:00", "24:00")
        local = when.dt.tz_convert(tz)
        # wall-clock session times on each local date, localized (DST-correct)
        dates = local.dt.strftime("%Y-%m-%d")
        start = pd.to_datetime(dates + " " + open_).dt.tz_localize(tz)
        if close == "24:00":
            end = (pd.to_datetime(dates) + pd.Timedelta(days=1)).dt.tz_localize(tz)
        else:
            end = pd.to_datetime(dates + " " + close).dt.tz_localize(tz)
        inside = (local >= start) & (local < end)
        t = t[inside.to_numpy()]
        t["bar"] = start[inside].dt.tz_convert("UTC").to_numpy()
    else:
        t["bar"] = when.dt.floor(TF_FREQ[timeframe]).to_numpy()
    t["pv"] = t["price"] * t["size"]
    g = t.groupby("bar", sort=True)
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "volume": g["size"].sum(),
            "vwap": g["pv"].sum() / g["size"].sum(),
            "trade_count": g["price"].size(),
        }
    )
    out.index = pd.DatetimeIndex(out.index).as_unit("ns").asi8
    out.index.name = "ts"
    return out


def assert_bars_match(stored: pd.DataFrame, expected: pd.DataFrame, label: str) -> None:
    """OHLC and trade_count exact; volume and vwap to 1e-9 relative; same bar open times."""
    import numpy as np

    stored = stored.set_index("ts").sort_index()
    assert list(stored.index) == list(expected.index), f"{label}: bar open times differ"
    for column in ("open", "high", "low", "close", "trade_count"):
        np.testing.assert_array_equal(stored[column].to_numpy(), expected[column].to_numpy(), err_msg=f"{label}: {column}")
    for column in ("volume", "vwap"):
        np.testing.assert_allclose(stored[column].to_numpy(), expected[column].to_numpy(), rtol=1e-9, atol=0, err_msg=f"{label}: {column}")


def lobster_bar_rows(timeframes: tuple[str, ...] = ("1m", "5m")) -> pd.DataFrame:
    """Confirmed AMZN bars from the LOBSTER executions as BAR-shaped rows (pandas only).

    Columns: symbol, timeframe, ts (bar open, int64 ns UTC), open, high, low, close,
    volume, vwap, trade_count (int64), status ``confirmed``; ordered by timeframe, ts.
    """
    trades = lobster_trades()
    frames = []
    for timeframe in timeframes:
        bars = reference_bars(trades, timeframe).reset_index()
        bars.insert(0, "timeframe", timeframe)
        bars.insert(0, "symbol", "AMZN")
        bars["trade_count"] = bars["trade_count"].astype("int64")
        bars["status"] = "confirmed"
        frames.append(bars)
    return pd.concat(frames, ignore_index=True)[
        ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap", "trade_count", "status"]
    ]
