"""Any interleaving of real rows and garbage rows: exactly the real rows accepted, each garbage row
quarantined once, ``read = accepted + quarantined`` (hypothesis).

Real rows are the first 80 Tardis BTCUSDT trades of the fixture, in file order. Before any
of them hypothesis inserts garbage rows of every hostile kind: stray double quotes,
binary, wrong field counts, out-of-range numbers, timestamps in the wrong unit or outside
the plausible range. A garbage row that is still a tick carries the event time of the real
row before it, so it can never make a real row late. The file is replayed (random
``batch_rows`` and CSV block size) through the normalizer, in-process.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.file_replay import FileReplay
from actors.normalizer import Normalizer, NormalizerParams
from graph.operator import OperatorContext, Watermark
from tests.conftest import TARDIS_TRADES
from tests.hostile.cuts import TARDIS_HEADER, fixture_lines, tardis_field, write_lines

GOOD = fixture_lines(TARDIS_TRADES, 80, skip_header=True)


def _spoil(kind: str, line: bytes, draw) -> bytes:
    field = lambda name, value: tardis_field(line, name, value)  # noqa: E731
    if kind == "quote":
        name = draw(st.sampled_from(["side", "symbol", "price", "amount", "timestamp", "id"]))
        value = line.split(b",")[TARDIS_HEADER.split(b",").index(name.encode())]
        return field(name, draw(st.sampled_from([b'"' + value, value + b'"', b'"' + value + b'"']))) if name != "id" else field("side", b'"' + value)
    if kind == "binary":
        data = draw(st.binary(min_size=1, max_size=300).filter(lambda b: b"\n" not in b and b"\r" not in b))
        return data if data.count(b",") != 7 else data + b","
    if kind == "fields":
        parts = line.split(b",")
        drop = draw(st.booleans())
        return b",".join(parts[:-1] if drop else [*parts, b"extra"])
    if kind == "number":
        name, value = draw(st.sampled_from([
            ("price", b"-1"), ("price", b"0"), ("price", b"1e400"), ("price", b"nan"), ("price", b"9682x"),
            ("amount", b"-5"), ("amount", b"inf"), ("amount", b""), ("price", b""),
        ]))  # fmt: skip
        return field(name, value)
    us = int(line.split(b",")[2])
    value = draw(st.sampled_from([us * 1000, us // 1_000_000, 5_700_000_000_000_000, -us, 10**19]))
    return field("timestamp", str(value).encode())


@st.composite
def interleavings(draw) -> tuple[list[bytes], int]:
    """(file rows, number of garbage rows)."""
    rows, garbage = [], 0
    for line in GOOD:
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["quote", "binary", "fields", "number", "timestamp"]))
            previous = rows[-1] if rows and rows[-1] in GOOD else line
            rows.append(_spoil(kind, previous if kind != "timestamp" else line, draw))
            garbage += 1
        rows.append(line)
    return rows, garbage


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(interleavings(), st.sampled_from([1, 7, 65_536]), st.sampled_from([64, 4096, 4 << 20]))
def test_good_rows_pass_and_every_garbage_row_is_quarantined_once(tmp_path_factory, case, batch_rows, block_bytes):
    rows, garbage = case
    path = write_lines(tmp_path_factory.mktemp("garbage") / "trades.csv", rows, TARDIS_HEADER)
    params = FileReplay.Params.model_validate(
        {"files": [{"format": "tardis_trades", "path": str(path)}], "batch_rows": batch_rows}
    )
    source = FileReplay(params, OperatorContext("source"), block_bytes=block_bytes)
    normalizer = Normalizer(NormalizerParams(symbols=["BTCUSDT"]), OperatorContext("normalizer"))
    accepted, quarantined = [], 0
    for event in source.events():
        if isinstance(event, Watermark):
            normalizer.on_watermark(event.ts)
            continue
        stream, batch = event
        if stream == "quarantine":
            quarantined += batch.num_rows
            continue
        for out, part in normalizer.on_batch(stream, batch):
            if out == "ticks":
                accepted.append(part)
            else:
                quarantined += part.num_rows
    ticks = pa.Table.from_batches(accepted).to_pylist() if accepted else []
    expected = [int(line.split(b",")[4]) for line in GOOD]
    assert [tick["seq"] for tick in ticks] == expected  # exactly the real rows, in order
    assert [tick["price"] for tick in ticks] == [float(line.split(b",")[6]) for line in GOOD]
    assert quarantined == garbage  # every garbage row once
    assert source.metrics()["rows_read"] == len(rows) == len(ticks) + quarantined
