"""Fixtures for the live-connector tests: the local frame server, recorded frames, a source driver."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from graph.operator import IDLE, OperatorContext, Watermark
from tests.conftest import FIXTURES
from tests.live.server import FrameServer

WS_FRAMES = FIXTURES / "ws_frames"


def frames(name: str) -> list[str]:
    """The recorded frames of ``fixtures/ws_frames/<name>.jsonl``, one per line."""
    return (WS_FRAMES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()


@pytest.fixture
def server():
    """A started :class:`FrameServer` on 127.0.0.1, stopped after the test."""
    srv = FrameServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def context(allowed_lateness_ns: int = 0, idle_timeout_ns: int | None = None, node_id: str = "source") -> OperatorContext:
    """An operator context with the wall clock (idle advance off by default: old frames stay on time)."""
    return OperatorContext(
        node_id=node_id, clock_ns=time.time_ns, allowed_lateness_ns=allowed_lateness_ns, idle_timeout_ns=idle_timeout_ns
    )


def make_source(cls: type, ctx: OperatorContext | None = None, **params: Any):
    """Validate ``params`` with the source's model and build the source (fast reconnects, seeded jitter)."""
    defaults = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "jitter_seed": 7, "heartbeat_s": None}
    model = cls.Params.model_validate({**defaults, **params}, context={"base_dir": Path.cwd()})
    return cls(model, ctx or context())


@dataclass
class Drained:
    """What a source yielded: tick and quarantine batches, watermarks, the time it took."""

    ticks: list[pa.RecordBatch] = field(default_factory=list)
    quarantine: list[pa.RecordBatch] = field(default_factory=list)
    watermarks: list[int] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "ticks" / "wm" / "quarantine" in yield order

    def table(self) -> pa.Table:
        """All tick rows, in the order yielded."""
        from graph.schemas import TICK

        return pa.Table.from_batches(self.ticks, schema=TICK)

    def rows(self) -> list[dict[str, Any]]:
        """All tick rows as dicts."""
        return self.table().to_pylist()

    def quarantined(self) -> list[dict[str, Any]]:
        """All quarantine rows as dicts."""
        return [row for batch in self.quarantine for row in batch.to_pylist()]


def drain(
    source: Any, until: Callable[[Drained], bool], timeout_s: float = 15.0, stop: bool = True, events: Any = None
) -> Drained:
    """Pull ``source.events()`` until ``until(drained)`` holds after an IDLE (or fail at ``timeout_s``).

    Then ``stop()`` the source (if ``stop``) and pull what is left, so nothing received is missed.
    ``events``: a generator of ``source.events()`` already started by the caller.
    """
    out = Drained()
    events = source.events() if events is None else events

    def take(event: Any) -> None:
        if isinstance(event, Watermark):
            out.watermarks.append(event.ts)
            out.order.append("wm")
        elif event is not IDLE:
            stream, batch = event
            (out.ticks if stream == "ticks" else out.quarantine).append(batch)
            out.order.append(stream)

    deadline = time.monotonic() + timeout_s
    try:
        for event in events:
            if event is IDLE:
                if until(out):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"source did not reach the expected state within {timeout_s} s: {source.metrics()}")
                continue
            take(event)
        if stop:
            source.stop()
            for event in events:
                take(event)
    finally:
        source.close()
    return out
