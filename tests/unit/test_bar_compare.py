"""``python run.py parity bars``: stored bars of a real run vs reference exports.

The references are the independent pandas bars of tests/reference.py written in the
layouts of charting platforms (capitalised columns, unix-second or ISO times, dates for
daily bars); the local side is what a run of config/replay.yaml stored (SQL export CSV
and the Parquet sink's folder).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from commands.parity import main
from db.read import read_bars
from graph.build import build_graph
from graph.spec import load_graph
from parity.bars import BarCompareError, parse_times
from tests.reference import lobster_trades, reference_bars, tardis_trades


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One in-process run of replay.yaml: (SQL url, Parquet folder)."""
    tmp = tmp_path_factory.mktemp("bars_run")
    url = f"sqlite:///{tmp / 'bars.db'}"
    loaded = load_graph("replay.yaml", [f"store.url={url}", f"parquet.path={tmp / 'parquet'}", f"catalog.path={tmp / 'catalog'}"], env={})
    build_graph(loaded, backend="local").run()
    return url, tmp / "parquet"


def charting_csv(path, bars: pd.DataFrame, time) -> None:
    """Write bars (index ts, int ns) as a charting platform exports them."""
    frame = pd.DataFrame({"time": time(bars.index.to_numpy()), "Open": bars["open"].to_numpy(),
                          "High": bars["high"].to_numpy(), "Low": bars["low"].to_numpy(),
                          "Close": bars["close"].to_numpy(), "Volume": bars["volume"].to_numpy()})  # fmt: skip
    frame.to_csv(path, index=False)


def unix_seconds(ts):
    return ts // 1_000_000_000


@pytest.fixture
def btc_files(tmp_path, stored):
    url, _ = stored
    reference = tmp_path / "BINANCE_BTCUSDT_1.csv"
    charting_csv(reference, reference_bars(tardis_trades(), "1m"), unix_seconds)
    local = tmp_path / "local_btc_1m.csv"
    read_bars(url, symbol="BTCUSDT", timeframe="1m").to_csv(local, index=False)
    return local, reference


def test_stored_bars_match_the_reference(btc_files, tmp_path, capsys):
    local, reference = btc_files
    diff = tmp_path / "diff.json"
    code = main(["bars", "--local", str(local), "--reference", str(reference), "--price-tolerance", "1e-9",
                 "--volume-tolerance", "1e-9", "--output", str(diff)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(diff.read_text())
    n = len(reference_bars(tardis_trades(), "1m"))
    assert report["counts"] == {"local": n, "reference": n, "matched": n, "equal": n, "differing": 0, "missing": 0, "extra": 0}
    assert report["columns"]["reference"] == {"time": "time", "open": "Open", "high": "High", "low": "Low",
                                              "close": "Close", "volume": "Volume"}  # fmt: skip
    assert "BTCUSDT 1m" in out and "WITHIN TOLERANCE" in out


def test_a_changed_close_and_a_deleted_bar_are_reported(btc_files, tmp_path, capsys):
    local, reference = btc_files
    ref = pd.read_csv(reference)
    old_close = float(ref.loc[10, "Close"])
    ref.loc[10, "Close"] = old_close + 2.5
    ref.to_csv(reference, index=False)
    bars = pd.read_csv(local)
    deleted = bars.iloc[20]
    bars.drop(index=20).to_csv(local, index=False)
    diff = tmp_path / "diff.json"
    code = main(["bars", "--local", str(local), "--reference", str(reference), "--price-tolerance", "0.01",
                 "--volume-tolerance", "1e-6", "--output", str(diff)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    report = json.loads(diff.read_text())
    assert report["counts"]["differing"] == 1 and report["counts"]["missing"] == 1 and report["counts"]["extra"] == 0
    (changed,) = report["differing"]
    assert changed["ts"] == int(ref.loc[10, "time"]) * 1_000_000_000
    assert changed["fields"] == {"close": {"local": old_close, "reference": old_close + 2.5, "difference": pytest.approx(-2.5)}}
    (missing,) = report["missing"]
    assert missing["ts"] == int(deleted["ts"]) and missing["close"] == float(deleted["close"])
    assert "1 differing (close), 1 missing" in out and "OUTSIDE TOLERANCE" in out


def test_a_relative_tolerance_accepts_a_small_difference(btc_files, capsys):
    local, reference = btc_files
    ref = pd.read_csv(reference)
    ref.loc[3, "Close"] *= 1.001  # +0.1 %
    ref.to_csv(reference, index=False)
    args = ["bars", "--local", str(local), "--reference", str(reference), "--volume-tolerance", "1e-6"]
    assert main([*args, "--price-tolerance", "0.2%"]) == 0
    assert main([*args, "--price-tolerance", "0.05%"]) == 1
    capsys.readouterr()


def test_the_parquet_sink_folder_with_filters_and_iso_times(stored, tmp_path, capsys):
    _, parquet = stored
    reference = tmp_path / "amzn_5m.csv"
    charting_csv(reference, reference_bars(lobster_trades(), "5m"),
                 lambda ts: pd.to_datetime(ts, utc=True).tz_convert("America/New_York").strftime("%Y-%m-%dT%H:%M:%S%z"))
    args = ["bars", "--local", str(parquet), "--reference", str(reference), "--volume-tolerance", "1e-6",
            "--price-tolerance", "1e-9"]  # fmt: skip
    assert main([*args, "--symbol", "AMZN", "--timeframe", "5m"]) == 0, capsys.readouterr()
    assert main(args) == 2
    assert "bars of several symbols (AMZN, BTCUSDT); choose one with --symbol" in capsys.readouterr().err


def test_daily_bars_are_matched_by_date(stored, tmp_path, capsys):
    _, parquet = stored
    daily = reference_bars(lobster_trades(), "1d", ("America/New_York", "09:30", "16:00"))
    reference = tmp_path / "amzn_1d.csv"
    charting_csv(reference, daily, lambda ts: pd.to_datetime(ts, utc=True).strftime("%Y-%m-%d"))
    code = main(["bars", "--local", str(parquet), "--symbol", "AMZN", "--timeframe", "1d", "--reference",
                 str(reference), "--tz", "America/New_York", "--volume-tolerance", "1e-6", "--price-tolerance", "1e-9"])
    assert code == 0, capsys.readouterr()


def test_every_time_format_gives_the_same_instant():
    expected = 1_340_285_400_500_000_000  # 2012-06-21 13:30:00.5 UTC
    for text in ["2012-06-21T13:30:00.5Z", "2012-06-21T09:30:00.5-04:00", "2012-06-21 13:30:00.500",
                 "1340285400.5", "1340285400500", "1340285400500000", "1340285400500000000"]:  # fmt: skip
        ts, date_only = parse_times(pd.Series([text]), "t.csv")
        assert (ts.tolist(), date_only) == ([expected], False), text
    ts, _ = parse_times(pd.Series(["2012-06-21 09:30:00.5"]), "t.csv", tz="America/New_York")
    assert ts.tolist() == [expected]
    ts, _ = parse_times(pd.Series(["1340285400"]), "t.csv", unit="s")
    assert ts.tolist() == [expected - 500_000_000]
    ts, date_only = parse_times(pd.Series(["2012-06-21"]), "t.csv")
    assert date_only and ts.tolist() == [1_340_236_800_000_000_000]


@pytest.mark.parametrize(
    "csv, message",
    [
        ("when,open,high,low,close,volume\n1,1,1,1,1,1\n", r"no column for time \(ts / time / timestamp"),
        ("time,open,high,low,close,volume\n2012-13-45T00:00:00Z,1,1,1,1,1\n", "data row 1: time '2012-13-45T00:00:00Z' is not ISO-8601"),
        ("time,open,high,low,close,volume\n1340285400,1,x,1,1,1\n", "data row 1: high 'x' is not a number"),
    ],
)
def test_bad_reference_files_give_clear_errors(btc_files, tmp_path, capsys, csv, message):
    local, _ = btc_files
    bad = tmp_path / "bad.csv"
    bad.write_text(csv)
    assert main(["bars", "--local", str(local), "--reference", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err
    import re

    assert re.search(message, err), err


def test_bad_arguments_give_clear_errors(btc_files, tmp_path, capsys):
    local, reference = btc_files
    assert main(["bars", "--local", str(local), "--reference", str(reference), "--price-tolerance", "-1"]) == 2
    assert "--price-tolerance '-1': expected a number >= 0" in capsys.readouterr().err
    assert main(["bars", "--local", str(tmp_path / "nope.csv"), "--reference", str(reference)]) == 2
    assert "nope.csv: no such file or folder" in capsys.readouterr().err
    assert main(["bars", "--local", str(local), "--reference", str(reference), "--tz", "Mars/Olympus"]) == 2
    assert "--tz 'Mars/Olympus' is not an IANA time zone" in capsys.readouterr().err
    assert main(["bars", "--reference", str(reference)]) == 2
    assert "the following arguments are required: --local" in capsys.readouterr().err
    with pytest.raises(BarCompareError, match="--time-unit s given but time 'x' is not a number"):
        parse_times(pd.Series(["x"]), "t.csv", unit="s")
    assert np.array_equal(parse_times(pd.Series(["1", "2"]), "t.csv", unit="ms")[0], [1_000_000, 2_000_000])
