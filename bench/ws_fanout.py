"""WebSocket fan-out under load: 200 clients on loopback, each subscribed to every bar stream.

    python bench/ws_fanout.py [--clients 200] [--rounds 2] [--batch-rows 4096]

A burst replay of the fixtures repeated on consecutive days (bench/replay_throughput.py's
input with 2 symbols; at the default 135k ticks that is the fixtures once: 6,785 confirmed
bars; all six timeframes, 12 streams) runs in-process through source -> normalizer -> bars -> ``api`` (serve mode: the
service in the graph's process, as in ``live.yaml``). A separate client process opens
``clients`` x 12 WebSocket connections (one per stream per client) and records, for
every confirmed bar, its arrival time; the bar engine's emissions are stamped in the graph
process (the bar leaving the bar engine). Both use CLOCK_MONOTONIC, which is system-wide.

Two variants, interleaved for ``rounds`` rounds: *readers* (every client reads) and
*+stuck* (the same plus one client whose sockets on the two 1s streams complete the
handshake and never read). Checks per run: every reading connection received every
confirmed bar of its stream, in event-time order; with the stuck client, its connections
were closed as too slow (``tickgraph_ws_slow_client_disconnects_total``) and no reader was. Prints p50/p99
latency per run and the ratio of the +stuck p99 to the readers' p99 (median over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMEFRAMES = ("1s", "1m", "5m", "15m", "1h", "1d")
#: The stuck client subscribes to the busiest streams, which keep sending it messages long
#: after its socket stopped taking bytes (client_stall_s = 5 s here: the write timeout).
STUCK_TIMEFRAME = "1s"
#: bench/replay_throughput.py's input with 2 symbols: S000 = the LOBSTER AMZN day, S001 =
#: the Tardis BTCUSDT trades and quotes, each repeated on consecutive days.
SYMBOLS = ("S000", "S001")


def graph_file(directory: Path, port: int, batch_rows: int, data: Path) -> Path:
    """The bench graph: a burst replay of ``data`` -> normalizer -> bars -> an api node on ``port``."""
    path = directory / "ws_fanout.yaml"
    path.write_text(f"""
name: ws_fanout
nodes:
  - id: source
    kind: replay
    params:
      batch_rows: {batch_rows}
      files: [{{format: canonical, path: "{data}"}}]
  - id: normalizer
    kind: normalizer
    inputs: [source]
    params: {{symbols: [{", ".join(SYMBOLS)}]}}
  - id: bars
    kind: bars
    inputs: [normalizer]
    params: {{timeframes: [1s, 1m, 5m, 15m, 1h, 1d]}}
  - id: api
    kind: api
    inputs: [bars]
    params: {{port: {port}, store_url: "sqlite:///{directory / 'store.db'}", client_stall_s: 5, linger_s: 120,
             graph: "{path}"}}
""")
    return path


# -- the client process ------------------------------------------------------------------------
def _stuck_socket(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock


class _Recorder(asyncio.Protocol):
    """A lean WebSocket client (the load generator must not be the bottleneck): sends the
    upgrade request, then parses unmasked server frames from each chunk and records, for
    every BAR_CONFIRMED text frame, the bar's ``ts`` and the chunk's arrival time."""

    def __init__(self, path: str, opened: asyncio.Future) -> None:
        self.path = path
        self.opened = opened
        self.buffer = b""
        self.upgraded = False
        self.rows: list[tuple[int, int]] = []
        self.closed_code: int | None = None

    def connection_made(self, transport) -> None:
        """Send the upgrade request."""
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        """Parse the complete frames of the bytes received so far; keep the rest."""
        now = time.monotonic_ns()
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self.upgraded = buffer.startswith(b"HTTP/1.1 101")
            self.opened.set_result(self.upgraded)
            buffer = buffer[end + 4:]
        i, size = 0, len(buffer)
        while i + 2 <= size:
            opcode, length, head = buffer[i] & 0x0F, buffer[i + 1] & 0x7F, 2
            if length == 126:
                if i + 4 > size:
                    break
                length, head = int.from_bytes(buffer[i + 2:i + 4], "big"), 4
            elif length == 127:
                if i + 10 > size:
                    break
                length, head = int.from_bytes(buffer[i + 2:i + 10], "big"), 10
            if i + head + length > size:
                break
            start = i + head
            if opcode == 0x1 and buffer.startswith(b'{"type":"BAR_CONFIRMED"', start):
                at = buffer.find(b'"bar":{"ts":', start) + 12
                self.rows.append((int(buffer[at:buffer.find(b",", at)]), now))
            elif opcode == 0x8 and length >= 2:
                self.closed_code = int.from_bytes(buffer[start:start + 2], "big")
            i = start + length
        self.buffer = buffer[i:]


def client_process(port: int, clients: int, stuck: bool, ready, done, results) -> None:
    """Open the connections, report readiness, record arrivals until ``done``; send results."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        recorders = []
        for _ in range(clients):
            for symbol in SYMBOLS:
                for timeframe in TIMEFRAMES:
                    opened = loop.create_future()
                    _, recorder = await loop.create_connection(
                        lambda: _Recorder(f"/ws/bars/{symbol}/{timeframe}", opened), "127.0.0.1", port)
                    assert await opened, "upgrade refused"
                    recorders.append((symbol, timeframe, recorder))
        blocked = [_stuck_socket(port, f"/ws/bars/{s}/{STUCK_TIMEFRAME}") for s in SYMBOLS] if stuck else []
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        for _, _, recorder in recorders:
            recorder.transport.close()
        for sock in blocked:
            sock.close()
        results.send([(s, tf, np.array(r.rows, dtype=np.int64).reshape(-1, 2)) for s, tf, r in recorders])

    asyncio.run(main())


# -- one run -------------------------------------------------------------------------------------
def run_once(clients: int, stuck: bool, batch_rows: int, data: Path) -> dict:
    """One burst replay with ``clients`` reading clients (and the stuck one); latency and checks."""
    from actors.bars import BarEngine
    from graph.build import build_graph
    from graph.spec import load_graph
    from service.app import STATE

    emitted: dict[tuple[str, str, int], int] = {}
    originals = {name: getattr(BarEngine, name) for name in ("on_batch", "on_watermark", "on_eof")}

    def stamping(name):
        def hook(self, *args):
            out = originals[name](self, *args)
            now = time.monotonic_ns()
            for stream, batch in out:
                if stream == "bars":
                    for s, tf, ts, status in zip(*(batch.column(c).to_pylist() for c in ("symbol", "timeframe", "ts", "status"))):
                        if status == "confirmed":
                            emitted[(s, tf, ts)] = now
            return out
        return hook

    for name in originals:
        setattr(BarEngine, name, stamping(name))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_graph(graph_file(Path(tmp), port, batch_rows, data))
            graph = build_graph(loaded, backend="local")
            api = graph.hosts[("api", 0)].op
            context = mp.get_context("spawn")
            ready, done = context.Event(), context.Event()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=client_process, args=(port, clients, stuck, ready, done, sender))
            process.start()
            assert ready.wait(300), "clients did not connect"
            time.sleep(0.5)
            started = time.monotonic()
            state = api._state
            slow_before = state.metrics.ws_slow._value.get()
            graph.run()  # the api node lingers until every client was sent every message
            elapsed = time.monotonic() - started
            slow = state.metrics.ws_slow._value.get() - slow_before
            done.set()
            per_connection = receiver.recv()
            process.join(60)
    finally:
        for name, original in originals.items():
            setattr(BarEngine, name, original)
    expected: dict[tuple[str, str], list[int]] = {}
    for (s, tf, ts) in sorted(emitted):
        expected.setdefault((s, tf), []).append(ts)
    latencies = []
    complete = ordered = 0
    for s, tf, rows in per_connection:
        want = expected.get((s, tf), [])
        complete += rows[:, 0].tolist() == want
        ordered += bool(np.all(np.diff(rows[:, 0]) > 0)) if len(rows) > 1 else 1
        latencies.append(rows[:, 1] - np.array([emitted[(s, tf, ts)] for ts in rows[:, 0]], dtype=np.int64))
    latency_ms = np.concatenate(latencies) / 1e6
    return {
        "connections": len(per_connection), "complete": complete, "ordered": ordered, "confirmed": len(emitted),
        "messages": int(latency_ms.size), "p50_ms": float(np.percentile(latency_ms, 50)),
        "p99_ms": float(np.percentile(latency_ms, 99)), "max_ms": float(latency_ms.max()), "slow_closed": int(slow),
        "elapsed_s": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints one line per run and the summary ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=4096, help="replay batch size (ticks per source batch)")
    parser.add_argument("--ticks", type=int, default=135_000, help="input size (the fixtures, repeated past 135k)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from replay_throughput import ensure_input

    data = ensure_input(len(SYMBOLS), args.ticks)
    runs: dict[str, list[dict]] = {"readers": [], "+stuck": []}
    for round_ in range(args.rounds):
        order = ["readers", "+stuck"] if round_ % 2 == 0 else ["+stuck", "readers"]
        for variant in order:
            result = run_once(args.clients, variant == "+stuck", args.batch_rows, data)
            runs[variant].append(result)
            print(f"round {round_ + 1} {variant:<8} connections {result['connections']:>5}  complete {result['complete']:>5}  "
                  f"in order {result['ordered']:>5}  confirmed bars {result['confirmed']}  deliveries {result['messages']:,}  "
                  f"p50 {result['p50_ms']:8.1f} ms  p99 {result['p99_ms']:8.1f} ms  max {result['max_ms']:8.1f} ms  "
                  f"closed as slow {result['slow_closed']}  {result['elapsed_s']:.1f} s", flush=True)  # fmt: skip
    p99 = {v: float(np.median([r["p99_ms"] for r in rs])) for v, rs in runs.items()}
    p50 = {v: float(np.median([r["p50_ms"] for r in rs])) for v, rs in runs.items()}
    ok = all(r["complete"] == r["connections"] == r["ordered"] for rs in runs.values() for r in rs)
    stuck_closed = all(r["slow_closed"] == len(SYMBOLS) for r in runs["+stuck"])
    readers_kept = all(r["slow_closed"] == 0 for r in runs["readers"])
    print(f"median p50: readers {p50['readers']:.1f} ms, +stuck {p50['+stuck']:.1f} ms; "
          f"median p99: readers {p99['readers']:.1f} ms, +stuck {p99['+stuck']:.1f} ms; "
          f"p99 ratio +stuck/readers {p99['+stuck'] / p99['readers']:.2f}")
    print(f"every reading connection got every confirmed bar of its stream in order: {ok}; "
          f"stuck client's {len(SYMBOLS)} connections closed as slow: {stuck_closed}; no reader closed: {readers_kept}")
    return 0 if ok and stuck_closed and readers_kept else 1


if __name__ == "__main__":
    sys.exit(main())
