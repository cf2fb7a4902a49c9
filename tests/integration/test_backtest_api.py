"""The backtest HTTP routes (backtest/api.py) on aiohttp's test server, against a real
artifacts directory: idempotent POST /runs, run details and artifacts, Server-Sent
Events, presets, and the one error shape."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backtest.manifest import HASHED
from service.app import create_app
from service.config import ServiceConfig
from tests.backtests import config_doc


@pytest.fixture
async def client(tmp_path):
    # the service's own app (an empty store): the backtest routes are mounted in it
    config = ServiceConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", port=0, export_dir=tmp_path / "exports",
                           backtest_root=tmp_path / "artifacts", backtest_base_dir=tmp_path)  # fmt: skip
    app = create_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def events_of(client, run_hash: str) -> list[dict]:
    response = await client.get(f"/runs/{run_hash}/events")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    text = await response.text()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert blocks[-1].startswith("event: end")
    return [json.loads(b.split("data: ", 1)[1]) for b in blocks[:-1]]


async def test_runs_are_idempotent_and_stream_their_steps(client):
    doc = config_doc(["BTCUSDT"], validation={"bootstrap": {"samples": 20}})
    first = await client.post("/runs", json=doc)
    assert first.status == 202
    accepted = await first.json()
    assert accepted["status"] == "running" and accepted["created"] is True
    run_hash = accepted["run_hash"]
    events = await events_of(client, run_hash)  # follows the running run to its end
    steps = [e["step"] for e in events]
    assert steps[0] == "startup" and steps[-1] == "done"
    assert {"dataload", "backtest", "validation"} <= set(steps)
    assert all(0.0 <= e["progress"] <= 1.0 for e in events)
    second = await client.post("/runs", json=json.loads(json.dumps(doc)))
    assert second.status == 200 and await second.json() == {"run_hash": run_hash, "status": "completed", "created": False}
    detail = await (await client.get(f"/runs/{run_hash}")).json()
    assert detail["status"] == "completed" and detail["manifest"]["run_hash"] == run_hash
    assert detail["metrics"]["book"]["bars"] == 126
    files = await (await client.get(f"/runs/{run_hash}/artifacts")).json()
    assert [f["name"] for f in files["files"]] == list(HASHED)
    metrics = await client.get(f"/runs/{run_hash}/artifacts/metrics.json")
    assert json.loads(await metrics.read()) == detail["metrics"]
    listed = await (await client.get("/runs")).json()
    assert [r["run_hash"] for r in listed["runs"]] == [run_hash]
    assert [e["step"] for e in await events_of(client, run_hash)] == steps  # replayed from events.jsonl


async def test_errors_have_one_shape(client):
    doc = config_doc()
    doc["execution"] = {"fee_bps": -1}
    bad = await client.post("/runs", json=doc)
    assert bad.status == 422
    assert await bad.json() == {"error": {"field": "execution.fee_bps", "message": "Input should be greater than or equal to 0"}}
    unknown = await client.post("/runs", json=config_doc(["AMZN", "ETHUSDT"]))
    body = await unknown.json()
    assert unknown.status == 422 and body["error"]["field"] == "symbols[1]"
    broken = await client.post("/runs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status == 400 and (await broken.json())["error"]["field"] == "<body>"
    missing = await client.get("/runs/" + "0" * 64)
    assert missing.status == 404 and (await missing.json())["error"]["field"] == "hash"
    assert (await client.get("/runs/" + "0" * 64 + "/events")).status == 404


async def test_presets_are_idempotent_by_hash(client):
    preset = {"name": "sma fast", "config": config_doc(["BTCUSDT"])}
    created = await client.post("/presets", json=preset)
    assert created.status == 201
    body = await created.json()
    again = await client.post("/presets", json={"config": preset["config"], "name": "sma fast"})
    assert again.status == 200 and (await again.json())["preset_id"] == body["preset_id"]
    other = await client.post("/presets", json={**preset, "name": "sma slow"})
    assert (await other.json())["preset_id"] != body["preset_id"]
    listed = await (await client.get("/presets")).json()
    assert sorted(p["name"] for p in listed["presets"]) == ["sma fast", "sma slow"]
    fetched = await (await client.get(f"/presets/{body['preset_id']}")).json()
    assert fetched["config"]["strategy"]["params"] == {"fast": 10, "slow": 30, "allow_short": True}  # defaults filled
    assert (await client.delete(f"/presets/{body['preset_id']}")).status == 204
    assert (await client.get(f"/presets/{body['preset_id']}")).status == 404
    assert (await client.delete(f"/presets/{body['preset_id']}")).status == 404
    bad = await client.post("/presets", json={"name": "x", "config": {**preset["config"], "timeframe": "2m"}})
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "config.timeframe"


async def test_posting_the_same_config_while_it_runs_starts_it_once(client):
    doc = config_doc(["BTCUSDT"], seed=9)
    responses = await asyncio.gather(*(client.post("/runs", json=doc) for _ in range(3)))
    bodies = [await r.json() for r in responses]
    assert len({b["run_hash"] for b in bodies}) == 1
    assert sum(b["created"] for b in bodies) == 1
    await events_of(client, bodies[0]["run_hash"])
    assert (await (await client.get(f"/runs/{bodies[0]['run_hash']}")).json())["status"] == "completed"
