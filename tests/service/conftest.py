"""Service test fixtures: one real SQLite store built from the fixtures (the main job, in-process)
per session, and an in-process client of the app over it (aiohttp's test server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.config import ServiceConfig
from tests.conftest import run_main_job


@pytest.fixture(scope="session")
def main_store(tmp_path_factory) -> tuple[str, dict, Path]:
    """(store URL, run summary, directory) of config/replay.yaml run in-process on the fixtures."""
    tmp = tmp_path_factory.mktemp("service_store")
    url, summary = run_main_job(tmp, "local", db="store.db")
    return url, summary, tmp


def service_config(url: str, tmp: Path, **kwargs) -> ServiceConfig:
    """A loopback config over ``url`` whose exports go under ``tmp`` (the catalog too, unless given)."""
    kwargs.setdefault("catalog_dir", tmp / "catalog")
    return ServiceConfig(store_url=url, host="127.0.0.1", port=0, export_dir=tmp / "exports", backtest_root=tmp / "backtests", **kwargs)


@pytest.fixture
async def client(main_store, tmp_path):
    """A test client of the service over the main store (no Ray, no launcher)."""
    url, _, store_dir = main_store
    app = create_app(service_config(url, tmp_path, catalog_dir=store_dir / "catalog"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def ray_service(ray_session, tmp_path_factory):
    """The service on a free loopback port, on the session's Ray, over an initially empty store.

    Yields ``(ServiceServer, store URL)``; replay jobs run as graph runs on Ray.
    """
    from service.cluster import RayCluster
    from service.server import ServiceServer

    tmp = tmp_path_factory.mktemp("ray_service")
    config = ServiceConfig(
        store_url=f"sqlite:///{tmp / 'jobs.db'}", host="127.0.0.1", port=0, export_dir=tmp / "exports",
        replay_overrides=(f"parquet.path={tmp / 'parquet'}",), catalog_dir=tmp / "catalog",
    )  # fmt: skip
    server = ServiceServer(create_app(config, cluster=RayCluster()), "127.0.0.1", 0)
    server.start()
    try:
        yield server, config.store_url
    finally:
        server.stop()
