"""The backtest's strategy node, shared by the symbols of a ``pre_paper`` shard, fed in runs.

A symbol's runner (:mod:`pre_paper.runner`) turns its bars into *segments*: runs of
consecutive bars decided on while its history is SUFFICIENT, the first run after a
NO-SIGNALS period carrying the window's earlier bars as a *seed*. :class:`SharedStrategy`
gives them to one :class:`actors.strategy.StrategyNode` (the class and params of the
backtest, ``backtest.manifest.strategy_node_params``), so one call decides the bars of
every symbol that has some, as the backtest graph's node does:

* a seeded segment first drops the symbol's old state from the node (its history had a
  hole) and feeds the seed (the node's decisions on it are warm-up, never emitted);
* then every symbol's bars of the round go in one batch, released by one watermark at
  the latest bar end.

The node keeps per-symbol state and is batch-independent, so this gives the decisions of
one call per bar. A symbol's second segment in one call (a NO-SIGNALS bar between
two runs, in a burst replay) goes in a second round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from actors.strategy import StrategyNode, StrategyNodeParams, bar_end
from graph.operator import OperatorContext
from graph.schemas import BAR

__all__ = ["Segment", "SharedStrategy"]


@dataclass(frozen=True)
class Segment:
    """A run of one symbol's bars to decide on.

    Attributes:
        bars: BAR rows as dicts, ascending (the node decides on each).
        seed: BAR rows (dicts) before them to feed first (a fresh start), or None (continue).
        signals: SIGNAL rows to feed with the seed (the strategy's inputs), or None.
    """

    bars: list[dict[str, Any]]
    seed: list[dict[str, Any]] | None = None
    signals: pa.RecordBatch | None = None


class SharedStrategy:
    """One strategy node for a shard's symbols (see the module docstring).

    Args:
        params: the ``strategy`` node params of the manifest.
        ctx: the ``pre_paper`` node's context (its id names this node ``<id>.strategy``).
    """

    def __init__(self, params: dict[str, Any], ctx: OperatorContext) -> None:
        self.params = StrategyNodeParams.model_validate(params)
        self.timeframe = self.params.timeframe
        inner = OperatorContext(node_id=f"{ctx.node_id}.strategy", shard=ctx.shard, num_shards=ctx.num_shards,
                                base_dir=ctx.base_dir, run_id=ctx.run_id)  # fmt: skip
        self.node = StrategyNode(self.params, inner)

    def signals(self, batch: pa.RecordBatch) -> None:
        """Input SIGNAL rows of symbols being decided on."""
        self.node.on_batch("signals", batch)

    def _reset(self, symbols: list[str]) -> None:
        """Drop ``symbols``' state from the node (through its own snapshot and restore)."""
        state = self.node.snapshot()
        if any(s in state["symbols"] for s in symbols):
            for symbol in symbols:
                state["symbols"].pop(symbol, None)
            self.node.restore(state)

    def _end(self, batch: pa.RecordBatch) -> int:
        return int(bar_end(int(max(batch.column("ts").to_pylist())), self.timeframe))

    def decide(self, plans: dict[str, list[Segment]]) -> tuple[list[pa.RecordBatch], int]:
        """DECISION rows for every segment, one row per bar.

        Args:
            plans: symbol -> its segments, in order.

        Returns:
            (the DECISION batches, the number of seed bars fed).

        Raises:
            RuntimeError: the node did not decide exactly once per bar.
        """
        out: list[pa.RecordBatch] = []
        seeded = 0
        rounds = max((len(segments) for segments in plans.values()), default=0)
        for k in range(rounds):
            part = {s: segments[k] for s, segments in plans.items() if k < len(segments)}
            fresh = sorted(s for s, seg in part.items() if seg.seed is not None or seg.signals is not None)
            if fresh:
                self._reset(fresh)
                for symbol in fresh:
                    if part[symbol].signals is not None:
                        self.node.on_batch("signals", part[symbol].signals)
                seeds = [row for s in fresh for row in part[s].seed or ()]
                if seeds:
                    history = pa.RecordBatch.from_pylist(seeds, schema=BAR)
                    self.node.on_batch("bars", history)
                    self.node.on_watermark(self._end(history))
                    seeded += history.num_rows
            bars = pa.RecordBatch.from_pylist([row for s in sorted(part) for row in part[s].bars], schema=BAR)
            self.node.on_batch("bars", bars)
            decided = [b for stream, b in self.node.on_watermark(self._end(bars)) if stream == "decisions"]
            rows = sum(b.num_rows for b in decided)
            if rows != bars.num_rows:
                raise RuntimeError(f"pre_paper: the strategy node decided {rows} rows for {bars.num_rows} bars")
            out += decided
        return out, seeded

    def snapshot(self) -> Any:
        """The node's snapshot."""
        return self.node.snapshot()

    def restore(self, state: Any) -> None:
        """Restore a :meth:`snapshot`."""
        self.node.restore(state)
