"""Replay jobs over HTTP on a real Ray cluster: same bars and parity hash as the main job, the
WebSocket stream hashes to the job's parity node, /metrics counters equal the run summary,
and a cancel ends a paced replay as ``cancelled``.

Reference: the main job (``config/replay.yaml``) run in-process on the same fixtures
(``main_store``), and the job's own run summary as its driver recorded it.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from db.read import read_table
from tests.service.helpers import SEED_003_FIELDS, parity_bars_hash, record_streams, stream_chain, wait_job

pytestmark = pytest.mark.ray

REPLAY = {"provider": "files", "symbols": ["AMZN", "BTCUSDT"], "start": "2012-06-21T00:00:00Z",
          "end": "2020-02-23T00:00:00Z", "speed": 0}  # fmt: skip


def samples(text: str) -> dict[str, list]:
    """Prometheus text -> sample name -> [(labels, value)] (parsed by prometheus_client)."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def actor_counts(parsed: dict[str, list], run_id: str) -> dict[str, dict]:
    """The job's counters from /metrics, keyed like the run summary."""
    def of(name: str) -> list:
        return [(labels, value) for labels, value in parsed.get(name, []) if labels.get("run") == run_id]

    bars: dict[str, dict[str, int]] = {}
    for labels, value in of("bars_confirmed_total"):
        bars.setdefault(labels["symbol"], {})[labels["timeframe"]] = int(value)
    rows_out: dict[str, dict[str, int]] = {}
    for labels, value in of("node_rows_out_total"):
        rows_out.setdefault(labels["node"], {})[labels["stream"]] = int(value)
    return {
        "ticks": int(sum(v for _, v in of("tick_replay_ticks_emitted_total"))),
        "bars_confirmed": bars,
        "quarantined": int(sum(v for _, v in of("ticks_quarantined_total"))),
        "signals_written": int(sum(v for _, v in of("signals_written_total"))),
        "rows_out": rows_out,
    }


async def test_http_replay_matches_the_main_job_its_stream_and_its_metrics(ray_service, main_store):
    server, url = ray_service
    main_url, main_summary, _ = main_store
    ws_base = server.url.replace("http://", "ws://")
    async with aiohttp.ClientSession() as session:
        stop = asyncio.Event()
        recorder = asyncio.create_task(record_streams(ws_base, REPLAY["symbols"], session, stop))
        await asyncio.sleep(1.0)  # every stream subscribed before the first bar
        async with session.post(f"{server.url}/v1/replay/ticks", json=REPLAY) as response:
            assert response.status == 201, await response.text()
            started = await response.json()
        assert SEED_003_FIELDS <= set(started)
        assert started["status"] == "running" and started["job_name"] == "replay" and started["provider"] == "files"
        assert started["symbols"] == REPLAY["symbols"] and started["metadata"]["speed"] == 0
        row = await wait_job(session, server.url, started["run_id"], {"completed", "failed", "cancelled"})
        stop.set()
        recorded = await recorder
        assert row["status"] == "completed", row["error_message"]

        summary = row["metadata"]["summary"]
        # the same bars and parity hashes as run.py --graph replay.yaml on the same ticks
        assert summary["parity"]["bars"] == main_summary["parity"]["bars"]
        assert summary["parity"]["ticks"] == main_summary["parity"]["ticks"]
        assert row["rows_written"] == main_summary["ticks_read"] == 67_514
        stored = (await asyncio.to_thread(read_table, url, "bars_ohlcv")).to_pandas()
        reference = (await asyncio.to_thread(read_table, main_url, "bars_ohlcv")).to_pandas()
        assert stored.equals(reference)
        async with session.get(f"{server.url}/v1/parity/jobs/{row['run_id']}") as response:
            assert (await response.json())["streams"]["bars"] == main_summary["parity"]["bars"]

        # the WebSocket messages, ordered as the parity node orders bars, hash to its bars hash
        every_text = [text for texts in recorded.values() for text in texts]
        assert parity_bars_hash(every_text) == (summary["parity"]["bars"]["messages"], summary["parity"]["bars"]["hash"])
        for key, texts in recorded.items():  # each message's hash is its stream's chain of this run so far
            mine = [t for t in texts if orjson.loads(t)["run"] == row["run_id"]]
            assert len(mine) == len(texts) > 0, key
            last = [t for t in mine if '"BAR_FORMING"' not in t][-1]
            assert orjson.loads(last)["hash"] == stream_chain(mine), key

        # /metrics parses with prometheus_client and its actor counters equal the summary's counts
        expected = {
            "ticks": summary["ticks_read"],
            "bars_confirmed": summary["bars_confirmed"],
            "quarantined": summary["quarantined_total"],
            "signals_written": summary["rows_written"]["signals"],
            "rows_out": {n: v["rows_out"] for n, v in summary["nodes"].items() if v["rows_out"]},
        }
        deadline = time.monotonic() + 60  # Ray's metrics agent reports every 10 s by default
        while True:
            async with session.get(f"{server.url}/metrics") as response:
                parsed = samples(await response.text())
            got = actor_counts(parsed, row["run_id"])
            if got == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        assert got == expected
        assert expected["signals_written"] > 0 and parsed["tickgraph_hub_bars_received_total"][0][1] > 0


async def test_cancel_ends_a_paced_replay_as_cancelled(ray_service):
    server, _ = ray_service
    async with aiohttp.ClientSession() as session:
        body = {**REPLAY, "symbols": ["AMZN"], "speed": 1.0}  # original pace: 6.5 hours of ticks
        async with session.post(f"{server.url}/v1/replay/ticks", json=body) as response:
            started = await response.json()
        run_id = started["run_id"]
        deadline = time.monotonic() + 120
        while True:  # wait until ticks flow
            async with session.get(f"{server.url}/v1/replay/ticks/{run_id}") as response:
                row = await response.json()
            if (row["rows_written"] or 0) > 0 or row["status"] != "running" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert row["status"] == "running" and row["rows_written"] > 0
        async with session.delete(f"{server.url}/v1/replay/ticks/{run_id}") as response:
            assert response.status == 200
            cancelled = await response.json()
        assert cancelled["status"] == "cancelled" and cancelled["completed_at"] is not None
        assert 0 < cancelled["rows_written"] < 67_514
        async with session.delete(f"{server.url}/v1/replay/ticks/{run_id}") as response:
            assert response.status == 409
            assert (await response.json())["error"]["field"] == "run_id"
