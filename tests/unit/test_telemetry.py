"""graph/telemetry.py without Ray: what each hook records, against hand-worked counts.

The metric objects are replaced by recording fakes; the Ray test (tests/service/
test_service_ray.py) checks the real pipeline end to end against a run summary.
"""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest

from graph import telemetry
from graph.runtime import HostConfig
from graph.schemas import BAR, QUARANTINE, SIGNAL


class FakeMetric:
    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}

    def inc(self, value, tags):
        key = tuple(sorted(tags.items()))
        self.values[key] = self.values.get(key, 0) + value

    def set(self, value, tags):
        self.values[tuple(sorted(tags.items()))] = value

    def observe(self, value, tags):
        self.inc(1, tags)

    def by(self, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in self.values.items():
            name = dict(key)[label]
            out[name] = out.get(name, 0) + value
        return out


@pytest.fixture
def fakes(monkeypatch):
    made: dict[str, FakeMetric] = {}
    monkeypatch.setattr(telemetry, "_metric", lambda name: made.setdefault(name, FakeMetric()))
    return made


class FakeStore:
    """A store whose committed signal rows are set by the test (as a flush commits them)."""

    outputs: dict = {}

    def __init__(self) -> None:
        self.written = 0

    def metrics(self):
        return {"rows_written": {"signals": self.written}}


def host(kind: str, op) -> SimpleNamespace:
    return SimpleNamespace(config=HostConfig(node_id=kind, kind=kind, params={}, run_id="r1"), op=op, watermark=None, transport=None)


def signals(*names: str) -> pa.RecordBatch:
    rows = [{"provider": "p", "symbol": "AMZN", "ts": i, "name": n, "value": 1.0, "score": None, "metadata": None}
            for i, n in enumerate(names)]  # fmt: skip
    return pa.RecordBatch.from_pylist(rows, schema=SIGNAL)


def test_committed_signal_rows_are_attributed_to_names_first_in_first_out(fakes):
    store = FakeStore()
    h = host("sql_store", store)
    watch = telemetry.NodeTelemetry(h, FakeStore)
    watch.received("signals", signals("rsi", "rsi", "spread"))      # arrival: rsi rsi spread
    watch.received("signals", signals("spread", "vwap"))            #          spread vwap
    store.written = 3                                               # a flush committed the first 3 rows
    watch.after_step(h)
    assert fakes["signals_written_total"].by("name") == {"rsi": 2, "spread": 1}
    store.written = 4
    watch.after_step(h)
    assert fakes["signals_written_total"].by("name") == {"rsi": 2, "spread": 2}
    watch.failed(h)                                                 # the store fails: vwap was never written
    assert fakes["signals_write_failures_total"].by("name") == {"vwap": 1}


def test_emitted_rows_are_counted_by_stream_reason_status_and_series(fakes):
    class Bars:
        outputs = {"bars": BAR, "quarantine": QUARANTINE}

    watch = telemetry.NodeTelemetry(host("bars", Bars()), Bars)
    bar = {"symbol": "AMZN", "timeframe": "1m", "ts": 0, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
           "volume": 1.0, "vwap": 1.0, "trade_count": 1}  # fmt: skip
    rows = [{**bar, "status": s, "ts": i} for i, s in enumerate(["forming", "confirmed", "confirmed", "corrected"])]
    watch.emitted("bars", pa.RecordBatch.from_pylist(rows, schema=BAR))
    bad = {"source": "x", "row": 1, "symbol": "AMZN", "ts": 0, "detail": "d", "raw": None}
    watch.emitted("quarantine", pa.RecordBatch.from_pylist(
        [{**bad, "reason": "late"}, {**bad, "reason": "late", "row": 2}, {**bad, "reason": "invalid_trade"}], schema=QUARANTINE))
    assert fakes["bars_confirmed_total"].by("timeframe") == {"1m": 2}
    assert fakes["bars_corrected_total"].by("symbol") == {"AMZN": 1}
    assert fakes["ticks_quarantined_total"].by("reason") == {"late": 2, "invalid_trade": 1}
    assert fakes["node_rows_out_total"].by("stream") == {"bars": 4, "quarantine": 3}


def test_outside_a_ray_actor_the_hooks_do_nothing():
    assert telemetry.for_host(host("bars", object()), object) is telemetry.NULL_TELEMETRY
