"""Security: loopback by default (checked on the kernel's socket table), no start beyond
loopback without a token, 401 without the token, and the token in no log line or output."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.config import ServiceConfig, ServiceConfigError
from tests.service.conftest import service_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tg-test-token-7f3a9c1e5b"


def listeners(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                if name == "tcp":
                    found.append(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.append("::1" if address == "00000000000000000000000001000000" else address)
    return found


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_beyond_loopback_without_a_token_is_refused(host):
    with pytest.raises(ServiceConfigError, match="TICKGRAPH_API_TOKEN"):
        ServiceConfig(store_url="sqlite:///x.db", host=host)
    ServiceConfig(store_url="sqlite:///x.db", host=host, token=TOKEN)  # with a token it may


def test_serve_refuses_a_public_host_without_a_token_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TICKGRAPH_API_TOKEN"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "run.py", "serve", "--host", "0.0.0.0", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "TICKGRAPH_API_TOKEN" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 20  # refused before Ray started


async def test_token_is_required_and_never_logged(main_store, tmp_path, caplog):
    url, _, _ = main_store
    caplog.set_level(logging.DEBUG)
    app = create_app(service_config(url, tmp_path, token=TOKEN))
    assert TOKEN not in repr(app) and TOKEN not in repr(service_config(url, tmp_path, token=TOKEN))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        missing = await client.get("/api/v1/bars/AMZN/1m")
        wrong = await client.get("/api/v1/bars/AMZN/1m", headers={"Authorization": "Bearer nope"})
        right = await client.get("/api/v1/bars/AMZN/1m", headers={"Authorization": f"Bearer {TOKEN}"})
        assert missing.status == wrong.status == 401 and right.status == 200
        assert (await missing.json())["error"]["field"] == "Authorization"
        assert TOKEN not in await wrong.text()
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/")).status == 200 and (await client.get("/openapi.json")).status == 200  # no data in them
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws/bars/AMZN/1m")
        assert refused.value.status == 401
        ws = await client.ws_connect("/ws/bars/AMZN/1m", protocols=("tickgraph.v1", f"bearer.{TOKEN}"))
        assert ws.protocol == "tickgraph.v1"  # the browser's way: the token as a subprotocol
        await ws.close()
        await client.post("/v1/replay/ticks", data=b"{oops", headers={"Authorization": f"Bearer {TOKEN}"})
    lines = [record.getMessage() for record in caplog.records]
    assert any("/api/v1/bars/AMZN/1m" in line for line in lines)  # the access log did log the requests
    assert not [line for line in lines if TOKEN in line]


def test_serve_listens_on_loopback_only_and_never_prints_the_token(tmp_path, main_store):
    url, _, _ = main_store
    env = {**os.environ, "TICKGRAPH_API_TOKEN": TOKEN, "RAY_DEDUP_LOGS": "0"}
    process = subprocess.Popen(
        [sys.executable, "run.py", "serve", "--port", "0", "--database-url", url, "--num-cpus", "1", "--no-dashboard",
         "--export-dir", str(tmp_path / "exports")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = []
    try:
        deadline = time.monotonic() + 120
        base = None
        while base is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            match = re.search(r"tickgraph service: (http://127\.0\.0\.1:(\d+))/", line)
            if match:
                base, port = match.group(1), int(match.group(2))
        assert base is not None, "".join(output)
        assert listeners(port) == ["127.0.0.1"]  # one listening socket, on loopback, nothing on 0.0.0.0 or ::
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/api/v1/bars/AMZN/1m", timeout=10)
        assert denied.value.code == 401
        request = urllib.request.Request(f"{base}/api/v1/bars/AMZN/1m?limit=2", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    text = "".join(output)
    assert process.returncode == 0, text
    assert "/api/v1/bars/AMZN/1m" in text and TOKEN not in text
