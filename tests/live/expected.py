"""Independent expectations: recorded websocket frames -> the canonical ticks they must become.

Nothing here imports tickgraph's live code: frames are read with the standard ``json``
module, ms times multiplied by 10**6, RFC-3339 times converted by pandas
(``pd.Timestamp(text).value``, exact to the ns), sides mapped from each provider's
documented convention (``/work/shared/data/ws_frames/README.md``).
"""

from __future__ import annotations

import json

import pandas as pd

from tests.reference import reference_bars

__all__ = ["binance_ticks", "coinbase_ticks", "finnhub_ticks", "alpaca_ticks", "trades_frame", "expected_bars"]


def _ns(text: str) -> int:
    return pd.Timestamp(text).value


def binance_ticks(lines: list[str]) -> tuple[list[dict], list[dict]]:
    """(trades, quotes) of Binance frames, raw or combined, in frame order.

    Trades: ``trade`` and ``aggTrade`` payloads: ts = T ms * 10**6, seq = ``t`` / ``a``,
    side = ``sell`` when ``m`` (buyer is maker) else ``buy``. Quotes: ``bookTicker``
    payloads, seq = ``u``, ts = ``T`` * 10**6 if present else None (a receive time).
    """
    trades, quotes = [], []
    for line in lines:
        message = json.loads(line)
        payload = message["data"] if "stream" in message else message
        event = payload.get("e")
        if event in ("trade", "aggTrade"):
            trades.append(
                {
                    "symbol": payload["s"],
                    "ts": payload["T"] * 1_000_000,
                    "price": float(payload["p"]),
                    "size": float(payload["q"]),
                    "side": "sell" if payload["m"] else "buy",
                    "seq": payload["t"] if event == "trade" else payload["a"],
                }
            )
        elif event is None and "u" in payload and "b" in payload:
            quotes.append(
                {
                    "symbol": payload["s"],
                    "ts": payload["T"] * 1_000_000 if "T" in payload else None,
                    "bid": float(payload["b"]),
                    "bid_size": float(payload["B"]),
                    "ask": float(payload["a"]),
                    "ask_size": float(payload["A"]),
                    "seq": payload["u"],
                }
            )
    return trades, quotes


def coinbase_ticks(lines: list[str]) -> tuple[list[dict], list[dict]]:
    """(trades, quotes) of Coinbase frames: trades from match/last_match (aggressor = opposite
    of the maker ``side``), quotes from ticker (seq = sequence)."""
    opposite = {"buy": "sell", "sell": "buy"}
    trades, quotes = [], []
    for line in lines:
        message = json.loads(line)
        if message["type"] in ("match", "last_match"):
            trades.append(
                {
                    "symbol": message["product_id"],
                    "ts": _ns(message["time"]),
                    "price": float(message["price"]),
                    "size": float(message["size"]),
                    "side": opposite[message["side"]],
                    "seq": message["trade_id"],
                }
            )
        elif message["type"] == "ticker":
            quotes.append(
                {
                    "symbol": message["product_id"],
                    "ts": _ns(message["time"]),
                    "bid": float(message["best_bid"]),
                    "ask": float(message["best_ask"]),
                    "bid_size": float(message["best_bid_size"]) if "best_bid_size" in message else None,
                    "ask_size": float(message["best_ask_size"]) if "best_ask_size" in message else None,
                    "seq": message["sequence"],
                }
            )
    return trades, quotes


def finnhub_ticks(lines: list[str]) -> list[dict]:
    """Trades of Finnhub ``trade`` frames (every item), in order; side null."""
    trades = []
    for line in lines:
        message = json.loads(line)
        if message.get("type") == "trade":
            for item in message["data"]:
                trades.append({"symbol": item["s"], "ts": item["t"] * 1_000_000, "price": float(item["p"]), "size": float(item["v"]), "side": None})
    return trades


def alpaca_ticks(lines: list[str]) -> tuple[list[dict], list[dict]]:
    """(trades, quotes) of Alpaca frames (arrays of ``T`` = t / q messages), in order."""
    trades, quotes = [], []
    for line in lines:
        for message in json.loads(line):
            if message["T"] == "t":
                trades.append({"symbol": message["S"], "ts": _ns(message["t"]), "price": float(message["p"]), "size": float(message["s"]), "side": None})
            elif message["T"] == "q":
                quotes.append(
                    {
                        "symbol": message["S"],
                        "ts": _ns(message["t"]),
                        "bid": float(message["bp"]),
                        "bid_size": float(message["bs"]),
                        "ask": float(message["ap"]),
                        "ask_size": float(message["as"]),
                    }
                )
    return trades, quotes


def trades_frame(trades: list[dict]) -> pd.DataFrame:
    """Trades as the ts/price/size frame :func:`tests.reference.reference_bars` takes."""
    return pd.DataFrame({"ts": [t["ts"] for t in trades], "price": [t["price"] for t in trades], "size": [t["size"] for t in trades]})


def expected_bars(trades: list[dict], symbol: str, timeframe: str) -> pd.DataFrame:
    """Reference bars of one symbol (``1d`` = the UTC day, as in live.yaml's default session)."""
    mine = trades_frame([t for t in trades if t["symbol"] == symbol])
    return reference_bars(mine, timeframe, ("UTC", "00:00", "24:00") if timeframe == "1d" else None)
