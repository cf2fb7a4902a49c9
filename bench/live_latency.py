"""Live latency: a trade frame sent by the local server -> its forming bar update leaving the bar engine.

    python bench/live_latency.py                              # 1,000 and 10,000 ticks/s, 10 s each
    python bench/live_latency.py --rates 1000 --seconds 5 --linger-ms 5 10 20 --json out.json
    python bench/live_latency.py --backend ray --bars-parallelism 2     # as deployed by live.yaml

Setup: the test server (``tests/live/server.py``) on 127.0.0.1 sends Binance combined-stream
``@trade`` frames shaped like the recorded one in ``fixtures/ws_frames/binance_spot_nautilus_fixtures.jsonl``
(increasing trade ids, ``T``/``E`` = the send time in ms, two symbols alternating), paced
at the chosen rate, and stamps each frame's send time (wall clock ns). The server runs
in a child process (an exchange does not share our GIL). The graph is live.yaml's chain:
``binance`` source -> ``normalizer`` -> ``bars`` (1s and 1m, ``emit_forming``), in-process
(``--backend local``) or on a local Ray (``--backend ray``: source + normalizer chained in
one actor, ``bars`` in ``--bars-parallelism`` actors, one Ray call per batch between them).
``BarEngine.on_watermark`` is wrapped (:func:`stamp_bar_engine`; on Ray through the
workers' ``worker_process_setup_hook``) to stamp the wall time at which each ``forming``
row leaves the bar engine; the stamps come back through the run's host metrics.

A trade's latency is the time from its frame's send to the first ``forming`` 1s-bar row
of its bar whose ``trade_count`` includes it (trades of a bar are counted in id order).
The first second of each run is warm-up and not counted.

Why the watermark cadence matters: the bar engine emits forming rows only on a
watermark (``actors/bars.py``), and the source yields one watermark after every
micro-batch it hands over (``max exchange ts - allowed lateness``). So a trade waits for
(1) its micro-batch to close (``linger_ms`` after the batch's first trade, or
``batch_rows``), (2) the driver to pump it through normalizer and bar engine, (3) the
watermark that follows the batch. A batch whose newest trade is not newer than the
previous watermark's trade (same ms) does not move the watermark; its trades wait for
the next batch's watermark (or the idle advance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graph.build import build_graph  # noqa: E402
from graph.schemas import BAR_FORMING  # noqa: E402
from graph.spec import load_graph  # noqa: E402
from tests.live.server import Connection, Expect, FrameServer, Hold  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT")
WARMUP_S = 1.0

GRAPH = """
name: live_latency
event_time: {{allowed_lateness_ms: 500, idle_timeout_ms: 2000}}
nodes:
  - id: source
    kind: binance
    params: {{url: "{url}", symbols: [BTCUSDT, ETHUSDT], channels: [trade], linger_ms: {linger_ms}, batch_rows: 4096}}
  - id: normalizer
    kind: normalizer
    inputs: [source]
    params: {{symbols: [BTCUSDT, ETHUSDT]}}
  - id: bars
    kind: bars
    inputs: [normalizer]
    parallelism: {parallelism}
    key: symbol
    params: {{timeframes: [1s, 1m], emit_forming: true}}
"""


@dataclass
class Generate:
    """Server step: send ``rate`` trade frames per second for ``seconds``; stamp each send."""

    rate: int
    seconds: float
    sent: dict[tuple[str, int], int] = field(default_factory=dict)  # (symbol, id) -> send ns
    ts_ms: dict[tuple[str, int], int] = field(default_factory=dict)  # (symbol, id) -> T
    first_send_ns: int = 0

    async def __call__(self, conn: Connection) -> None:
        rng = random.Random(1)
        price = {"BTCUSDT": 30000.0, "ETHUSDT": 2000.0}
        next_id = {symbol: 705291099 for symbol in SYMBOLS}
        total = int(self.rate * self.seconds)
        start = time.perf_counter()
        self.first_send_ns = time.time_ns()
        count = 0
        while count < total:
            due = min(total, int((time.perf_counter() - start) * self.rate) + 1)
            while count < due:
                symbol = SYMBOLS[count % 2]
                trade_id = next_id[symbol]
                next_id[symbol] += 1
                price[symbol] *= 1 + rng.gauss(0, 1e-4)
                now_ms = time.time_ns() // 1_000_000
                data = {
                    "e": "trade", "E": now_ms, "s": symbol, "t": trade_id, "p": f"{price[symbol]:.2f}",
                    "q": f"{rng.uniform(0.001, 1):.5f}", "b": 7038593583, "a": 7038593613, "T": now_ms,
                    "m": rng.random() < 0.5, "M": True,
                }  # fmt: skip
                await conn.send(json.dumps({"stream": f"{symbol.lower()}@trade", "data": data}, separators=(",", ":")))
                self.sent[(symbol, trade_id)] = time.time_ns()
                self.ts_ms[(symbol, trade_id)] = now_ms
                count += 1
            await asyncio.sleep(0.0005)


_STAMPS: list[tuple[int, str, int, int]] = []  # forming 1s rows leaving a bar engine: (wall ns, symbol, bar ts, count)
_WATERMARKS: list[int] = []  # wall ns of every bar-engine watermark


def stamp_bar_engine() -> None:
    """Wrap ``BarEngine.on_watermark`` (class level) to stamp the forming rows it emits.

    Runs in this process (local backend) or, as Ray's ``worker_process_setup_hook``, in
    every worker; ``BarEngine.metrics`` then also returns the stamps, so they come back
    through the run's host metrics.
    """
    from actors.bars import BarEngine

    if getattr(BarEngine, "_latency_stamped", False):
        return
    on_watermark, metrics = BarEngine.on_watermark, BarEngine.metrics

    def stamped(self, ts: int):
        out = on_watermark(self, ts)
        now = time.time_ns()
        _WATERMARKS.append(now)
        for stream, batch in out:
            if stream == "bars":
                for row in batch.to_pylist():
                    if row["status"] == BAR_FORMING and row["timeframe"] == "1s":
                        _STAMPS.append((now, row["symbol"], row["ts"], row["trade_count"]))
        return out

    def with_stamps(self):
        return {**metrics(self), "latency_stamps": list(_STAMPS), "latency_watermarks": list(_WATERMARKS)}

    BarEngine.on_watermark, BarEngine.metrics, BarEngine._latency_stamped = stamped, with_stamps, True


def _serve(rate: int, seconds: float, pipe) -> None:
    """Child process: serve the generated frames (the exchange runs on another machine, not
    under this process's GIL), report the port, then the send stamps once the client left."""
    generator = Generate(rate, seconds)
    with FrameServer() as server:
        server.route("/bench", [Expect(1), generator, Hold()])
        pipe.send(server.url("/bench"))
        while len(generator.sent) < int(rate * seconds):
            time.sleep(0.05)
        pipe.send("sent")
        while not server.connections("/bench")[0].closed.is_set():
            time.sleep(0.05)
    pipe.send((generator.first_send_ns, generator.sent, generator.ts_ms))


def measure(rate: int, seconds: float, linger_ms: float, backend: str = "local", parallelism: int = 1) -> dict:
    """One run at ``rate`` ticks/s; returns latency percentiles (ms) and counts."""
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(rate, seconds, child), daemon=True)
    server.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            graph = Path(tmp) / "live_latency.yaml"
            graph.write_text(GRAPH.format(url=url, linger_ms=linger_ms, parallelism=parallelism))
            run = build_graph(load_graph(graph), backend=backend)
            total = int(rate * seconds)
            quiet = {"since": None}
            sent_all = {"at": None}

            def done() -> bool:  # every frame sent, then 2 s more for the last ticks and forming updates
                if parent.poll():
                    sent_all["at"] = sent_all["at"] or time.monotonic()
                if sent_all["at"] is None:
                    return False
                quiet["since"] = quiet["since"] or time.monotonic()
                return time.monotonic() - quiet["since"] > 2.0

            result = run.run(should_stop=done, duration_s=seconds + 60)
        assert parent.recv() == "sent"
        first_send_ns, sent, ts_ms = parent.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.kill()
    emitted = [tuple(s) for h in result.hosts if h["node_id"] == "bars" for s in h["operator"]["latency_stamps"]]
    watermarks = [w for h in result.hosts if h["node_id"] == "bars" for w in h["operator"]["latency_watermarks"]]
    ticks = next(h for h in result.hosts if h["node_id"] == "source")["operator"]["ticks"]
    if ticks != total:
        raise RuntimeError(f"the source yielded {ticks} of {total} ticks")
    generator = Generate(rate, seconds, sent, ts_ms, first_send_ns)
    out = _latencies(generator, emitted, watermarks, rate, seconds, linger_ms)
    return {"backend": backend, "bars_parallelism": parallelism, **out}


def _latencies(generator: Generate, emitted: list, watermarks: list, rate: int, seconds: float, linger_ms: float) -> dict:
    by_bar: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for (symbol, trade_id), ts_ms in generator.ts_ms.items():
        by_bar.setdefault((symbol, ts_ms // 1000 * 1_000_000_000), []).append((trade_id, generator.sent[(symbol, trade_id)]))
    updates: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for wall, symbol, bar_ts, count in emitted:
        updates.setdefault((symbol, bar_ts), []).append((count, wall))
    warm = generator.first_send_ns + int(WARMUP_S * 1e9)
    latencies, missing = [], 0
    for key, trades in by_bar.items():
        trades.sort()
        marks = sorted(updates.get(key, []), key=lambda u: u[1])
        counts = np.maximum.accumulate(np.array([c for c, _ in marks] or [0]))
        walls = [w for _, w in marks]
        for rank, (_, sent) in enumerate(trades):
            position = int(np.searchsorted(counts, rank + 1)) if marks else 0
            if position >= len(walls):
                missing += 1  # its bar was confirmed before any forming update covered it
                continue
            if sent >= warm:
                latencies.append((walls[position] - sent) / 1e6)
    values = np.array(latencies)
    span_s = (max(watermarks) - min(watermarks)) / 1e9 if len(watermarks) > 1 else 0.0
    return {
        "rate_ticks_per_s": rate,
        "seconds": seconds,
        "linger_ms": linger_ms,
        "trades_sent": len(generator.sent),
        "trades_measured": int(values.size),
        "trades_without_forming_update": missing,
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p90_ms": round(float(np.percentile(values, 90)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "max_ms": round(float(values.max()), 2),
        "watermarks_per_s": round(len(watermarks) / span_s, 1) if span_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench for every (rate, linger) pair and print one line each (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--linger-ms", type=float, nargs="+", default=[10.0])
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--bars-parallelism", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.backend == "ray":
        import logging

        import ray

        ray.init(
            num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}, "worker_process_setup_hook": "bench.live_latency.stamp_bar_engine"},
        )  # fmt: skip
    else:
        stamp_bar_engine()
    results = []
    for linger in args.linger_ms:
        for rate in args.rates:
            result = measure(rate, args.seconds, linger, args.backend, args.bars_parallelism)
            results.append(result)
            print(
                f"{args.backend} rate {rate:>6}/s linger {linger:>4} ms: p50 {result['p50_ms']:7.2f} ms  p90 {result['p90_ms']:7.2f} ms  "
                f"p99 {result['p99_ms']:7.2f} ms  max {result['max_ms']:8.2f} ms  "
                f"({result['trades_measured']} trades, {result['watermarks_per_s']} watermarks/s)",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
