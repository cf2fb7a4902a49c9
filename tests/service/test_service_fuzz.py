"""Property-based run over the service's own OpenAPI document (schemathesis + hypothesis):
valid and invalid requests to every documented operation, zero server errors (5xx), every
error in the one error shape.

The service runs on a loopback port over the fixtures' store; replay jobs go to a launcher
double that records the launch (no Ray here: the launch itself is tested in
test_service_ray.py), so the whole request path up to the launch is exercised.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from service.app import create_app
from service.config import ServiceConfig
from service.openapi import OPERATIONS, build_document
from service.server import ServiceServer


class RecordingLauncher:
    """Records replay launches instead of starting drivers on Ray."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, job_id, overrides, metadata, start_ns, end_ns, publish_url) -> None:
        self.started.append(job_id)

    def cancel(self, job_id: str) -> bool:
        return False


def _document() -> dict:
    app = create_app(ServiceConfig(store_url="sqlite:///:memory:"))
    return build_document(app[OPERATIONS])


schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def live(main_store, tmp_path_factory):
    url, _, store_dir = main_store
    tmp = tmp_path_factory.mktemp("fuzz")
    launcher = RecordingLauncher()
    config = ServiceConfig(store_url=url, host="127.0.0.1", port=0, export_dir=tmp / "exports", backtest_root=tmp / "backtests",
                           backtest_base_dir=tmp, catalog_dir=store_dir / "catalog")  # fmt: skip
    server = ServiceServer(create_app(config, launcher=launcher), "127.0.0.1", 0)
    server.start()
    yield server.url
    server.stop()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case, live):
    response = case.call(base_url=live, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"field", "message"}, body
        assert body["error"]["message"]
