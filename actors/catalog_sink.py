"""The ``catalog`` sink: tick-rate streams (ticks, per-tick signals) into the tick catalog.

Inputs: ``ticks`` (TICK, e.g. the normalizer's accepted ticks) and ``signals`` (SIGNAL,
e.g. ``vwap_deviation_bps`` and ``spread_bps``). Rows go to
``<path>/<stream>/symbol=<S>/date=<YYYY-MM-DD>/part-<first ts>-<last ts>.parquet``
(``catalog/layout.py``), written by :class:`~catalog.writer.CatalogWriter`: one file per
symbol and ``file_span_s`` of event time, written once the watermark passes the span,
sorted, zstd, atomic, byte-identical on a rerun, never overwriting another job's range.

Example (``config/replay.yaml``)::

    - id: catalog
      kind: catalog
      inputs: [normalizer, signals_vwap_deviation_bps, signals_spread_bps]
      params: {path: "${TICKGRAPH_CATALOG_DIR:-../out/catalog}"}

With ``parallelism > 1`` key it by ``symbol``: each partition then has one writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from catalog.layout import STREAMS
from catalog.writer import DEFAULT_FILE_SPAN_S, CatalogWriter, check_file_span
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import OutputDir

__all__ = ["CatalogSink", "CatalogParams"]


class CatalogParams(Params):
    """Params of the ``catalog`` kind.

    Attributes:
        path: the catalog directory (relative to the graph file); created if missing.
        file_span_s: event-time span of one file per symbol, seconds (divides 86,400;
            default 3600: at most one hour of a symbol's rows per file, and in memory).
    """

    path: OutputDir = Field(default=Path("out/catalog"), validate_default=True)
    file_span_s: int = DEFAULT_FILE_SPAN_S

    @field_validator("file_span_s")
    @classmethod
    def _span(cls, value: int) -> int:
        return check_file_span(value)


class CatalogSink(Operator):
    """Writes ``ticks`` and ``signals`` batches to the tick catalog (see the module docstring).

    A run aborted by another node's failure closes the sink, which then writes what it
    has buffered (nothing received is lost); a restart from a checkpoint discards it
    instead (the checkpoint holds it, :meth:`snapshot`).
    """

    Params: ClassVar[type[Params]] = CatalogParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}
    keyed: ClassVar[bool] = True  # one writer per partition: shards need key symbol

    def __init__(self, params: CatalogParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self.writer = CatalogWriter(Path(params.path), params.file_span_s, owner=f"catalog {ctx.node_id!r}")
        self._ended = False

    def __repr__(self) -> str:
        return f"CatalogSink(node_id={self.ctx.node_id!r}, path={str(self.params.path)!r})"

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Buffer a TICK (``ticks``) or SIGNAL (``signals``) batch.

        Raises:
            ValueError: another stream, or a batch lacking a column of its schema.
        """
        if stream not in STREAMS:
            raise ValueError(
                f"catalog {self.ctx.node_id!r}: unknown input stream {stream!r}; expected one of "
                f"{', '.join(map(repr, STREAMS))}"
            )
        self.writer.add(stream, batch)
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Write the spans that end at or before ``ts`` (int ns UTC)."""
        self.writer.advance(ts)
        return []

    def on_eof(self) -> list[Emit]:
        """Write everything buffered."""
        self._ended = True
        self.writer.flush()
        return []

    def close(self) -> None:
        """After an abort (no end-of-stream): write what is buffered, as :meth:`on_eof` would."""
        if not self._ended:
            self.on_eof()

    def metrics(self) -> dict[str, Any]:
        """The writer's counters (``catalog.writer.CatalogWriter.metrics``)."""
        return self.writer.metrics()

    def snapshot(self) -> dict[str, Any]:
        """At a checkpoint barrier: the rows of the open spans and the files written so far
        (``CatalogWriter.snapshot``). Files are written whole and renamed into place as
        spans close, so every file on disk at the barrier is final; what is not in a file
        yet is in the checkpoint."""
        return self.writer.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot`: rows sent again after it are stored once.

        Raises:
            ValueError: a snapshot of another version.
        """
        self.writer.restore(state)

    def discard(self) -> None:
        """Forget the buffered rows (a restart: the checkpoint holds them), so close writes nothing."""
        self._ended = True
