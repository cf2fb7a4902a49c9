"""Helpers of the service tests: recording WebSocket streams, hashing recorded bars, polling jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import orjson
import pyarrow as pa

from graph.schemas import BAR
from graph.timeframes import TIMEFRAMES
from parity.canonical import StreamHasher, canonical_fields, encode_rows
from parity.ordering import OrderedStream

SEED_003_FIELDS = {"run_id", "job_name", "provider", "status", "symbols", "rows_written", "min_ts", "max_ts",
                   "started_at", "completed_at", "error_message", "metadata"}  # fmt: skip


def confirmed_bars(texts: Iterable[str]) -> pa.RecordBatch:
    """The BAR rows of recorded BAR_CONFIRMED / BAR_CORRECTED message texts (exact ints from the text)."""
    rows = []
    for text in texts:
        message = orjson.loads(text)
        if message["type"] != "BAR_FORMING":
            bar = message["bar"]
            rows.append({"symbol": message["symbol"], "timeframe": message["timeframe"],
                         **{name: bar[name] for name in BAR.names if name not in ("symbol", "timeframe")}})  # fmt: skip
    for row in rows:
        if row["vwap"] is None:
            row["vwap"] = float("nan")
    return pa.RecordBatch.from_pylist(rows, schema=BAR)


def parity_bars_hash(texts: Iterable[str]) -> tuple[int, str]:
    """(rows, hash) of recorded messages' confirmed bars, ordered and hashed as the parity node does."""
    bars = confirmed_bars(texts)
    stream = OrderedStream("bars", BAR)
    stream.add(bars)
    stream.finish()
    return stream.hasher.messages, stream.hasher.hexdigest


def stream_chain(texts: list[str]) -> str:
    """The chain of one stream's recorded confirmed/corrected rows in arrival order (parity/canonical.py)."""
    fields = canonical_fields(BAR)
    hasher = StreamHasher("bars", fields, checkpoint_every=1 << 40)
    hasher.update(encode_rows(confirmed_bars(texts), fields))
    return hasher.hexdigest


async def record_streams(base_ws_url: str, symbols: list[str], session, stop: asyncio.Event,
                         timeframes: Iterable[str] = TIMEFRAMES) -> dict[str, list[str]]:  # fmt: skip
    """Subscribe to every (symbol, timeframe) and collect message texts until ``stop`` is set."""
    recorded: dict[str, list[str]] = {}
    sockets = []
    for symbol in symbols:
        for timeframe in timeframes:
            ws = await session.ws_connect(f"{base_ws_url}/ws/bars/{symbol}/{timeframe}")
            sockets.append((f"{symbol}/{timeframe}", ws))
            recorded[f"{symbol}/{timeframe}"] = []

    async def read(key: str, ws) -> None:
        async for message in ws:
            recorded[key].append(message.data)

    readers = [asyncio.create_task(read(key, ws)) for key, ws in sockets]
    await stop.wait()
    count = -1
    while count != sum(map(len, recorded.values())):  # until nothing arrived for a second
        count = sum(map(len, recorded.values()))
        await asyncio.sleep(1.0)
    for (_, ws), reader in zip(sockets, readers):
        await ws.close()
        reader.cancel()
    return recorded


async def wait_job(session, base_url: str, run_id: str, done: set[str], timeout_s: float = 180.0) -> dict:
    """Poll ``GET /v1/replay/ticks/{run_id}`` until its status is in ``done``; returns the row."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with session.get(f"{base_url}/v1/replay/ticks/{run_id}") as response:
            row = await response.json()
        if row["status"] in done:
            return row
        assert time.monotonic() < deadline, f"job {run_id} still {row['status']} after {timeout_s} s: {row}"
        await asyncio.sleep(0.25)
