"""The ``pre_paper_audit`` sink: a pre-paper run's audit artifacts under ``artifacts/pre_paper/<run_id>/``.

Inputs: a ``pre_paper`` node's ``events`` (required), ``decisions`` and, with paper
fills, ``fills``/``equity``/``trades`` (any of them; recognised by their columns). Every
shard of the ``pre_paper`` node feeds this one sink (parallelism 1), so one run has one
directory; the layout is in :mod:`pre_paper.artifacts`. The files are rewritten every
``flush_interval_ms`` of wall clock (at the next input or watermark), at end-of-stream,
and when the run is aborted (a failed or cancelled run keeps its audit, marked so). A
checkpoint flushes; a restore after a restart takes back what was written after it
(:meth:`pre_paper.artifacts.AuditWriter.resume`), so the audit of a recovered run is that
of an uninterrupted one.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import OutputDir
from pre_paper.artifacts import AuditWriter

__all__ = ["PrePaperAudit", "PrePaperAuditParams"]


class PrePaperAuditParams(Params):
    """Params of a ``pre_paper_audit`` sink.

    Attributes:
        path: the directory holding one sub-directory per run (default ``artifacts/pre_paper``).
        run_id: the run directory's name (default: the graph run's id).
        flush_interval_ms: rewrite the files at most this often (wall clock).
    """

    path: OutputDir = Path("artifacts/pre_paper")
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    flush_interval_ms: int = Field(1000, ge=0)


class PrePaperAudit(Operator):
    """Writes the audit directory of a pre-paper run; see the module docstring."""

    Params: ClassVar[type[Params]] = PrePaperAuditParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: PrePaperAuditParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._clock = ctx.clock_ns
        now = self._clock() if self._clock is not None else 0
        self.run_id = params.run_id or ctx.run_id or uuid.uuid4().hex
        self.writer = AuditWriter(Path(params.path) / self.run_id, self.run_id, now)
        self._last_flush = now
        self._finished = False
        self._rows = 0

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Take events and outputs; flush when due."""
        names = set(batch.schema.names)
        self._rows += batch.num_rows
        if {"kind", "clock_ns", "detail"} <= names:
            self.writer.add_events(batch)
        elif "target" in names:
            self.writer.add_output("decisions", batch)
        elif "decision_ts" in names:
            self.writer.add_output("fills", batch)
        elif "entry_ts" in names:
            self.writer.add_output("trades", batch)
        elif "equity" in names:
            self.writer.add_output("equity", batch)
        else:
            raise ValueError(f"pre_paper_audit {self.ctx.node_id!r}: stream {stream!r} is not a pre_paper output (columns {sorted(names)})")
        self._maybe_flush()
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Flush when due."""
        self._maybe_flush()
        return []

    def _maybe_flush(self) -> None:
        if self._clock is None:
            return
        now = self._clock()
        if now - self._last_flush >= self.params.flush_interval_ms * 1_000_000:
            self.writer.flush()
            self._last_flush = now

    def on_eof(self) -> list[Emit]:
        """The final write, marked ``completed``."""
        self._finished = True
        self.writer.finish("completed")
        return []

    def close(self) -> None:
        """After an abort: write what was received, marked ``aborted``."""
        if not self._finished:
            self._finished = True
            self.writer.finish("aborted")

    def snapshot(self) -> dict[str, Any]:
        """The writer's state after a flush (picklable) and the rows received."""
        return {"writer": self.writer.checkpoint(), "rows": self._rows}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the run directory from a :meth:`snapshot` (see the module docstring)."""
        self.writer.resume(state["writer"])
        self._rows = state["rows"]

    def metrics(self) -> dict[str, Any]:
        """``run_dir`` and rows received."""
        return {"run_dir": str(self.writer.run_dir), "rows": self._rows}
