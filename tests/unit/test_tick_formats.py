"""Format readers against the real fixtures (fixtures/README.md) and hand-built files.

Expectations come from the fixtures' reference aggregates and from independent parses of
the raw text (Python ``csv`` + ``decimal``), never from the readers themselves.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors import tick_formats as formats
from graph.schemas import QUARANTINE_ROW, TICK

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LOBSTER = FIXTURES / "lobster_amzn_l1"
MESSAGES = LOBSTER / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
BOOKS = LOBSTER / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
TARDIS = FIXTURES / "tardis_binance_futures_btcusdt"
UTC = dt.timezone.utc
NS = 1_000_000_000
EDT_MIDNIGHT_NS = int(dt.datetime(2012, 6, 21, 4, tzinfo=UTC).timestamp()) * NS  # 00:00 EDT = 04:00 UTC


def drain(chunks) -> tuple[pa.Table, pa.Table]:
    """All ticks and quarantine rows of a reader, as tables (schemas checked)."""
    ticks, bad = [], []
    for chunk in chunks:
        assert chunk.ticks.schema.equals(TICK)
        ticks.append(chunk.ticks)
        if chunk.quarantine is not None:
            assert chunk.quarantine.schema.equals(QUARANTINE_ROW)
            bad.append(chunk.quarantine)
    return pa.Table.from_batches(ticks, schema=TICK), pa.Table.from_batches(bad, schema=QUARANTINE_ROW)


def read_lobster(message=MESSAGES, book=BOOKS, **kwargs):
    midnight = formats.lobster_midnight_ns("2012-06-21", "America/New_York")
    return drain(formats.read_lobster(message, book, "AMZN", midnight, **kwargs))


def raw_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def lobster() -> pd.DataFrame:
    ticks, bad = read_lobster()
    assert bad.num_rows == 0
    return ticks.to_pandas()


# ----------------------------------------------------------------------------- LOBSTER


def test_lobster_trades_match_reference_aggregates(lobster):
    trades = lobster[lobster.price.notna()]
    assert len(lobster) == 57_515
    assert len(trades) == 11_419
    assert trades["size"].sum() == 810_755
    assert round((trades.price * trades["size"]).sum() / trades["size"].sum(), 4) == 222.6348
    assert (trades.price.min(), trades.price.max()) == (220.51, 226.03)
    first = trades.iloc[0]
    first_ns = int(dt.datetime(2012, 6, 21, 13, 30, tzinfo=UTC).timestamp()) * NS + 17_459_617
    assert (first.price, int(first.ts)) == (223.82, first_ns)


def test_lobster_quotes_carry_the_book_and_no_trade(lobster):
    quotes = lobster[lobster.price.isna()]
    assert len(quotes) == 57_515 - 11_419
    assert quotes["size"].isna().all() and quotes.side.isna().all()
    book = pd.read_csv(BOOKS, header=None, names=["ask", "ask_size", "bid", "bid_size"])
    np.testing.assert_array_equal(lobster.ask.to_numpy(), book.ask.to_numpy() / 10_000)
    np.testing.assert_array_equal(lobster.bid.to_numpy(), book.bid.to_numpy() / 10_000)
    np.testing.assert_array_equal(lobster.bid_size.to_numpy(), book.bid_size.to_numpy())
    assert (lobster.bid < lobster.ask).all()


def test_lobster_every_timestamp_is_exact(lobster):
    raw = raw_rows(MESSAGES)
    decimals = {len(row[0].partition(".")[2]) for row in raw}
    assert decimals == {5, 6, 7, 8, 9}  # trailing zeros stripped: widths vary
    expected = [EDT_MIDNIGHT_NS + int(Decimal(row[0]) * NS) for row in raw]
    assert lobster.ts.tolist() == expected


def test_lobster_side_seq_and_constants(lobster):
    raw = raw_rows(MESSAGES)
    is_trade = np.array([row[1] in ("4", "5") for row in raw])
    aggressor = ["buy" if row[5] == "-1" else "sell" for row in raw]
    assert lobster.side[is_trade].tolist() == [s for s, t in zip(aggressor, is_trade) if t]
    assert lobster.seq.tolist() == list(range(57_515))
    assert set(lobster.symbol) == {"AMZN"} and set(lobster.provider) == {"lobster"}
    assert set(lobster.origin) == {"replay"}


def test_lobster_keeps_the_48_duplicate_hidden_executions(lobster):
    raw = pd.read_csv(MESSAGES, header=None, dtype=str)
    repeated = raw.duplicated(keep=False)
    assert raw.duplicated().sum() == 48 and set(raw[repeated][1]) == {"5"}
    kept = lobster.set_index("seq").loc[raw.index[repeated]]
    assert len(kept) == repeated.sum() and kept.price.notna().all()
    columns = ["ts", "price", "size", "side", "bid", "ask"]
    assert kept.duplicated(columns).sum() == 48


def test_lobster_empty_levels_are_null(tmp_path):
    message = tmp_path / "m.csv"
    book = tmp_path / "b.csv"
    message.write_text("34200.5,1,7,100,2238100,1\n34201.25,4,7,100,2238100,1\n")
    book.write_text("9999999999,0,2238100,100\n2239500,100,-9999999999,0\n")
    ticks, bad = read_lobster(message, book)
    rows = ticks.to_pylist()
    assert bad.num_rows == 0
    book = [(r["ask"], r["ask_size"], r["bid"], r["bid_size"]) for r in rows]
    assert book == [(None, None, 223.81, 100), (223.95, 100, None, None)]
    assert (rows[1]["price"], rows[1]["size"], rows[1]["side"]) == (223.81, 100, "sell")
    assert rows[0]["ts"] == EDT_MIDNIGHT_NS + 34_200_500_000_000


def test_lobster_reads_deeper_orderbooks(tmp_path):
    message = tmp_path / "m.csv"
    book = tmp_path / "b.csv"
    message.write_text("34200.1,1,7,100,2238100,1\n")
    book.write_text("2239500,100,2238100,100,2239600,5,2238000,7\n")  # 2 levels
    ticks, _ = read_lobster(message, book)
    assert ticks.to_pylist()[0]["ask"] == 223.95


def test_lobster_row_count_mismatch_names_both_files(tmp_path):
    book = tmp_path / "book.csv"
    book.write_text("".join(BOOKS.read_text().splitlines(keepends=True)[:-1]))
    expected = r"message file .*message_1\.csv has 57515 rows, orderbook file .*book\.csv has 57514"
    with pytest.raises(ValueError, match=expected):
        read_lobster(MESSAGES, book)


@pytest.mark.parametrize(
    ("day", "tz", "utc_hour"),
    [
        ("2012-06-21", "America/New_York", 4),  # EDT
        ("2012-01-03", "America/New_York", 5),  # EST
        ("2021-03-14", "America/New_York", 5),  # clocks go forward at 02:00: midnight is still EST
        ("2021-03-28", "Europe/London", 0),
    ],
)
def test_local_midnight_follows_daylight_saving(day, tz, utc_hour):
    y, m, d = map(int, day.split("-"))
    expected = int(dt.datetime(y, m, d, utc_hour, tzinfo=UTC).timestamp()) * NS
    assert formats.lobster_midnight_ns(day, tz) == expected


# ----------------------------------------------------------------------------- bad input


def inject(source: Path, target: Path, replace: dict[int, str]) -> list[str]:
    """Copy ``source`` to ``target`` with some lines (0-based) replaced; returns the new lines."""
    lines = source.read_text().splitlines()
    for index, text in replace.items():
        lines[index] = text
    target.write_text("\n".join(lines) + "\n")
    return lines


@pytest.mark.parametrize("block_bytes", [formats.BLOCK_BYTES, 1 << 16])  # fallback at start / mid-file
def test_lobster_malformed_rows_are_quarantined_and_the_rest_kept(tmp_path, block_bytes, lobster):
    message = tmp_path / "message.csv"
    lines = inject(MESSAGES, message, {30_000: "34713.5,4,0,100,abc,-1", 40_000: "34999.1,1,5,100,2238100"})
    ticks, bad = read_lobster(message, BOOKS, block_bytes=block_bytes)
    assert ticks.num_rows == 57_515 - 2
    quarantine = bad.to_pylist()
    assert [(q["row"], q["reason"], q["source"]) for q in quarantine] == [
        (30_000, "malformed_row", str(message)),
        (40_000, "malformed_row", str(message)),
    ]
    assert quarantine[0]["detail"] == "column 'price': 'abc' is not a number"
    assert quarantine[0]["raw"] == lines[30_000] and quarantine[1]["raw"] == lines[40_000]
    assert quarantine[0]["symbol"] == "AMZN" and quarantine[0]["ts"] == EDT_MIDNIGHT_NS + 34_713_500_000_000
    assert "expected 6 fields, got 5" in quarantine[1]["detail"]
    expected = lobster[~lobster.seq.isin([30_000, 40_000])].reset_index(drop=True)
    pd.testing.assert_frame_equal(ticks.to_pandas(), expected)


def test_lobster_unparseable_time_is_quarantined(tmp_path):
    message = tmp_path / "message.csv"
    inject(MESSAGES, message, {5: "34200.1234567891,1,5,100,2238100,1", 6: "noon,1,5,100,2238100,1"})
    ticks, bad = read_lobster(message, BOOKS)
    assert ticks.num_rows == 57_513
    details = bad.column("detail").to_pylist()
    assert details[0] == (
        "column 'time': '34200.1234567891' is not a decimal number of seconds with at most 9 decimals"
    )
    assert details[1].startswith("column 'time': 'noon'")


@pytest.mark.parametrize("block_bytes", [formats.BLOCK_BYTES, 4096])
def test_lobster_malformed_book_row_quarantines_its_pair_once(tmp_path, block_bytes, lobster):
    # One input row (message i + orderbook i), one outcome: the pair is one quarantine row
    # naming the orderbook file and row, and its message is not emitted without a book
    # (that made a 'malformed_row' and a 'bad_quote' of one input row).
    book = tmp_path / "book.csv"
    inject(BOOKS, book, {2: "2239500,x,2237500,100"})
    ticks, bad = read_lobster(MESSAGES, book, block_bytes=block_bytes)
    assert ticks.num_rows == 57_514 and bad.num_rows == 1
    assert ticks.num_rows + bad.num_rows == len(raw_rows(MESSAGES))
    assert bad.to_pylist()[0] | {"detail": None} == {
        "source": str(MESSAGES), "row": 2, "symbol": "AMZN", "ts": int(lobster["ts"][2]), "reason": "malformed_row",
        "detail": None, "raw": "2239500,x,2237500,100",
    }  # fmt: skip
    assert bad.column("detail")[0].as_py() == f"orderbook file {book} row 2: column 'ask_size_1': 'x' is not a number"
    assert 2 not in ticks.column("seq").to_pylist()
    expected = lobster.drop(index=2).reset_index(drop=True)
    pd.testing.assert_frame_equal(ticks.to_pandas(), expected)


def test_tardis_malformed_price_is_quarantined(tmp_path):
    trades = tmp_path / "trades.csv"
    line = "binance-futures,BTCUSDT,1582329603000000,1,42377954,buy,9682x,1"
    inject(TARDIS / "trades.csv", trades, {11: line})  # line 11 = data row 10 (after the header)
    ticks, bad = drain(formats.read_tardis_trades(trades))
    assert ticks.num_rows == 9_998
    (q,) = bad.to_pylist()
    assert (q["row"], q["detail"], q["raw"]) == (10, "column 'price': '9682x' is not a number", line)
    assert (q["symbol"], q["ts"]) == ("BTCUSDT", 1_582_329_603_000_000_000)
    assert 42_377_954 not in ticks.column("seq").to_pylist()


# ----------------------------------------------------------------------------- Tardis


def test_tardis_trades_match_reference_aggregates():
    ticks, bad = drain(formats.read_tardis_trades(TARDIS / "trades.csv"))
    raw = raw_rows(TARDIS / "trades.csv")[1:]
    t = ticks.to_pandas()
    assert bad.num_rows == 0 and len(t) == 9_999
    assert math.isclose(t["size"].sum(), 4_024.301, abs_tol=1e-6)
    assert round((t.price * t["size"]).sum() / t["size"].sum(), 4) == 9683.3552
    assert t.seq.tolist() == list(range(42_377_944, 42_387_943))
    assert t.side.tolist() == [row[5] for row in raw]
    assert t.ts.tolist() == [int(row[2]) * 1_000 for row in raw]
    assert set(t.provider) == {"binance-futures"} and set(t.symbol) == {"BTCUSDT"}
    assert t.bid.isna().all() and t.ask.isna().all()


def test_tardis_quotes_read_ask_first_columns():
    ticks, bad = drain(formats.read_tardis_quotes(TARDIS / "quotes.csv"))
    raw = pd.read_csv(TARDIS / "quotes.csv")
    q = ticks.to_pandas()
    assert bad.num_rows == 0 and len(q) == 9_999
    assert (q.bid < q.ask).all() and q.price.isna().all() and q["size"].isna().all()
    np.testing.assert_array_equal(q.ask.to_numpy(), raw.ask_price.to_numpy())
    np.testing.assert_array_equal(q.bid_size.to_numpy(), raw.bid_amount.to_numpy())
    assert q.seq.tolist() == list(range(9_999))
    assert q.ts.tolist() == (raw.timestamp * 1_000).tolist()


def test_tardis_header_is_checked(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("exchange,symbol,timestamp\nx,y,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) id, side, price, amount"):
        drain(formats.read_tardis_trades(path))


# ----------------------------------------------------------------------------- canonical


def test_canonical_csv_with_iso_timestamps_nan_and_defaults(tmp_path):
    path = tmp_path / "ticks.csv"
    path.write_text(
        "ts,symbol,price,size\n"
        "2013-01-01 22:09:27+00:00,USD/JPY,86.655,1\n"
        "2013-01-01T17:09:27.123456789-05:00,USD/JPY,NaN,2\n"
        "2013-01-01T22:09:28Z,USD/JPY,,3\n"
    )
    ticks, bad = drain(formats.read_canonical(path, provider="truefx"))
    rows = ticks.to_pylist()
    base = int(dt.datetime(2013, 1, 1, 22, 9, 27, tzinfo=UTC).timestamp()) * NS
    assert bad.num_rows == 0
    assert [r["ts"] for r in rows] == [base, base + 123_456_789, base + NS]
    assert rows[0]["price"] == 86.655 and math.isnan(rows[1]["price"]) and rows[2]["price"] is None
    assert [r["seq"] for r in rows] == [0, 1, 2]
    assert {r["provider"] for r in rows} == {"truefx"} and rows[0]["bid"] is None and rows[0]["side"] is None


def test_canonical_csv_bad_values_are_quarantined(tmp_path):
    path = tmp_path / "ticks.csv"
    path.write_text(
        "symbol,ts,price,provider,seq\n"
        "A,100,1.5,p,7\n"
        "A,yesterday,1.5,p,8\n"
        ",101,1.5,p,9\n"
        "A,102,1.5,,\n"
        "A,103,1.5,p,10,extra\n"
    )
    ticks, bad = drain(formats.read_canonical(path, provider=None))
    assert ticks.to_pydict()["ts"] == [100]
    q = bad.to_pylist()
    reasons = [(r["row"], r["reason"]) for r in q]
    assert reasons == [(1, "malformed_row"), (2, "missing_value"), (3, "missing_value"), (4, "malformed_row")]
    assert q[0]["detail"] == "column 'ts': 'yesterday' is neither int64 ns nor ISO-8601 text with a UTC offset"
    assert q[1]["detail"] == "column 'symbol' is empty" and q[2]["detail"] == "column 'provider' is empty"
    assert q[3]["raw"] == "A,103,1.5,p,10,extra"


def test_canonical_parquet_timestamps_become_ns_utc(tmp_path):
    path = tmp_path / "ticks.parquet"
    moments = [
        dt.datetime(2020, 2, 22, 1, 2, 3, 456789, tzinfo=UTC),
        dt.datetime(2020, 2, 22, 1, 2, 4, tzinfo=UTC),
    ]
    table = pa.table({
        "symbol": pa.array(["X", "Y"]).dictionary_encode(),
        "ts": pa.array(moments, pa.timestamp("us", "Europe/Berlin")),
        "bid": [1.0, 2.0], "provider": ["v", None], "seq": pa.array([5, 6], pa.int32()),
    })  # fmt: skip
    pq.write_table(table, path)
    ticks, bad = drain(formats.read_canonical(path, provider="fallback"))
    rows = ticks.to_pylist()
    assert bad.num_rows == 0
    assert [r["ts"] for r in rows] == [int(m.timestamp() * 1e6) * 1_000 for m in moments]
    got = [(r["symbol"], r["provider"], r["seq"], r["bid"]) for r in rows]
    assert got == [("X", "v", 5, 1.0), ("Y", "fallback", 6, 2.0)]


def test_canonical_requires_symbol_ts_and_a_provider(tmp_path):
    path = tmp_path / "ticks.csv"
    path.write_text("symbol,ts\nA,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) provider"):
        drain(formats.read_canonical(path, provider=None))
    path.write_text("symbol,time\nA,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) ts"):
        drain(formats.read_canonical(path, provider="p"))


def test_vanished_file_raises_file_not_found(tmp_path):
    path = tmp_path / "trades.csv"
    shutil.copy(TARDIS / "trades.csv", path)
    chunks = formats.read_tardis_trades(path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="trades.csv"):
        drain(chunks)
