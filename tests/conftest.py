"""Shared test fixtures: paths to the real fixture data, and one Ray instance per session."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Graphs with an api node (config/live.yaml) listen on a free port in tests, never on 8000.
os.environ.setdefault("TICKGRAPH_API_PORT", "0")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CONFIG = ROOT / "config"
LOBSTER_MESSAGES = FIXTURES / "lobster_amzn_l1" / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
LOBSTER_ORDERBOOK = FIXTURES / "lobster_amzn_l1" / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
TARDIS_TRADES = FIXTURES / "tardis_binance_futures_btcusdt" / "trades.csv"
TARDIS_QUOTES = FIXTURES / "tardis_binance_futures_btcusdt" / "quotes.csv"

# The same fixtures as replay ``files`` entries, with paths relative to FIXTURES.
MESSAGES = "lobster_amzn_l1/AMZN_2012-06-21_34200000_57600000_message_1.csv"
BOOKS = "lobster_amzn_l1/AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
LOBSTER = {
    "format": "lobster", "message_file": MESSAGES, "orderbook_file": BOOKS, "symbol": "AMZN", "date": "2012-06-21",
}  # fmt: skip
TRADES = {"format": "tardis_trades", "path": "tardis_binance_futures_btcusdt/trades.csv"}
QUOTES = {"format": "tardis_quotes", "path": "tardis_binance_futures_btcusdt/quotes.csv"}


def run_main_job(tmp_path: Path, backend: str, *overrides: str, db: str = "bars.db") -> tuple[str, dict]:
    """Run ``config/replay.yaml`` with every output under ``tmp_path`` (the catalog in ``tmp_path / "catalog"``).

    Returns:
        (the SQLite URL of the store, the run summary).
    """
    from graph.build import build_graph
    from graph.spec import load_graph
    from graph.summary import build_summary

    url = f"sqlite:///{tmp_path / db}"
    loaded = load_graph(
        "replay.yaml",
        [
            f"store.url={url}", f"source.job_database_url={url}", f"parquet.path={tmp_path / 'parquet'}",
            f"catalog.path={tmp_path / 'catalog'}", *overrides,
        ],
        env={},
    )  # fmt: skip
    result = build_graph(loaded, backend=backend).run()
    return url, build_summary(loaded, result)


@pytest.fixture(scope="session")
def ray_session():
    """One private Ray instance for the whole session, as ``run.py`` starts it (127.0.0.1
    only, token authentication): 2 CPUs, no dashboard, always shut down."""
    import ray

    from graph.cluster import start_private_ray

    start_private_ray(num_cpus=2, dashboard=False, logging_level=logging.WARNING, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
