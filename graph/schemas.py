"""The Arrow schemas of every stream in a tickgraph graph: defined once, imported everywhere.

Conventions (shared by every schema here):
    * ``ts`` is event time, int64 nanoseconds since the Unix epoch, UTC.
    * prices are float64 in the instrument's quote currency; sizes are float64
      in shares, contracts or coins (the instrument's base unit).
    * string columns are plain ``pa.string()``; nullable columns are marked.

The SQL tables (``actors/store.py``) and the Parquet files (``actors/parquet_sink.py``)
derive their columns from these schemas; ``tests/unit/test_schemas.py`` checks that.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

__all__ = [
    "TICK",
    "BAR",
    "QUARANTINE",
    "QUARANTINE_ROW",
    "stamp_quarantine",
    "SIGNAL",
    "JOB_RUN",
    "JOB_STATUSES",
    "BAR_FORMING",
    "BAR_CONFIRMED",
    "BAR_CORRECTED",
    "BAR_PARTIAL",
    "ORIGIN_LIVE",
    "ORIGIN_REPLAY",
    "empty_batch",
    "watermark_rows",
    "stream_source",
    "quarantine_row",
    "DECISION",
    "FILL",
    "TRADE",
    "EQUITY",
    "BOOK",
    "PRE_PAPER_EVENT",
]

ORIGIN_LIVE = "live"
ORIGIN_REPLAY = "replay"

#: A tick: one trade (``price`` and ``size`` set) or one quote update (``price`` null,
#: ``bid``/``ask`` set). A LOBSTER execution row is a trade that also carries the
#: best bid/ask after the event. ``advances_watermark`` is False for a tick whose ``ts``
#: may not define event-time progress (see :func:`watermark_rows`).
TICK = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),  # exchange event time, ns UTC
        pa.field("price", pa.float64()),  # trade price; null for a quote-only tick
        pa.field("size", pa.float64()),  # trade size; null for a quote-only tick
        pa.field("side", pa.string()),  # aggressor side "buy" | "sell"; null if unknown
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("bid_size", pa.float64()),
        pa.field("ask_size", pa.float64()),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # source sequence number (trade id / row)
        pa.field("origin", pa.string(), nullable=False),  # "live" | "replay"
        # False: this tick must not move the watermark (its ts is a receive time, or it is
        # history a live feed replays on subscribe); null or True: it may. Live feeds set
        # it, recordings keep it, so a replayed session has the live session's watermarks.
        pa.field("advances_watermark", pa.bool_()),
    ]
)

BAR_FORMING = "forming"
BAR_CONFIRMED = "confirmed"
#: A confirmed bar re-emitted after a late tick amended it (late_policy ``amend``).
BAR_CORRECTED = "corrected"
#: A bar the engine could not see whole: open when the stream was stopped (``--duration``,
#: Ctrl-C), or opened before a live feed's first tick of its symbol (the session started
#: mid-bar). Stored apart (``bars_partial``): never as, or over, a final bar.
BAR_PARTIAL = "partial"

#: An OHLCV bar. ``ts`` is the bar OPEN time; the bar covers [ts, ts + timeframe)
#: (``1d``: the instrument's trading session of that local date).
BAR = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),  # bar open time, ns UTC
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),  # sum of trade sizes
        pa.field("vwap", pa.float64(), nullable=False),  # sum(price*size)/sum(size)
        pa.field("trade_count", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "forming" | "confirmed" | "corrected" | "partial"
    ]
)

#: A rejected input row, kept with its reason so nothing is silently dropped: one row per
#: rejection. ``source`` names where the row came from and ``row`` the place in it: for a
#: file, the file path and its 0-based data row; for a tick rejected by an operator,
#: :func:`stream_source` (``node/provider/symbol``) and the tick's ``seq``. Neither is
#: unique (three resends of one trade share source and seq), so a rejection is identified
#: by ``(run_id, source, position)``: the graph run, and the rejection's ordinal among the
#: rejections of the node (shard) that made it, in stream order -- the same for every
#: batch size and speed. Operators build rows without those two (:data:`QUARANTINE_ROW`);
#: the host stamps them (:func:`stamp_quarantine`).
QUARANTINE = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),  # the graph run (job_runs.id for a replay)
        pa.field("source", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),  # ordinal of the rejection at its node
        pa.field("row", pa.int64(), nullable=False),
        pa.field("symbol", pa.string()),
        pa.field("ts", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),  # short machine code, e.g. "bad_price"
        pa.field("detail", pa.string(), nullable=False),  # human sentence naming field and value
        pa.field("raw", pa.string()),  # the offending input, as (escaped) text
    ]
)
#: QUARANTINE as an operator emits it: without the host-stamped ``run_id`` and ``position``.
QUARANTINE_ROW = pa.schema([field for field in QUARANTINE if field.name not in ("run_id", "position")])


def stamp_quarantine(batch: pa.RecordBatch, run_id: str, first_position: int, stride: int = 1, offset: int = 0) -> pa.RecordBatch:
    """A QUARANTINE_ROW batch as QUARANTINE: ``run_id`` and ``position`` added.

    Args:
        batch: QUARANTINE_ROW rows in stream order (or QUARANTINE: returned unchanged).
        run_id: the graph run's id.
        first_position: the ordinal of the batch's first rejection at its node shard.
        stride, offset: positions are ``(first_position + i) * stride + offset``: a node
            with N shards uses stride N and its shard index, so positions stay unique
            across shards.
    """
    if batch.schema.equals(QUARANTINE):
        return batch
    n = batch.num_rows
    positions = (np.arange(first_position, first_position + n, dtype=np.int64) * stride) + offset
    columns = {name: batch.column(name) for name in QUARANTINE_ROW.names}
    columns["run_id"] = pa.repeat(run_id, n)
    columns["position"] = pa.array(positions)
    return pa.RecordBatch.from_arrays([columns[name] for name in QUARANTINE.names], schema=QUARANTINE)


#: A signal value computed at event time ``ts`` (e.g. ``spread_bps`` on a quote).
SIGNAL = pa.schema(
    [
        pa.field("provider", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),  # event time of the tick/bar it was computed on
        pa.field("name", pa.string(), nullable=False),  # e.g. "spread_bps", "rsi_14_1m"
        pa.field("value", pa.float64(), nullable=False),
        pa.field("score", pa.float64()),  # optional normalized strength
        pa.field("metadata", pa.string()),  # JSON text
    ]
)

JOB_STATUSES = ("running", "completed", "failed", "cancelled", "abandoned")

#: One job (a replay, an export): what it did, when, and how it ended.
JOB_RUN = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # uuid4 hex
        pa.field("job_name", pa.string(), nullable=False),  # e.g. "replay", "export"
        pa.field("provider", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # one of JOB_STATUSES
        pa.field("symbols", pa.string()),  # JSON list
        pa.field("rows_written", pa.int64()),
        pa.field("min_ts", pa.int64()),  # event time range covered, ns UTC
        pa.field("max_ts", pa.int64()),
        pa.field("started_at", pa.int64(), nullable=False),  # wall clock, ns UTC
        pa.field("completed_at", pa.int64()),  # wall clock, ns UTC
        pa.field("error_message", pa.string()),
        pa.field("metadata", pa.string()),  # JSON object
    ]
)


def stream_source(node_id: str, provider: str, symbol: str) -> str:
    """QUARANTINE ``source`` for a tick rejected by operator ``node_id``: ``node/provider/symbol``."""
    return f"{node_id}/{provider}/{symbol}"


def quarantine_row(node_id: str, tick: dict, reason: str, detail: str) -> dict:
    """One QUARANTINE_ROW row (a dict) for a TICK row ``tick`` (a dict) rejected by ``node_id``.

    ``source`` is :func:`stream_source`, ``row`` the tick's ``seq``, ``raw`` the tick as
    JSON with sorted keys (NaN written as ``NaN``).
    """
    return {
        "source": stream_source(node_id, tick["provider"], tick["symbol"]),
        "row": tick["seq"],
        "symbol": tick["symbol"],
        "ts": tick["ts"],
        "reason": reason,
        "detail": detail,
        "raw": json.dumps(tick, sort_keys=True),
    }


def watermark_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Bool per row of a TICK batch: may this tick move the watermark (``advances_watermark``
    not False)? Every source and the normalizer use this one rule."""
    column = batch.column("advances_watermark")
    if column.null_count == len(column):
        return np.ones(len(column), dtype=bool)
    return column.fill_null(True).to_numpy(zero_copy_only=False)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row ``RecordBatch`` of ``schema``."""
    return pa.RecordBatch.from_pylist([], schema=schema)


# ----------------------------------------------------------------------------- backtests
# The strategy -> execution -> portfolio streams (``actors/strategy.py``,
# ``actors/execution.py``, ``actors/portfolio.py``). Money is in the quote currency,
# positions in the instrument's units (shares, contracts, coins; may be fractional).

#: One confirmed bar with the decision a strategy took at its close. ``ts`` is the
#: decision bar's OPEN time; the decision is filled at the NEXT bar's open, never on
#: this bar. ``target`` is the signed target exposure (-1 short ... +1 long, as a
#: fraction of the sleeve's equity before risk sizing); NaN = no new decision (keep the
#: previous target; also every warm-up bar). ``spread_bps`` is the last quoted spread
#: before the bar's end (NaN without quotes), ``signal`` the strategy's input signal
#: value at the bar's end (NaN if it reads none).
DECISION = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),  # decision bar open time, ns UTC
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("target", pa.float64(), nullable=False),  # NaN: keep the previous target
        pa.field("spread_bps", pa.float64(), nullable=False),  # NaN: no quote seen
        pa.field("signal", pa.float64(), nullable=False),  # NaN: none
    ]
)

#: One fill: part or all of an order, at a bar's open (plus slippage).
#: ``decision_ts`` is the open time of the bar whose close decided the order, ``ts``
#: the open time of the bar it filled on (always later). ``quantity`` is signed
#: (+ buy, - sell); ``price`` includes slippage; ``fee`` is in quote currency.
FILL = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),  # fill bar open time, ns UTC
        pa.field("decision_ts", pa.int64(), nullable=False),  # decision bar open time, ns UTC
        pa.field("quantity", pa.float64(), nullable=False),  # signed units
        pa.field("price", pa.float64(), nullable=False),  # fill price incl. slippage
        pa.field("reference_price", pa.float64(), nullable=False),  # the bar's open
        pa.field("fee", pa.float64(), nullable=False),
        pa.field("position_after", pa.float64(), nullable=False),
    ]
)

#: One round trip (a closed or still open lot), FIFO matched like backtesting.py.
#: ``exit_*`` are null while the trade is open at the end of the data.
TRADE = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),  # "long" | "short"
        pa.field("size", pa.float64(), nullable=False),  # units, > 0
        pa.field("entry_ts", pa.int64(), nullable=False),  # fill bar open time, ns UTC
        pa.field("entry_price", pa.float64(), nullable=False),
        pa.field("exit_ts", pa.int64()),
        pa.field("exit_price", pa.float64()),
        pa.field("fees", pa.float64(), nullable=False),  # entry + exit fees of this lot
        pa.field("borrow_cost", pa.float64(), nullable=False),  # accrued while short
        pa.field("pnl", pa.float64()),  # net of fees and borrow; null while open
        pa.field("return_pct", pa.float64()),  # pnl / entry notional * 100; null while open
    ]
)

#: Equity per bar: one row per (symbol sleeve, bar) from ``execution``, and one row per
#: bar open time of the whole book (``symbol`` = :data:`BOOK`) from ``portfolio``.
#: Marked at the bar's close, after that bar's fills (at its open) and borrow accrual.
EQUITY = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),  # a symbol, or "*" for the book
        pa.field("ts", pa.int64(), nullable=False),  # bar open time, ns UTC
        pa.field("cash", pa.float64(), nullable=False),
        pa.field("position", pa.float64(), nullable=False),  # units (book: NaN)
        pa.field("close", pa.float64(), nullable=False),  # mark price (book: NaN)
        pa.field("exposure", pa.float64(), nullable=False),  # gross position value / equity
        pa.field("equity", pa.float64(), nullable=False),  # cash + position * close
    ]
)

#: ``EQUITY.symbol`` of the whole book's rows.
BOOK = "*"

# ----------------------------------------------------------------------------- pre-paper
#: One entry of a pre-paper run's audit trail (``actors/pre_paper.py``), per symbol, in the
#: order it happened. ``kind``: ``start`` (``detail``: the run's identity and runtime
#: config), ``check`` (a history check: ``detail`` = ``HistoryCheckResult.to_dict()``),
#: ``status`` (a status change), ``no_signals`` (a NO-SIGNALS period began or ended:
#: ``detail`` says which, the bars suppressed and why), ``end`` (``detail``: the symbol's
#: execution summary). ``clock_ns`` is the runner's clock (the wall clock live, the
#: watermark in a replayed session), ``ts`` the open time of the bar involved (null: none).
PRE_PAPER_EVENT = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("clock_ns", pa.int64(), nullable=False),  # the runner's clock, ns UTC
        pa.field("ts", pa.int64()),  # bar open time, ns UTC (null: no bar)
        pa.field("kind", pa.string(), nullable=False),  # start | check | status | no_signals | end
        pa.field("status", pa.string()),  # sufficient | loading | degraded
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),  # JSON object
    ]
)
