"""Late ticks on real data, through the in-process graph replay -> normalizer -> bars.

Input: every AMZN (LOBSTER) and BTCUSDT (Tardis trades + quotes) tick, written as one
canonical Parquet file in a chosen row order:

* shuffled within the allowed lateness ``L``: each row is moved later by a random amount
  below ``L`` (rows sorted by ``ts + U[0, L)``), so no row follows a row more than ``L``
  newer than itself -> no late tick, the confirmed bars equal pandas' bars of all trades;
* with injected late ticks: a few real trades and quotes are delivered ``DELAY`` (5 min)
  after their time, far beyond ``L`` -> late ticks, handled by the graph's late policy:

      stream:  ... t  t+1s ... t+5min  [tick of time t]  ...
      watermark after t+5min - L  >  t   ->  the tick is late

  ``drop``: quarantined with reason ``late`` by the normalizer, in no bar; every tick read
  is accounted for (read = accepted + quarantined). ``amend``: applied; the confirmed bars
  it changes are re-emitted as ``corrected`` and the last row of every bar equals pandas'
  bar of *all* trades.

Expected bars come from ``tests/reference.py`` (pandas groupby on the raw rows).
"""

from __future__ import annotations

import textwrap
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from graph.build import build_graph
from graph.messages import Data, Watermark
from graph.runtime import Route
from graph.schemas import BAR
from graph.spec import load_graph
from graph.summary import build_summary
from graph.timeframes import TIMEFRAMES
from tests.reference import assert_bars_match, reference_bars
from tests.unit.test_bars import amzn_ticks, btc_ticks

S = 1_000_000_000
LATENESS_MS = 2_000
DELAY = 300 * S
AMZN_SESSION = ("America/New_York", "09:30", "16:00")
COLUMNS = ["symbol", "ts", "price", "size", "side", "bid", "ask", "bid_size", "ask_size", "provider", "seq"]


@cache
def all_ticks() -> pd.DataFrame:
    """AMZN then BTCUSDT ticks (trades and quotes), each in file order, with an ``order`` column."""
    frame = pd.concat([amzn_ticks(), btc_ticks()], ignore_index=True)[COLUMNS]
    return frame.assign(order=np.arange(len(frame)))


def trades_frame(ticks: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """One symbol's trades as (ts, price, size) in exchange order (ts, then file order)."""
    trades = ticks[(ticks["symbol"] == symbol) & ticks["price"].notna()]
    return trades.sort_values(["ts", "order"], kind="stable")[["ts", "price", "size"]].reset_index(drop=True)


def write(path: Path, ticks: pd.DataFrame) -> Path:
    ticks[COLUMNS].to_parquet(path, index=False)
    return path


def shuffled_within(lateness_ns: int, seed: int = 7) -> pd.DataFrame:
    """Rows sorted by ts + U[0, lateness): every row's predecessors are at most ``lateness`` newer."""
    ticks = all_ticks()
    jitter = np.random.default_rng(seed).integers(0, lateness_ns, len(ticks))
    return ticks.iloc[np.lexsort((ticks["order"], ticks["ts"].to_numpy() + jitter))]


def with_late_ticks() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows in delivery order, the delayed rows): some mid-session trades and quotes arrive 5 min late."""
    ticks = all_ticks()
    amzn, btc = ticks["symbol"] == "AMZN", ticks["symbol"] == "BTCUSDT"
    trade = ticks["price"].notna()
    midday = (ticks["ts"] > pd.Timestamp("2012-06-21 15:00", tz="UTC").value) & (
        ticks["ts"] < pd.Timestamp("2012-06-21 19:00", tz="UTC").value
    )
    btc_window = ticks["ts"] < pd.Timestamp("2020-02-22 01:50", tz="UTC").value
    picks = np.zeros(len(ticks), dtype=bool)
    for mask, step in ((amzn & trade & midday, 500), (amzn & ~trade & midday, 3_000), (btc & trade & btc_window, 400)):
        picks[np.flatnonzero(mask)[::step]] = True
    delivery = ticks["ts"].to_numpy() + np.where(picks, DELAY, 0)
    order = np.lexsort((ticks["order"], delivery))
    return ticks.iloc[order], ticks[picks]


class Collector:
    """Stands in for a downstream node: records every BAR / QUARANTINE batch and watermark."""

    def __init__(self) -> None:
        self.messages: list[tuple] = []

    def push(self, channel: str, messages: list[tuple]) -> None:
        self.messages.extend(messages)

    def frame(self, stream: str) -> pd.DataFrame:
        batches = [m.batch for m in self.messages if isinstance(m, Data) and m.stream == stream]
        return pa.Table.from_batches(batches).to_pandas() if batches else pd.DataFrame()


def tap(run, node_id: str, streams: set[str]) -> Collector:
    """Route ``streams`` of node ``node_id`` (shard 0) also to a Collector, through the real host."""
    collector = Collector()
    host = run.hosts[(node_id, 0)]
    inner = host.transport

    class Tap:
        def send(self, target, shard, channel, messages):
            (collector.push if target == "collect" else lambda *a: inner.send(target, shard, *a))(channel, messages)

        def drain(self):
            inner.drain()

    host.routes.append(Route(target="collect", streams=frozenset(streams), key=None, num_shards=1))
    host.transport = Tap()
    return collector


def run_graph(tmp_path: Path, data: Path, policy: str, lateness_ms: int = LATENESS_MS, forming_ms: int = 0):
    """Run replay -> normalizer -> bars in-process.

    Returns:
        (Collector of the bar engine's ``bars`` and ``quarantine`` streams, the run summary,
        Collector of the normalizer's ``quarantine`` stream).
    """
    graph = tmp_path / f"late_{policy}_{lateness_ms}.yaml"
    graph.write_text(
        textwrap.dedent(f"""
        name: late_ticks
        event_time: {{allowed_lateness_ms: {lateness_ms}, late_policy: {policy}, forming_interval_ms: {forming_ms}}}
        nodes:
          - id: source
            kind: replay
            params:
              files: [{{format: canonical, path: {data}}}]
              batch_interval_ms: 60000
          - id: normalizer
            kind: normalizer
            inputs: [source]
          - id: bars
            kind: bars
            inputs: [normalizer]
            params:
              sessions: {{AMZN: {{tz: America/New_York, open: "09:30", close: "16:00"}}}}
        """)
    )
    loaded = load_graph(graph, env={})
    run = build_graph(loaded, backend="local")
    collector = tap(run, "bars", {"bars", "quarantine"})
    rejected = tap(run, "normalizer", {"quarantine"})
    summary = build_summary(loaded, run.run())
    return collector, summary, rejected


def assert_every_bar_matches(bars: pd.DataFrame, trades_by_symbol: dict[str, pd.DataFrame]) -> None:
    for symbol, trades in trades_by_symbol.items():
        for timeframe in TIMEFRAMES:
            session = AMZN_SESSION if symbol == "AMZN" else None
            got = bars[(bars["symbol"] == symbol) & (bars["timeframe"] == timeframe)]
            assert_bars_match(got, reference_bars(trades, timeframe, session), f"{symbol} {timeframe}")


def final_rows(bars: pd.DataFrame) -> pd.DataFrame:
    """The last confirmed-or-corrected row of every bar (what an upserting store ends with)."""
    done = bars[bars["status"] != "forming"]
    return done.drop_duplicates(["symbol", "timeframe", "ts"], keep="last")


# ----------------------------------------------------------------------------- within the lateness


def test_shuffling_within_the_allowed_lateness_gives_the_bars_of_sorted_input(tmp_path):
    shuffled = shuffled_within(LATENESS_MS * 1_000_000)
    ts = shuffled["ts"].to_numpy()
    assert (np.diff(ts) < 0).sum() > 10_000, "the shuffle really reorders the rows"
    assert (np.maximum.accumulate(ts) - ts).max() < LATENESS_MS * 1_000_000
    data = write(tmp_path / "shuffled.parquet", shuffled)
    collector, summary, _ = run_graph(tmp_path, data, "drop")
    bars = collector.frame("bars")
    confirmed = bars[bars["status"] == "confirmed"]
    assert not confirmed.duplicated(["symbol", "timeframe", "ts"]).any()
    ticks = all_ticks()
    assert_every_bar_matches(confirmed, {s: trades_frame(ticks, s) for s in ("AMZN", "BTCUSDT")})
    assert summary["quarantined"] == {} and summary["ticks_read"] == summary["ticks_accepted"] == len(ticks)
    assert (bars["status"] == "corrected").sum() == 0


def test_the_same_shuffle_without_allowed_lateness_makes_late_ticks(tmp_path):
    # control: the test above passes because of the allowed lateness, not by luck
    data = write(tmp_path / "shuffled.parquet", shuffled_within(LATENESS_MS * 1_000_000))
    _, summary, _ = run_graph(tmp_path, data, "drop", lateness_ms=0)
    assert summary["quarantined"]["late"] > 100
    assert summary["ticks_read"] == summary["ticks_accepted"] + summary["quarantined_total"]


# ----------------------------------------------------------------------------- beyond it


@pytest.fixture(scope="module")
def late_input(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    delivered, late = with_late_ticks()
    assert len(late) >= 40 and late["price"].isna().sum() > 2  # trades and quotes
    return write(tmp_path_factory.mktemp("late") / "late.parquet", delivered), late


def test_drop_quarantines_each_late_tick_and_loses_nothing(tmp_path, late_input):
    data, late = late_input
    collector, summary, _ = run_graph(tmp_path, data, "drop")
    ticks = all_ticks()
    # counts add up at the normalizer: read = accepted + quarantined, quarantined = the late ticks
    assert summary["ticks_read"] == len(ticks)
    assert summary["quarantined"] == {"late": len(late)}
    assert summary["ticks_read"] == summary["ticks_accepted"] + summary["quarantined_total"]
    normalizer = summary["nodes"]["normalizer"]["shards"][0]["operator"]
    assert normalizer["quarantined"]["late"] == len(late) and normalizer["late_accepted"] == 0
    bars_metrics = summary["nodes"]["bars"]["shards"][0]["operator"]
    late_trades = late["price"].notna().sum()
    assert bars_metrics["late"] == 0 and bars_metrics["trades"] == ticks["price"].notna().sum() - late_trades
    # the late ticks are in no bar: bars equal pandas' bars of all trades but them
    kept = ticks.drop(index=late.index)
    bars = collector.frame("bars")
    confirmed = bars[bars["status"] == "confirmed"]
    assert_every_bar_matches(confirmed, {s: trades_frame(kept, s) for s in ("AMZN", "BTCUSDT")})
    assert (bars["status"] == "corrected").sum() == 0


def test_drop_quarantine_rows_name_each_late_tick(tmp_path, late_input):
    data, late = late_input
    collector, _, rejected = run_graph(tmp_path, data, "drop")
    assert collector.frame("quarantine").empty  # nothing late reaches the bar engine
    rows = rejected.frame("quarantine")
    assert set(rows["reason"]) == {"late"}
    assert sorted(zip(rows["symbol"], rows["row"], rows["ts"])) == sorted(zip(late["symbol"], late["seq"], late["ts"]))
    assert rows["detail"].str.contains("is older than its watermark").all()
    assert set(rows["source"]) == {"normalizer/lobster/AMZN", "normalizer/tardis/BTCUSDT"}


def test_amend_corrects_confirmed_bars_to_the_bars_of_all_trades(tmp_path, late_input):
    data, late = late_input
    collector, summary, _ = run_graph(tmp_path, data, "amend")
    ticks = all_ticks()
    assert summary["quarantined"] == {}
    assert summary["ticks_read"] == summary["ticks_accepted"] == len(ticks)
    normalizer = summary["nodes"]["normalizer"]["shards"][0]["operator"]
    assert normalizer["late_accepted"] == len(late)
    bars = collector.frame("bars")
    corrected = bars[bars["status"] == "corrected"]
    assert len(corrected) > 0
    # every correction re-emits a bar that was confirmed before it
    confirmed_before = set()
    for _, row in bars.iterrows():
        key = (row["symbol"], row["timeframe"], row["ts"])
        if row["status"] == "confirmed":
            confirmed_before.add(key)
        elif row["status"] == "corrected":
            assert key in confirmed_before
    # the last row of every bar is pandas' bar of every trade, late ones included
    assert_every_bar_matches(final_rows(bars), {s: trades_frame(ticks, s) for s in ("AMZN", "BTCUSDT")})
    bars_metrics = summary["nodes"]["bars"]["shards"][0]["operator"]
    assert bars_metrics["late"] == late["price"].notna().sum() and bars_metrics["late_quarantined"] == 0
    corrections = sum(n for per in bars_metrics["bars_corrected"].values() for n in per.values())
    assert corrections == len(corrected)
    assert BAR.names == list(bars.columns)


def test_forming_rows_are_at_most_one_per_bar_per_interval_of_event_time(tmp_path, late_input):
    data, _ = late_input
    collector, _, _ = run_graph(tmp_path, data, "drop", forming_ms=300_000)
    # the bar engine emits a watermark's forming rows, then the host forwards that watermark
    pending, seen = [], {}
    for message in collector.messages:
        if isinstance(message, Data) and message.stream == "bars":
            frame = message.batch.to_pandas()
            pending += [tuple(k) for k in frame[frame["status"] == "forming"][["symbol", "timeframe", "ts"]].values]
        elif isinstance(message, Watermark):
            for key in pending:
                seen.setdefault(key, []).append(message.ts)
            pending = []
    assert not pending and len(seen) > 100
    assert max(len(marks) for marks in seen.values()) > 5  # long bars (1h, 1d) update repeatedly
    for key, marks in seen.items():
        # forming rows of one bar go out at watermarks >= 5 min of event time apart
        assert (np.diff(marks) >= 300 * S).all(), key
