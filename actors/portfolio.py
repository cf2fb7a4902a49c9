"""The ``portfolio`` node kind: the whole book's equity per bar from the symbol sleeves.

Inputs: ``execution`` (sleeve EQUITY rows), and optionally ``execution.fills``,
``execution.trades`` and ``strategy`` (the DECISION rows, kept for the files). Output ``equity``: one book row (``symbol`` = ``"*"``) per bar
open time seen in any sleeve, once the watermark has passed that bar's end (so every
sleeve's row for it has arrived, from whichever shard). Runs with parallelism 1.

Book at bar time ``t`` (conventions in README, *Backtests*): every symbol contributes
its sleeve's row at its latest bar with open time <= ``t`` (a symbol with no bar at
``t`` is carried forward; before its first bar it counts its initial cash), summed in
symbol order: ``cash``, ``equity``, and ``exposure`` = sum |position x close| / equity.

With ``path`` set, at end-of-stream the node writes ``equity.parquet`` (sleeve and
book rows), ``fills.parquet``, ``trades.parquet`` and ``decisions.parquet`` there, rows
sorted so the files do not depend on shard count or arrival order.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from actors.strategy import bar_end
from graph.operator import Emit, Operator, OperatorContext, Params
from graph.params import OutputPath, Timeframe
from graph.schemas import BOOK, DECISION, EQUITY, FILL, TRADE

__all__ = ["Portfolio", "PortfolioParams", "BookState", "book_totals", "book_equity", "book_batch", "sort_outputs", "sort_decisions", "write_parquet"]


class PortfolioParams(Params):
    """Params of a ``portfolio`` node.

    Attributes:
        symbols: the book's symbols (as given to ``execution``).
        initial_cash: the book's starting cash (split equally into sleeves), > 0.
        timeframe: the bars' timeframe (a book row is final once the watermark passes its end).
        path: directory to write the equity/fills/trades Parquet files into at end-of-stream (null: none).
    """

    symbols: list[str] = Field(min_length=1)
    initial_cash: float = Field(default=100_000.0, gt=0)
    timeframe: Timeframe = "1m"
    path: OutputPath | None = None


class BookState:
    """Per symbol, the last sleeve values carried forward: cash, equity, gross position value."""

    def __init__(self, symbols: list[str], initial_cash: float) -> None:
        self.symbols = sorted(symbols)
        share = initial_cash / len(symbols)
        self.last = {s: (share, share, 0.0) for s in self.symbols}


def book_totals(
    state: BookState, ts: dict[str, np.ndarray], values: dict[str, dict[str, np.ndarray]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The book's sums at every distinct bar time of the sleeves' new rows (updates ``state``).

    Args:
        state: the carried values per symbol.
        ts: per symbol, its new rows' bar open times (int64, ascending).
        values: per symbol, ``{"cash", "equity", "gross"}`` float64 arrays aligned with ``ts``.

    Returns:
        (distinct times ascending, ``{"cash", "equity", "gross"}`` sums over the symbols
        in sorted order, each symbol at its latest row <= the time, else carried).
    """
    present = [t for t in ts.values() if len(t)]
    times = np.unique(np.concatenate(present)) if present else np.empty(0, np.int64)
    totals = {name: np.zeros(len(times)) for name in _SUMS}
    for s in state.symbols:
        carried = state.last[s]
        t = ts.get(s)
        if t is None or len(t) == 0:
            for k, name in enumerate(_SUMS):
                totals[name] += carried[k]
            continue
        at = np.searchsorted(t, times, side="right") - 1
        for k, name in enumerate(_SUMS):
            column = values[s][name]
            totals[name] += column[np.maximum(at, 0)] if at[0] >= 0 else np.where(at >= 0, column[np.maximum(at, 0)], carried[k])
        state.last[s] = tuple(float(values[s][name][-1]) for name in _SUMS)
    return times, totals


_SUMS = ("cash", "equity", "gross")


def book_equity(rows: pa.Table | pa.RecordBatch, state: BookState) -> pa.RecordBatch:
    """Book EQUITY rows for every distinct bar time of sleeve ``rows`` (updates ``state``).

    Args:
        rows: sleeve EQUITY rows (any order) for bars not yet aggregated.
        state: the carried values; updated to the last row of each symbol.

    Returns:
        EQUITY batch, ``symbol`` = ``"*"``, ascending ``ts``; ``position``/``close`` NaN.
    """
    symbol = rows.column("symbol").to_numpy(zero_copy_only=False)
    ts_all = rows.column("ts").to_numpy()
    columns = {name: rows.column(name).to_numpy() for name in ("cash", "equity")}
    columns["gross"] = np.abs(rows.column("position").to_numpy() * rows.column("close").to_numpy())
    ts, values = {}, {}
    for s in state.symbols:
        mine = np.flatnonzero(symbol == s)
        order = mine[np.argsort(ts_all[mine], kind="stable")]
        ts[s] = ts_all[order]
        values[s] = {name: column[order] for name, column in columns.items()}
    times, totals = book_totals(state, ts, values)
    return book_batch(times, totals)


def book_batch(times: np.ndarray, totals: dict[str, np.ndarray]) -> pa.RecordBatch:
    """The EQUITY batch of book sums (:func:`book_totals`): ``exposure`` = gross / equity (NaN if equity <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gross = np.where(totals["equity"] > 0, totals["gross"] / totals["equity"], np.nan)
    n = len(times)
    return pa.RecordBatch.from_arrays(
        [pa.array([BOOK] * n, pa.string()), pa.array(times, pa.int64()), pa.array(totals["cash"]),
         pa.array(np.full(n, np.nan)), pa.array(np.full(n, np.nan)), pa.array(gross), pa.array(totals["equity"])],
        schema=EQUITY,
    )  # fmt: skip


def sort_outputs(equity: pa.Table, fills: pa.Table, trades: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The three output tables in their canonical row order.

    ``equity`` by (symbol, ts) (the book ``"*"`` first), ``fills`` by (symbol, ts, row
    order within a symbol), ``trades`` by (symbol, entry_ts, closed before open, exit_ts).
    Within one symbol the execution emits rows in order, so a stable sort on the
    symbol and time keys is canonical.
    """
    equity = equity.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    fills = fills.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    is_open = pa.compute.is_null(trades.column("exit_ts"))
    trades = trades.append_column("_open", is_open).sort_by(
        [("symbol", "ascending"), ("_open", "ascending"), ("entry_ts", "ascending"), ("exit_ts", "ascending")]
    ).drop_columns(["_open"])
    return equity, fills, trades


def sort_decisions(decisions: pa.Table) -> pa.Table:
    """DECISION rows in canonical order: (symbol, ts)."""
    return decisions.sort_by([("symbol", "ascending"), ("ts", "ascending")])


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path``, the same bytes for the same rows (one chunk, no metadata, fixed options)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(None).combine_chunks(), path, compression="zstd", use_dictionary=False, write_statistics=False)


class Portfolio(Operator):
    """Aggregates the sleeves into the book; see the module docstring."""

    Params: ClassVar[type[Params]] = PortfolioParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"equity": EQUITY}

    def __init__(self, params: PortfolioParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._state = BookState(params.symbols, params.initial_cash)
        self._held: list[pa.RecordBatch] = []  # sleeve rows not yet in a book row
        self._tables: dict[str, list[pa.RecordBatch]] = {"equity": [], "fills": [], "trades": [], "decisions": []}

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Keep sleeve equity rows until the watermark; keep fills and trades for the files."""
        names = batch.schema.names
        if "equity" in names:
            self._held.append(batch)
            self._tables["equity"].append(batch)
        elif "decision_ts" in names:
            self._tables["fills"].append(batch)
        elif "entry_ts" in names:
            self._tables["trades"].append(batch)
        elif "target" in names:
            self._tables["decisions"].append(batch)
        else:
            raise ValueError(f"portfolio node {self.ctx.node_id!r}: stream {stream!r} is not EQUITY, FILL, TRADE or DECISION")
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Emit the book rows of every bar whose end is at or before ``ts``."""
        return self._release(int(ts))

    def on_eof(self) -> list[Emit]:
        """Emit the remaining book rows; write the files when ``path`` is set."""
        emits = self._release(None)
        if self.params.path is not None:
            tables = {
                name: pa.Table.from_batches(batches, schema=schema)
                for (name, batches), schema in zip(self._tables.items(), (EQUITY, FILL, TRADE, DECISION))
            }
            ordered = (*sort_outputs(tables["equity"], tables["fills"], tables["trades"]), sort_decisions(tables["decisions"]))
            for name, table in zip(tables, ordered):
                write_parquet(table, Path(self.params.path) / f"{name}.parquet")
        return emits

    def _release(self, watermark: int | None) -> list[Emit]:
        if not self._held:
            return []
        held = pa.Table.from_batches(self._held, schema=EQUITY)
        if watermark is None:
            ready, self._held = held, []
        else:
            done = bar_end(held.column("ts").to_numpy(), self.params.timeframe) <= watermark
            if not done.any():
                return []
            ready = held.filter(pa.array(done))
            rest = held.filter(pa.array(~done))
            self._held = rest.to_batches() if rest.num_rows else []
        book = book_equity(ready, self._state)
        self._tables["equity"].append(book)
        return [("equity", book)]

    def metrics(self) -> dict[str, Any]:
        """Rows kept: sleeve and book equity rows, fills, trades."""
        return {name: sum(b.num_rows for b in batches) for name, batches in self._tables.items()}

    def snapshot(self) -> dict[str, Any]:
        """The carried book values, the held sleeve rows and the kept tables (Arrow batches are immutable)."""
        return {"last": copy.deepcopy(self._state.last), "held": list(self._held), "tables": {k: list(v) for k, v in self._tables.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` of a node with the same params."""
        self._state.last = copy.deepcopy(state["last"])
        self._held = list(state["held"])
        self._tables = {k: list(v) for k, v in state["tables"].items()}
