"""``spread_bps``: the quoted spread in bps on every tick with bid and ask (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from actors import indicators as ind
from actors.signals.base import ConflatedParams, TickSignal, floats
from graph.operator import OperatorContext, Params

__all__ = ["SpreadBps", "SpreadParams"]


class SpreadParams(ConflatedParams):
    """Params of ``spread_bps``: ``name`` and ``conflate_ms`` (see :class:`ConflatedParams`)."""


class SpreadBps(TickSignal):
    """``spread_bps``: quoted spread ``(ask - bid) / mid * 10,000`` on every tick with both sides.

    A tick counts as a quote update when bid and ask are both present, finite and > 0
    (a LOBSTER execution row included: it carries the book after the execution; see
    the package docstring). Stateless apart from the held last value per timestamp.
    """

    Params: ClassVar[type[Params]] = SpreadParams

    def __init__(self, params: SpreadParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._counts["quotes"] = 0

    @classmethod
    def default_name(cls, params: SpreadParams) -> str:
        """``spread_bps``."""
        return "spread_bps"

    def metadata_for(self, provider: str, symbol: str) -> dict[str, Any]:
        """``{"unit": "bps", "mid": "(bid+ask)/2"}`` (+ ``"conflate_ms"`` when conflated)."""
        return {"unit": "bps", "mid": "(bid+ask)/2", **self._conflation()}

    def _select(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        if "bid" not in batch.schema.names or "ask" not in batch.schema.names:
            return np.zeros(batch.num_rows, dtype=bool), {}
        bid, ask = floats(batch.column("bid")), floats(batch.column("ask"))
        with np.errstate(invalid="ignore"):
            quote = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
        quotes = int(quote.sum())
        self._counts["quotes"] += quotes
        return (None if quotes == batch.num_rows else quote), {"bid": bid, "ask": ask}

    def _compute(self, kid: np.ndarray, ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
        return ind.spread_bps(cols["bid"], cols["ask"])
