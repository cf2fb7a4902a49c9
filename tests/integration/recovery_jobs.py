"""The main job as the recovery tests run it, its audited store, and its outputs."""

from __future__ import annotations

import pandas as pd

from graph.spec import load_graph
from tests.hostile.cuts import table as read

TABLES = ("bars_ohlcv", "tick_data", "signals")


def main_job(tmp_path, *extra: str):
    """``config/replay.yaml`` writing under ``tmp_path`` in 4096-row batches with a checkpoint
    every 150 ms; ``extra`` are more ``--set`` overrides. Returns (loaded graph, store URL)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    overrides = [
        f"store.url={url}", f"source.job_database_url={url}", f"parquet.path={tmp_path / 'parquet'}",
        "source.batch_rows=4096", "runtime.pump_events=2", "runtime.checkpoint_interval_ms=150",
        f"runtime.checkpoint_dir={tmp_path / 'ckpt'}", *extra,
    ]  # fmt: skip
    return load_graph("replay.yaml", overrides, env={}), url


def audited(tmp_path) -> None:
    """Create the store's tables with triggers that log every UPDATE (a value that changed)."""
    import sqlalchemy as sa

    from db.tables import create_tables

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        create_tables(connection)
        connection.exec_driver_sql("create table audit (tbl text, changed text)")
        for name in TABLES:
            connection.exec_driver_sql(
                f"create trigger audit_{name} after update on {name} begin "
                f"insert into audit values ('{name}', 'a stored row changed'); end"
            )
    engine.dispose()


def outputs(tmp_path) -> dict[str, pd.DataFrame]:
    """Every row of the store's bars, ticks and signals, sorted, without wall-clock columns."""
    out = {}
    for name in TABLES:
        frame = read(tmp_path, name)
        out[name] = frame.drop(columns=[c for c in ("created_at",) if c in frame])  # a wall-clock column
    return out
