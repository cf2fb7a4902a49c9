"""The WebSocket bar stream: messages in the engine's order with the stream's parity chain,
backfill, a client that never reads closed with 1008 and counted while a reading client
gets everything, and the ``api`` sink serving a real in-process graph's stream.

References: the stored bars (``bars_ohlcv``), the chain recomputed from the received texts
with ``parity/canonical.py``, and the replay's own parity node (its run summary).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
import time

import aiohttp
import orjson
import pyarrow as pa
import pytest
from aiohttp.test_utils import TestClient, TestServer

from db.read import read_table
from graph.schemas import BAR
from service.app import STATE, create_app
from tests.service.conftest import service_config
from tests.service.helpers import parity_bars_hash, stream_chain


def stored_bars(url: str, symbol: str, timeframe: str) -> pa.RecordBatch:
    """Stored bars of one series as BAR rows with status confirmed."""
    frame = read_table(url, "bars_ohlcv").to_pandas()
    frame = frame[(frame.symbol == symbol) & (frame.timeframe == timeframe)].assign(status="confirmed")
    return pa.RecordBatch.from_pandas(frame[BAR.names], schema=BAR, preserve_index=False)


@pytest.fixture(scope="module")
def amzn(main_store) -> dict[str, pa.RecordBatch]:
    url, _, _ = main_store
    return {tf: stored_bars(url, "AMZN", tf) for tf in ("1s", "1m")}


async def receive(ws, count: int, timeout: float = 10.0) -> list[str]:
    texts = []
    while len(texts) < count:
        message = await asyncio.wait_for(ws.receive(), timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        texts.append(message.data)
    return texts


async def test_stream_messages_carry_the_bar_and_the_chain_and_backfill(main_store, amzn, tmp_path):
    url, _, _ = main_store
    bars = amzn["1m"]
    forming = pa.RecordBatch.from_pylist([{**bars.slice(0, 1).to_pylist()[0], "status": "forming"}], schema=BAR)
    app = create_app(service_config(url, tmp_path))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws/bars/AMZN/1m", protocols=("tickgraph.v1",))
        assert ws.protocol == "tickgraph.v1"
        hub = app[STATE].hub
        hub.publish(forming)
        hub.publish(bars.slice(0, 200))
        hub.publish(bars.slice(200))
        texts = await receive(ws, 1 + bars.num_rows)
        messages = [orjson.loads(t) for t in texts]
        assert messages[0]["type"] == "BAR_FORMING" and messages[0]["hash"] == stream_chain([])  # nothing hashed yet
        assert [m["type"] for m in messages[1:]] == ["BAR_CONFIRMED"] * bars.num_rows
        assert [m["bar"]["ts"] for m in messages[1:]] == bars.column("ts").to_pylist()  # event-time order
        assert [m["seq"] for m in messages] == list(range(1, bars.num_rows + 2))
        assert messages[-1]["hash"] == stream_chain(texts)
        # one stream's bars hash exactly as a parity node hashes a one-series bar stream
        assert parity_bars_hash(texts) == (bars.num_rows, stream_chain(texts))
        response = await client.get("/v1/parity/streams/AMZN/1m")
        body = await response.json()
        assert response.status == 200 and body == {
            "symbol": "AMZN", "timeframe": "1m", "run": "", "messages": bars.num_rows, "hash": messages[-1]["hash"]}
        late = await client.ws_connect("/ws/bars/AMZN/1m?backfill=5")
        assert await receive(late, 5) == texts[-5:]  # the last 5 confirmed, as first sent
        hub.publish(bars.slice(0, 3), "next-run")  # another run's bars start a chain of their own
        again = [orjson.loads(t) for t in await receive(ws, 3)]
        assert [m["run"] for m in again] == ["next-run"] * 3 and [m["seq"] for m in again] == [1, 2, 3]
        assert again[-1]["hash"] == stream_chain(texts[1:4])
        await ws.close()
        await late.close()


def _handshake(port: int, path: str) -> socket.socket:
    """A raw WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _close_code(data: bytes) -> int | None:
    """The code of the first close frame in server->client WebSocket bytes (unmasked frames)."""
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = struct.unpack(">H", data[i:i + 2])[0], i + 2
        elif length == 127:
            length, i = struct.unpack(">Q", data[i:i + 8])[0], i + 8
        if opcode == 0x8:
            return struct.unpack(">H", data[i:i + 2])[0]
        i += length
    return None


def read_in_thread(port: int, path: str, count: int, ready: threading.Event) -> list[str]:
    """A reading client on its own thread and event loop (as a real client is its own process)."""

    async def go() -> list[str]:
        texts: list[str] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}{path}") as ws:
            ready.set()
            async with asyncio.timeout(60):
                async for message in ws:
                    texts.append(message.data)
                    if len(texts) == count:
                        break
        return texts

    return asyncio.run(go())


async def test_a_client_that_never_reads_is_closed_with_1008_and_counted(main_store, amzn, tmp_path):
    url, _, _ = main_store
    bars = amzn["1s"]  # 3,162 bars, ~250 bytes each
    app = create_app(service_config(url, tmp_path, client_buffer=1 << 20))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        rounds = 8  # ~6 MB: more than the kernel buffers of a stuck loopback socket
        ready = threading.Event()
        receiving = asyncio.create_task(
            asyncio.to_thread(read_in_thread, client.port, "/ws/bars/AMZN/1s", rounds * bars.num_rows, ready)
        )
        stuck = await asyncio.to_thread(_handshake, client.port, "/ws/bars/AMZN/1s")
        await asyncio.to_thread(ready.wait, 10)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        for _ in range(rounds):
            for start in range(0, bars.num_rows, 500):  # bursts, as a replay's bar engine emits them
                app[STATE].hub.publish(bars.slice(start, 500))
                await asyncio.sleep(0)
        texts = await receiving
        assert time.monotonic() - started < 20  # the stuck client never held the reader back
        assert [orjson.loads(t)["bar"]["ts"] for t in texts] == bars.column("ts").to_pylist() * rounds
        metrics = await (await client.get("/metrics")).text()
        assert "tickgraph_ws_slow_client_disconnects_total 1.0" in metrics
        stuck.settimeout(2)
        data = b""
        try:  # what reached the stuck client's socket: the stream, then a close frame 1008
            while chunk := await asyncio.to_thread(stuck.recv, 1 << 20):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        stuck.close()
        assert _close_code(data) in (1008, None)  # the frame is lost if the transport was aborted first
        assert app[STATE].hub.stats()["clients"] <= 1  # the reader may have left already


async def test_api_sink_serves_a_running_graph_and_its_stream_hashes_to_the_parity_node(tmp_path):
    from graph.build import build_graph
    from graph.spec import load_graph
    from graph.summary import build_summary
    from tests.conftest import LOBSTER

    port_probe = socket.socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    graph = tmp_path / "served.yaml"
    graph.write_text(f"""
name: served
nodes:
  - id: source
    kind: replay
    params: {{files: [{orjson.dumps({**LOBSTER, "message_file": str(os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", LOBSTER["message_file"])), "orderbook_file": str(os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", LOBSTER["orderbook_file"]))}).decode()}], batch_rows: 4096}}
  - id: normalizer
    kind: normalizer
    inputs: [source]
  - id: bars
    kind: bars
    inputs: [normalizer]
    params: {{timeframes: [1m]}}
  - id: parity
    kind: parity
    inputs: [bars]
  - id: api
    kind: api
    inputs: [bars]
    params: {{port: {port}, store_url: "sqlite:///{tmp_path / 'api.db'}", linger_s: 1.5}}
""")
    loaded = load_graph(graph)
    run = build_graph(loaded, backend="local")  # the api node is listening once built
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws/bars/AMZN/1m")
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(run=run.run()))
        worker.start()
        texts: list[str] = []
        deadline = time.monotonic() + 60
        while worker.is_alive() and time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(ws.receive(), 0.5)
            except asyncio.TimeoutError:
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            texts.append(message.data)
        await asyncio.to_thread(worker.join)
        await ws.close()
    summary = build_summary(loaded, result["run"])
    confirmed = [t for t in texts if '"BAR_CONFIRMED"' in t]
    assert len(confirmed) == summary["bars_confirmed"]["AMZN"]["1m"] == 387
    assert any('"BAR_FORMING"' in t for t in texts)
    assert parity_bars_hash(texts) == (summary["parity"]["bars"]["messages"], summary["parity"]["bars"]["hash"])
    assert orjson.loads(confirmed[-1])["hash"] == summary["parity"]["bars"]["hash"]


async def test_an_overflowing_client_reads_close_code_1008_after_its_queued_messages(main_store, amzn, tmp_path):
    url, _, _ = main_store
    app = create_app(service_config(url, tmp_path, client_buffer=16 * 1024))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws/bars/AMZN/1s")
        await asyncio.sleep(0.1)
        for start in range(0, 3000, 100):  # 3,000 messages (~750 KB) while the client does not read
            app[STATE].hub.deliver(amzn["1s"].slice(start, 100))
        texts, close = [], None
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                texts.append(message.data)
        close = ws.close_code
        assert close == 1008
        assert 0 < len(texts) < 3000  # what fit before the overflow, in order
        assert [orjson.loads(t)["seq"] for t in texts] == list(range(1, len(texts) + 1))
        assert "tickgraph_ws_slow_client_disconnects_total 1.0" in await (await client.get("/metrics")).text()
