"""The service in-process over the fixtures' store: REST bars equal bars_ohlcv row for row, the
CSV export passes ``run.py parity bars``, bad requests name their field, signals and exports
match the store, the OpenAPI document covers every route.

References: ``bars_ohlcv``/``signals`` read back with ``db/read.py`` and filtered with pandas;
``run.py parity bars`` (an independent reader of the CSV) against a CSV written by pandas.
"""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.parity import main as parity_main
from db.read import read_table
from graph.timeframes import TIMEFRAMES

NS = 10**9
AMZN_DAY = (1_340_236_800 * NS, 1_340_323_200 * NS)  # 2012-06-21 UTC


@pytest.fixture(scope="module")
def stored(main_store) -> pd.DataFrame:
    url, _, _ = main_store
    return read_table(url, "bars_ohlcv").to_pandas()


async def get_json(client, path: str) -> tuple[int, dict]:
    response = await client.get(path)
    return response.status, await response.json()


@pytest.mark.parametrize("symbol", ["AMZN", "BTCUSDT"])
async def test_rest_bars_equal_bars_ohlcv_row_for_row(client, stored, symbol):
    for timeframe in TIMEFRAMES:
        status, body = await get_json(client, f"/api/v1/bars/{symbol}/{timeframe}?limit=50000")
        assert status == 200
        expected = stored[(stored.symbol == symbol) & (stored.timeframe == timeframe)].drop(columns=["symbol", "timeframe"])
        got = pd.DataFrame(body["bars"]).drop(columns=["time"])[list(expected.columns)]
        assert body["count"] == len(expected) > 0
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True)
        first = pd.Timestamp(body["bars"][0]["ts"], unit="ns", tz="UTC")
        assert body["bars"][0]["time"].startswith(first.strftime("%Y-%m-%dT%H:%M:%S"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.integers(AMZN_DAY[0], AMZN_DAY[1]),
    span=st.integers(1, 8 * 3600 * NS),
    limit=st.integers(1, 500),
    timeframe=st.sampled_from(["1s", "1m", "5m"]),
)
async def test_range_and_limit_select_the_latest_bars_of_the_range(client, stored, start, span, limit, timeframe):
    status, body = await get_json(client, f"/api/v1/bars/AMZN/{timeframe}?from={start}&to={start + span}&limit={limit}")
    assert status == 200
    series = stored[(stored.symbol == "AMZN") & (stored.timeframe == timeframe)]
    expected = series[(series.ts >= start) & (series.ts < start + span)].tail(limit)
    assert [bar["ts"] for bar in body["bars"]] == expected.ts.tolist()


async def test_csv_export_passes_parity_bars_against_the_store(client, stored, tmp_path, capsys):
    response = await client.get("/api/v1/bars/AMZN/1m?format=csv")
    assert response.status == 200 and response.content_type == "text/csv"
    exported = tmp_path / "rest.csv"
    exported.write_bytes(await response.read())
    same = await client.get("/api/v1/parity/export/AMZN/1m")
    assert await same.read() == exported.read_bytes()  # the seed-000 export route is the same CSV
    # the reference is written by pandas from bars_ohlcv, in a charting platform's layout (unix seconds)
    series = stored[(stored.symbol == "AMZN") & (stored.timeframe == "1m")]
    reference = pd.DataFrame({"time": series.ts // NS, "Open": series.open, "High": series.high, "Low": series.low,
                              "Close": series.close, "Volume": series.volume})  # fmt: skip
    reference.to_csv(tmp_path / "reference.csv", index=False)
    code = parity_main(["bars", "--local", str(exported), "--reference", str(tmp_path / "reference.csv"),
                        "--output", str(tmp_path / "diff.json")])  # fmt: skip
    report = json.loads((tmp_path / "diff.json").read_text())
    assert code == 0, capsys.readouterr()
    assert report["counts"]["local"] == report["counts"]["equal"] == len(series) == 387
    assert report["counts"]["missing"] == report["counts"]["extra"] == report["counts"]["differing"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("GET", "/api/v1/bars/NOPE/1m", None, 404, "symbol"),
        ("GET", "/api/v1/bars/AMZN/7q", None, 422, "timeframe"),
        ("GET", "/api/v1/bars/AMZN/1m?from=2012-06-21T15:00:00Z&to=2012-06-21T14:00:00Z", None, 422, "to"),
        ("GET", "/api/v1/bars/AMZN/1m?from=yesterday", None, 422, "from"),
        ("GET", "/api/v1/bars/AMZN/1m?limit=0", None, 422, "limit"),
        ("GET", "/api/v1/bars/AMZN/1m?colour=red", None, 422, "colour"),
        ("GET", "/api/v1/bars/AMZN/1m?limit=1&limit=2", None, 422, "limit"),
        ("POST", "/v1/replay/ticks", b"{not json", 400, "body"),
        ("POST", "/v1/replay/ticks", b"[1, 2]", 400, "body"),
        ("POST", "/v1/replay/ticks", {"symbols": ["AMZN"], "start": "2012-06-21T00:00:00Z", "end": "2012-06-22T00:00:00Z", "speed": -1}, 422, "speed"),
        ("POST", "/v1/replay/ticks", {"symbols": [f"S{i}" for i in range(65)], "start": 0, "end": 1}, 422, "symbols"),
        ("POST", "/v1/replay/ticks", {"symbols": ["AMZN", "ZZZ"], "start": 0, "end": 1}, 422, "symbols[1]"),
        ("POST", "/v1/replay/ticks", {"symbols": ["AMZN"], "start": 5, "end": 1}, 422, "end"),
        ("POST", "/v1/replay/ticks", {"symbols": ["AMZN"], "start": 0, "end": 1, "colour": 1}, 422, "colour"),
        ("GET", "/v1/replay/ticks/" + "0" * 32, None, 404, "run_id"),
        ("GET", "/v1/replay/ticks/not-a-run", None, 404, "run_id"),
        ("DELETE", "/v1/replay/ticks/" + "f" * 32, None, 404, "run_id"),
        ("GET", "/v1/signals?symbol=AMZN&from=2012-06-22T00:00:00Z&to=2012-06-21T00:00:00Z", None, 422, "to"),
        ("GET", "/v1/signals?symbol=NOPE", None, 404, "symbol"),
        ("POST", "/v1/exports", {"dataset": "bars", "symbols": ["NOPE"], "start": 0, "end": 1}, 422, "symbols"),
        ("POST", "/v1/exports", {"dataset": "quotes", "symbols": ["AMZN"], "start": 0, "end": 1}, 422, "dataset"),
        ("GET", "/ws/bars/AMZN/1m", None, 426, "Upgrade"),
        ("GET", "/no/such/route", None, 404, "path"),
        ("PUT", "/v1/replay/ticks", None, 405, "method"),
    ],
)
async def test_bad_requests_get_a_4xx_naming_the_field(client, method, path, body, status, field):
    kwargs = {"data": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    response = await client.request(method, path, **kwargs)
    document = await response.json()
    assert response.status == status, document
    assert document["error"]["field"] == field, document
    assert document["error"]["message"]


async def test_replay_without_a_cluster_is_503_and_records_nothing(client, main_store):
    url, _, _ = main_store
    before = len(await asyncio.to_thread(read_table, url, "job_runs"))
    response = await client.post("/v1/replay/ticks", json={"symbols": ["AMZN"], "start": 0, "end": 1})
    assert response.status == 503 and "Ray" in (await response.json())["error"]["message"]
    assert len(await asyncio.to_thread(read_table, url, "job_runs")) == before


async def test_signals_equal_the_stored_rows(client, main_store):
    url, _, _ = main_store
    stored = (await asyncio.to_thread(read_table, url, "signals")).to_pandas()
    expected = stored[(stored.symbol == "AMZN") & (stored.name == "rsi_14_1m")].sort_values("ts")
    status, body = await get_json(client, "/v1/signals?symbol=AMZN&name=rsi_14_1m&limit=50000")
    assert status == 200 and body["count"] == len(expected) > 300
    assert [s["ts"] for s in body["signals"]] == expected.ts.tolist()
    assert [s["value"] for s in body["signals"]] == expected.value.tolist()
    assert body["signals"][0]["metadata"] == json.loads(expected.metadata.iloc[0])


async def test_export_job_writes_the_stored_rows_and_serves_the_file(client, main_store, stored, tmp_path):
    body = {"dataset": "bars", "symbols": ["AMZN"], "start": "2012-06-21T00:00:00Z", "end": "2012-06-22T00:00:00Z",
            "format": "parquet", "timeframe": "5m"}  # fmt: skip
    response = await client.post("/v1/exports", json=body)
    job = await response.json()
    assert response.status == 201, job
    expected = stored[(stored.symbol == "AMZN") & (stored.timeframe == "5m")]
    assert job["status"] == "completed" and job["job_name"] == "export" and job["rows_written"] == len(expected) == 78
    status, again = await get_json(client, f"/v1/exports/{job['run_id']}")
    assert status == 200 and again["run_id"] == job["run_id"]
    download = await client.get(job["download"])
    assert download.status == 200
    (tmp_path / "got.parquet").write_bytes(await download.read())
    got = pq.read_table(tmp_path / "got.parquet").to_pandas()
    assert got.close.tolist() == expected.close.tolist()
    status, listed = await get_json(client, "/v1/exports?limit=5")
    assert job["run_id"] in [j["run_id"] for j in listed["jobs"]]


async def test_openapi_document_covers_every_route_with_the_models(client):
    status, document = await get_json(client, "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    routed = {(r.method, r.resource.canonical) for r in client.server.app.router.routes() if r.method != "HEAD"}
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    undocumented = {(m, p) for m, p in routed - documented if not p.startswith(("/static", "/internal"))}
    assert undocumented == {("GET", "/"), ("GET", "/openapi.json")}
    replay = document["components"]["schemas"]["ReplayRequest"]
    assert replay["properties"]["speed"]["minimum"] == 0 and replay["properties"]["symbols"]["maxItems"] == 64
    post = document["paths"]["/v1/replay/ticks"]["post"]
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


async def test_service_metrics_parse_and_count_requests(client):
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(3):
        await client.get("/api/v1/bars/AMZN/1h")
    response = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    requests = families["tickgraph_http_requests"].samples
    bars = [s for s in requests if s.labels["route"] == "/api/v1/bars/{symbol}/{timeframe}" and s.name.endswith("_total")]
    assert sum(s.value for s in bars if s.labels["status"] == "200") == 3
    assert {"tickgraph_ws_clients", "tickgraph_ws_slow_client_disconnects", "tickgraph_bar_cache_hits"} <= set(families)
