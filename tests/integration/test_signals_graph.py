"""The main job with signals, ``config/replay.yaml``, in-process (and once on Ray).

Stored signals -- the per-tick ones in the tick catalog, the bar-level ones in the
``signals`` table, read back through the one read path (``catalog/reader.py``) -- are
checked against independent computations from the raw fixture files: pandas for
``spread_bps`` and ``vwap_deviation_bps`` (to 1e-9 relative), the ``ta`` library for RSI
and Bollinger %b on the confirmed bars the same job stored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ta

from catalog.reader import StoreReader
from db.read import read_bars, read_table
from graph.spec import load_graph
from tests.conftest import run_main_job
from tests.reference import lobster_trades, tardis_trades
from tests.unit.test_signals import raw_lobster

PER_TICK = ["signals_vwap_deviation_bps", "signals_spread_bps"]  # -> the tick catalog
BAR_LEVEL = ["signals_tick_rate_zscore", "signals_rsi", "signals_bollinger_pctb"]  # -> SQL
NAMES = ["vwap_deviation_bps", "spread_bps", "tick_rate_zscore_1s_60", "rsi_14_1m", "bollinger_pctb_20_2_1m"]


def run_job(tmp_path, backend: str = "local", db: str = "signals.db", *extra: str):
    return run_main_job(tmp_path, backend, *extra, db=db)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay_main")
    url, summary = run_job(tmp)
    return tmp, url, summary


def reader(tmp: Path, url: str) -> StoreReader:
    return StoreReader(tmp / "catalog", url)


def stored_signal(tmp: Path, url: str, symbol: str, name: str) -> pd.DataFrame:
    frame = reader(tmp, url).signals([symbol], names=[name]).to_pandas()
    return frame.set_index("ts")


def catalog_digest(root: Path) -> dict[str, str]:
    """File name -> SHA-256 of every file under the catalog."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_per_tick_signals_feed_the_catalog_and_bar_level_ones_the_store(job):
    tmp, url, summary = job
    loaded = load_graph("replay.yaml", env={})
    store_inputs, catalog_inputs = loaded.spec.node("store").inputs, loaded.spec.node("catalog").inputs
    for node in PER_TICK + BAR_LEVEL:
        assert f"{node}.quarantine" in store_inputs
        assert summary["nodes"][node]["rows_out"]["signals"] > 0
    assert all(node in catalog_inputs and node not in store_inputs for node in PER_TICK)
    assert all(node in store_inputs and node not in catalog_inputs for node in BAR_LEVEL)
    assert "normalizer" in catalog_inputs and "normalizer" not in store_inputs  # every tick: catalog
    assert summary["quarantined_total"] == 0
    assert read_table(url, "tick_data").num_rows == 0
    sql_names = set(read_table(url, "signals").column("name").to_pylist())
    assert sql_names == {"tick_rate_zscore_1s_60", "rsi_14_1m", "bollinger_pctb_20_2_1m"}
    written = summary["nodes"]["catalog"]["shards"][0]["operator"]["rows_written"]
    per_tick = sum(summary["nodes"][node]["rows_out"]["signals"] for node in PER_TICK)
    assert written == {"ticks": summary["ticks_accepted"], "signals": per_tick}


def test_amzn_spread_in_the_table_equals_pandas_from_the_raw_lobster_files(job):
    tmp, url, _ = job
    raw = raw_lobster()
    mid = (raw["bid"] + raw["ask"]) / 2
    expected = ((raw["ask"] - raw["bid"]) / mid * 10_000).groupby(raw["ts"]).last()
    stored = stored_signal(tmp, url, "AMZN", "spread_bps")
    assert (stored["provider"] == "lobster").all()
    np.testing.assert_array_equal(stored.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_allclose(stored["value"].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)


def test_amzn_vwap_deviation_in_the_table_equals_pandas_from_the_raw_lobster_files(job):
    tmp, url, _ = job
    trades = lobster_trades()
    vwap = (trades["price"] * trades["size"]).cumsum() / trades["size"].cumsum()
    expected = ((trades["price"] - vwap) / vwap * 10_000).groupby(trades["ts"]).last()
    stored = stored_signal(tmp, url, "AMZN", "vwap_deviation_bps")
    np.testing.assert_array_equal(stored.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_allclose(stored["value"].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)
    assert json.loads(stored["metadata"].iloc[0])["session"] == {"tz": "America/New_York", "open": "09:30", "close": "16:00"}


def test_btcusdt_vwap_deviation_follows_the_utc_day_and_has_no_spread(job):
    tmp, url, _ = job
    trades = tardis_trades()  # one UTC day (2020-02-22 00:00 to 02:05): one session
    vwap = (trades["price"] * trades["size"]).cumsum() / trades["size"].cumsum()
    expected = ((trades["price"] - vwap) / vwap * 10_000).groupby(trades["ts"]).last()
    stored = stored_signal(tmp, url, "BTCUSDT", "vwap_deviation_bps")
    assert (stored["provider"] == "binance-futures").all()
    np.testing.assert_array_equal(stored.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_allclose(stored["value"].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0)
    assert stored_signal(tmp, url, "BTCUSDT", "spread_bps").empty  # the job replays Tardis trades only: no book


@pytest.mark.parametrize("symbol", ["AMZN", "BTCUSDT"])
def test_rsi_and_bollinger_match_ta_on_the_stored_confirmed_bars(job, symbol):
    tmp, url, _ = job
    bars = read_bars(url, symbol=symbol, timeframe="1m")
    close = bars.set_index("ts")["close"]
    rsi = ta.momentum.RSIIndicator(close, window=14).rsi().dropna()
    stored_rsi = stored_signal(tmp, url, symbol, "rsi_14_1m")
    assert list(stored_rsi.index) == list(rsi.index) and len(rsi) > 100
    np.testing.assert_allclose(stored_rsi["value"].to_numpy(), rsi.to_numpy(), rtol=1e-9, atol=0)
    pctb = ta.volatility.BollingerBands(close, window=20, window_dev=2).bollinger_pband().dropna()
    stored_pctb = stored_signal(tmp, url, symbol, "bollinger_pctb_20_2_1m")
    assert list(stored_pctb.index) == list(pctb.index)
    np.testing.assert_allclose(stored_pctb["value"].to_numpy(), pctb.to_numpy(), rtol=0, atol=1e-9)
    assert (stored_rsi["provider"] == "tickgraph").all()


def test_every_signal_row_is_one_per_key_and_typed(job):
    tmp, url, _ = job
    table = reader(tmp, url).signals()
    frame = table.to_pandas()
    assert sorted(frame["name"].unique()) == sorted(NAMES)
    assert not frame.duplicated(["provider", "symbol", "ts", "name"]).any()
    assert np.isfinite(frame["value"]).all()
    in_sql = frame["name"].isin(["tick_rate_zscore_1s_60", "rsi_14_1m", "bollinger_pctb_20_2_1m"])
    assert (frame.loc[in_sql, "created_at"] > 1_600_000_000 * 10**9).all()  # a wall-clock ns time
    assert frame.loc[~in_sql, "created_at"].isna().all()  # catalog rows: no insert time
    assert table.schema.field("ts").type == "int64"


def test_running_the_job_again_leaves_the_catalog_byte_identical_and_identical_rows(job):
    tmp, url, _ = job
    before = {name: read_table(url, name) for name in ("signals", "bars_ohlcv", "tick_data", "quarantine")}
    files = catalog_digest(tmp / "catalog")
    assert len(files) >= 20 and all(name.endswith(".parquet") for name in files)
    _, summary = run_job(tmp)  # same database, same catalog
    for name, table in before.items():
        assert read_table(url, name).equals(table), name  # signals.created_at included
    assert catalog_digest(tmp / "catalog") == files  # the same file names, the same bytes
    operator = summary["nodes"]["catalog"]["shards"][0]["operator"]
    assert operator["files_written"] == 0 and sum(operator["rows_already_stored"].values()) > 130_000


@pytest.mark.ray
def test_on_ray_with_two_signal_shards_the_signals_equal_the_in_process_run(ray_session, job, tmp_path):
    # spread and RSI in two keyed shards each (separate actors); the rest chained
    tmp, url, _ = job
    other, summary = run_job(tmp_path, "ray", "ray.db", "signals_spread_bps.parallelism=2", "signals_rsi.parallelism=2")
    ours, theirs = reader(tmp_path, other).signals(), reader(tmp, url).signals()
    assert ours.drop_columns("created_at").equals(theirs.drop_columns("created_at"))
    assert catalog_digest(tmp_path / "catalog") == catalog_digest(tmp / "catalog")  # Ray, sharded: same bytes
    assert read_table(other, "bars_ohlcv").equals(read_table(url, "bars_ohlcv"))
    assert summary["nodes"]["signals_rsi"]["shards"][1]["rows_in"] > 0
