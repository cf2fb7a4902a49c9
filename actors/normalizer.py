"""The normalizer: validates ticks, drops replays of a sequence number, quarantines the rest.

Every input row leaves on exactly one output: ``ticks`` (accepted, TICK schema, input
order kept) or ``quarantine`` (QUARANTINE schema, one row per rejected tick, with a
reason code and a sentence naming the field and its value). Nothing is silently lost:
``received == accepted + sum(quarantined.values())`` at every point in time.

Checks, in priority order (a row failing several is reported under the first):

========================  ===============================================================
reason                    rule
========================  ===============================================================
``unknown_symbol``        ``symbols`` is set and the tick's symbol is not in it
``bad_timestamp``         ``ts`` outside the graph's plausible event-time range
                          (``event_time.earliest``/``latest``, default 1990-2100 UTC); the
                          detail names the likely unit mistake (``graph/times.py``)
``bad_price``             trade (``price`` not null): price NaN, +-inf or <= 0
``bad_size``              trade: size null, NaN, +-inf or < 0 (size 0 is accepted)
``bad_quote``             quote (``price`` null): bid or ask present but NaN, +-inf or
                          <= 0, or neither bid nor ask present
``crossed_quote``         quote: bid > ask (a locked quote, bid == ask, is accepted)
``late``                  late policy ``drop`` only: ``ts`` < the tick's watermark (below)
``duplicate``             a replay of an already accepted (provider, symbol, kind, seq)
========================  ===============================================================

Late ticks: the normalizer is where the graph's ``event_time.late_policy`` ``drop``
happens, so that every tick read is accounted for at one node (ticks read = accepted +
quarantined, the run summary's identity). A tick is judged against the watermark *as of
its own position in the stream*: the running maximum of the (plausible) event times of
every tick before it, minus ``allowed_lateness_ms`` -- or the last watermark received,
if that is higher (a live source's idle advance). A tick older than that is quarantined
with reason ``late``, whatever its kind, and reaches no bar, signal or sink. Judging
against the last *received* watermark only would make lateness depend on batch size (a
tick moved 5 minutes back inside one 65,536-row batch passed, the same tick in 1,000-row
batches was late); the running maximum gives the same verdict for every ``batch_rows``,
``batch_interval_ms`` and speed, because the stream order is the same. Every tick with a
plausible ``ts`` counts towards the maximum, whatever its verdict, as it does in the
source's watermark -- except ticks marked ``advances_watermark = False`` (a quote a live
feed stamps with its receive time, the old trades of a subscription snapshot): a live
feed keeps them from moving its watermark, the recorder keeps the mark, and so the
normalizer and every replay of the recording follow the same rule
(:func:`graph.schemas.watermark_rows`). Under ``amend`` late
ticks are accepted (counted as ``late_accepted``) and the bar engine corrects the
confirmed bars they change. The bar engine applies the same rule for graphs without a
normalizer; behind a normalizer it never sees a late tick under ``drop``.

De-duplication is by source sequence number, never by content: LOBSTER's AMZN sample
has 48 legitimate hidden executions identical in time, size and price, and all of them
are real trades. A duplicate is a tick whose key ``(provider, symbol, kind, seq)``
(``kind`` = trade if price is not null, else quote) was already accepted, in the same
batch or an earlier one. To bound memory the normalizer forgets a key once no tick with
it can matter: under ``drop`` once the watermark passes its tick (a replay arriving after
that is a *late tick*, quarantined as ``late``); under ``amend`` only once the watermark
is ``event_time.amend_window_ms`` past it, so a trade resent after a reconnect or a
backfill within the window is a ``duplicate`` -- not a late trade that would amend its
bar a second time (doubled volume and trade count). Beyond the window the bar engine no
longer amends the bar, and quarantines such a trade as ``late``. Only accepted ticks are remembered, so a
corrected resend of a rejected tick is not mistaken for a duplicate.

The good path is vectorized (pyarrow.compute and numpy); Python runs per row only to
format the quarantine rows of rejected ticks.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph.operator import Emit, Operator, OperatorContext, Params
from graph.schemas import QUARANTINE, QUARANTINE_ROW, TICK, stream_source, watermark_rows
from graph.times import iso_ns

__all__ = ["Normalizer", "NormalizerParams", "REASONS"]

#: Quarantine reason codes, in check priority order.
REASONS: tuple[str, ...] = (
    "unknown_symbol",
    "bad_timestamp",
    "bad_price",
    "bad_size",
    "bad_quote",
    "crossed_quote",
    "late",
    "duplicate",
)
_UNKNOWN_SYMBOL, _BAD_TIMESTAMP, _BAD_PRICE, _BAD_SIZE, _BAD_QUOTE, _CROSSED_QUOTE, _LATE, _DUPLICATE = range(1, 9)
_NONE = int(np.iinfo(np.int64).min)  # no event time seen yet
_TRADE, _QUOTE = "trade", "quote"
_SYMBOLS_SHOWN = 5  # how many configured symbols an unknown_symbol detail lists


class NormalizerParams(Params):
    """Params of the ``normalizer`` kind.

    Attributes:
        symbols: the known symbols; a tick with any other symbol is quarantined as
            ``unknown_symbol``. ``None`` (the default) accepts every symbol.
        dedup: quarantine replays of a (provider, symbol, kind, seq) as ``duplicate``.
    """

    symbols: list[str] | None = None
    dedup: bool = True


class _SeenSeqs:
    """The sequence numbers accepted for one (provider, symbol, kind) key, with their ts.

    A small log-structured set: sorted int64 runs, merged like a binary counter so there
    are O(log n) runs and each lookup is a few ``np.searchsorted`` calls. Keys are unique
    across runs (only unseen keys are added).
    """

    __slots__ = ("runs",)

    def __init__(self, runs: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = runs or []  # (sorted seqs, their ts)

    def __len__(self) -> int:
        return sum(len(seqs) for seqs, _ in self.runs)

    def contains(self, seqs: np.ndarray) -> np.ndarray:
        found = np.zeros(len(seqs), dtype=bool)
        for run, _ in self.runs:
            pos = np.searchsorted(run, seqs)
            np.minimum(pos, len(run) - 1, out=pos)
            found |= run[pos] == seqs
        return found

    def add(self, seqs: np.ndarray, ts: np.ndarray) -> None:
        if len(seqs) == 0:
            return
        order = np.argsort(seqs, kind="stable")
        self.runs.append((seqs[order], ts[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= len(self.runs[-1][0]):
            (seqs_a, ts_a), (seqs_b, ts_b) = self.runs[-2], self.runs[-1]
            merged = np.concatenate([seqs_a, seqs_b])
            order = np.argsort(merged, kind="stable")  # two sorted runs: linear for timsort
            self.runs[-2:] = [(merged[order], np.concatenate([ts_a, ts_b])[order])]

    def forget_before(self, watermark: int) -> None:
        kept = []
        for seqs, ts in self.runs:
            keep = ts >= watermark
            if keep.all():
                kept.append((seqs, ts))
            elif keep.any():
                kept.append((seqs[keep], ts[keep]))
        self.runs = kept


class Normalizer(Operator):
    """Validates TICK batches and splits them into accepted ticks and quarantine rows.

    Input: any stream of TICK batches (extra columns are an error; a batch whose
    columns are TICK's in another order or nullability is conformed by a cast).

    Outputs:
        ``ticks``: TICK, the accepted rows in input order.
        ``quarantine``: QUARANTINE, one row per rejected tick: ``source`` = ``stream_source(node, provider, symbol)``,
        ``row`` = the tick's ``seq``, ``symbol``/``ts`` copied, ``reason`` from
        :data:`REASONS`, ``detail`` e.g. ``price nan must be a finite number > 0``,
        ``raw`` = the tick as compact JSON (key order of TICK; non-finite floats
        written as ``NaN``/``Infinity``/``-Infinity``, which Python's ``json`` reads
        back, so the offending value survives).

    Empty outputs are not emitted. See the module docstring for the checks and the
    de-duplication window.
    """

    Params: ClassVar[type[Params]] = NormalizerParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"ticks": TICK, "quarantine": QUARANTINE}

    def __init__(self, params: NormalizerParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        symbols = params.symbols
        self._symbols = None if symbols is None else pa.array(sorted(set(symbols)), pa.string())
        self._seen: dict[tuple[str, str, str], _SeenSeqs] = {}
        self._received = 0
        self._accepted = 0
        self._late_accepted = 0
        self._quarantined = dict.fromkeys(REASONS, 0)
        self._watermark: int | None = None
        self._max_ts = _NONE  # largest plausible ts received so far
        self._plausible = ctx.event_time_range
        self._row_watermark = np.zeros(0, dtype=np.int64)  # per row of the current batch

    # -- operator hooks ----------------------------------------------------------------

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Validate one TICK batch.

        Args:
            stream: the input stream name (any; the normalizer has one logical input).
            batch: TICK rows.

        Returns:
            ``[("ticks", accepted)]`` and/or ``[("quarantine", rejected)]``, each only if
            non-empty; accepted + rejected rows == ``batch.num_rows``.

        Raises:
            ValueError: the batch lacks TICK columns, has extra ones, cannot be cast,
                or has nulls in a non-nullable column (a source bug, not bad data).
        """
        batch = self._conform(stream, batch)
        n = batch.num_rows
        self._received += n
        if n == 0:
            return []
        ts = batch["ts"].to_numpy()
        plausible = self._plausible.contains(ts)
        self._row_watermark = self._watermarks(ts, plausible & watermark_rows(batch))
        reason = self._reasons(batch, ts, plausible)
        if self.params.dedup:
            self._dedup(batch, reason)
        ok = reason == 0
        emits: list[Emit] = []
        accepted = int(ok.sum())
        self._accepted += accepted
        if self.ctx.late_policy == "amend":
            self._late_accepted += int(np.count_nonzero(ok & (ts < self._row_watermark)))
        if accepted == n:
            emits.append(("ticks", batch))
        elif accepted:
            emits.append(("ticks", batch.filter(pa.array(ok))))
        if accepted < n:
            emits.append(("quarantine", self._quarantine(batch, reason)))
        return emits

    def _watermarks(self, ts: np.ndarray, counted: np.ndarray) -> np.ndarray:
        """The watermark each row is judged against (int64 ns; ``_NONE``: none yet), and
        the running maximum (over the ``counted`` rows) advanced past the batch. See the
        module docstring."""
        seen = np.maximum.accumulate(np.where(counted, ts, _NONE))
        before = np.empty_like(seen)
        before[0] = self._max_ts
        np.maximum(seen[:-1], self._max_ts, out=before[1:])
        self._max_ts = max(self._max_ts, int(seen[-1]))
        lateness = self.ctx.allowed_lateness_ns
        marks = np.where(before == _NONE, _NONE, before - lateness)
        if self._watermark is not None:
            np.maximum(marks, self._watermark, out=marks)
        return marks

    def on_watermark(self, ts: int) -> list[Emit]:
        """Record the watermark (int64 ns UTC): later ticks older than it are late; forget
        de-duplication keys of ticks older than it (``drop``) or older than it minus the
        amend window (``amend``: a resend within the window must not amend a bar twice)."""
        if self._watermark is None or ts > self._watermark:
            self._watermark = int(ts)
        horizon = ts - self.ctx.amend_window_ns if self.ctx.late_policy == "amend" else ts
        for key in list(self._seen):
            seen = self._seen[key]
            seen.forget_before(horizon)
            if not seen.runs:
                del self._seen[key]
        return []

    def metrics(self) -> dict[str, Any]:
        """Counters: ``received``, ``accepted`` (rows), ``quarantined`` ({reason: rows}),
        ``late_accepted`` (late ticks accepted under ``amend``), ``dedup_keys`` (keys
        currently remembered). ``received == accepted + sum(quarantined.values())``."""
        return {
            "received": self._received,
            "accepted": self._accepted,
            "quarantined": dict(self._quarantined),
            "late_accepted": self._late_accepted,
            "dedup_keys": sum(len(seen) for seen in self._seen.values()),
        }

    def snapshot(self) -> dict[str, Any]:
        """The de-duplication keys and the counters (picklable)."""
        return {
            "seen": {key: list(seen.runs) for key, seen in self._seen.items()},
            "received": self._received,
            "accepted": self._accepted,
            "late_accepted": self._late_accepted,
            "quarantined": dict(self._quarantined),
            "watermark": self._watermark,
            "max_ts": self._max_ts,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot`."""
        self._seen = {key: _SeenSeqs(list(runs)) for key, runs in state["seen"].items()}
        self._received = state["received"]
        self._accepted = state["accepted"]
        self._late_accepted = state.get("late_accepted", 0)
        self._quarantined = {**dict.fromkeys(REASONS, 0), **state["quarantined"]}
        self._watermark = state.get("watermark")
        self._max_ts = state.get("max_ts", _NONE)

    # -- internals ---------------------------------------------------------------------

    def _conform(self, stream: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not batch.schema.equals(TICK):
            batch = self._cast(stream, batch)
        nulls = [f.name for f in TICK if not f.nullable and batch.column(f.name).null_count]
        if nulls:
            raise ValueError(
                f"normalizer {self.ctx.node_id!r}: batch on stream {stream!r} has nulls in "
                f"non-nullable TICK column(s) {nulls}; the source must fill them"
            )
        return batch

    def _cast(self, stream: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = set(batch.schema.names)
        missing = [name for name in TICK.names if name not in names]
        extra = sorted(names - set(TICK.names))
        if missing or extra:
            raise ValueError(
                f"normalizer {self.ctx.node_id!r}: batch on stream {stream!r} does not match "
                f"the TICK schema (missing columns: {missing or 'none'}; "
                f"unexpected columns: {extra or 'none'})"
            )
        try:
            # keep the batch's schema metadata (e.g. a replayer's ``tickgraph.replay_run_id``)
            return batch.select(TICK.names).cast(TICK).replace_schema_metadata(batch.schema.metadata)
        except (
            ValueError,
            pa.ArrowNotImplementedError,
            pa.ArrowTypeError,
        ) as e:  # ArrowInvalid is a ValueError
            raise ValueError(
                f"normalizer {self.ctx.node_id!r}: batch on stream {stream!r} cannot be cast "
                f"to the TICK schema: {e}"
            ) from e

    def _reasons(self, batch: pa.RecordBatch, ts: np.ndarray, plausible: np.ndarray) -> np.ndarray:
        """int8 per row: 0 if valid so far, else 1 + index into REASONS (first failing)."""
        n = batch.num_rows
        is_trade = _to_bool(pc.is_valid(batch["price"]))
        is_quote = ~is_trade
        price = _to_float(batch["price"])
        size = _to_float(batch["size"])
        bid_present = _to_bool(pc.is_valid(batch["bid"]))
        ask_present = _to_bool(pc.is_valid(batch["ask"]))
        bid = _to_float(batch["bid"])
        ask = _to_float(batch["ask"])
        with np.errstate(invalid="ignore"):
            checks = [
                (_UNKNOWN_SYMBOL, self._unknown_symbol(batch)),
                (_BAD_TIMESTAMP, ~plausible),
                (_BAD_PRICE, is_trade & ~(np.isfinite(price) & (price > 0))),
                (_BAD_SIZE, is_trade & ~(np.isfinite(size) & (size >= 0))),
                (
                    _BAD_QUOTE,
                    is_quote
                    & (
                        (bid_present & ~(np.isfinite(bid) & (bid > 0)))
                        | (ask_present & ~(np.isfinite(ask) & (ask > 0)))
                        | (~bid_present & ~ask_present)
                    ),
                ),
                (_CROSSED_QUOTE, is_quote & bid_present & ask_present & (bid > ask)),
                (_LATE, self._late(ts)),
            ]
        reason = np.zeros(n, dtype=np.int8)
        for code, failed in reversed(checks):  # earlier checks overwrite later ones
            if failed is not None:
                reason[failed] = code
        return reason

    def _late(self, ts: np.ndarray) -> np.ndarray | None:
        """Late policy ``drop``: rows with ``ts`` < their watermark; None if nothing can be late."""
        if self.ctx.late_policy != "drop":
            return None
        return ts < self._row_watermark

    def _unknown_symbol(self, batch: pa.RecordBatch) -> np.ndarray | None:
        if self._symbols is None:
            return None
        known = pc.is_in(batch["symbol"], value_set=self._symbols)
        return ~_to_bool(pc.fill_null(known, False))

    def _dedup(self, batch: pa.RecordBatch, reason: np.ndarray) -> None:
        """Mark replays of an accepted (provider, symbol, kind, seq) as duplicates, in place."""
        candidates = np.flatnonzero(reason == 0)
        if len(candidates) == 0:
            return
        sub = batch if len(candidates) == batch.num_rows else batch.take(pa.array(candidates))
        providers = pc.dictionary_encode(sub["provider"])
        symbols = pc.dictionary_encode(sub["symbol"])
        provider_names = providers.dictionary.to_pylist()
        symbol_names = symbols.dictionary.to_pylist()
        is_trade = _to_bool(pc.is_valid(sub["price"]))
        group = (
            providers.indices.to_numpy().astype(np.int64) * len(symbol_names) + symbols.indices.to_numpy()
        ) * 2 + is_trade
        seqs = sub["seq"].to_numpy()
        ts = sub["ts"].to_numpy()
        order = np.argsort(group, kind="stable")  # rows of a group stay in input order
        sorted_group = group[order]
        starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            rows = order[start:end]
            g = int(sorted_group[start])
            key = (
                provider_names[g // 2 // len(symbol_names)],
                symbol_names[g // 2 % len(symbol_names)],
                _TRADE if g % 2 else _QUOTE,
            )
            group_seqs = seqs[rows]
            duplicate = np.ones(len(rows), dtype=bool)
            duplicate[np.unique(group_seqs, return_index=True)[1]] = False  # first occurrence
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = _SeenSeqs()
            else:
                duplicate |= seen.contains(group_seqs)
            fresh = ~duplicate
            seen.add(group_seqs[fresh], ts[rows][fresh])
            reason[candidates[rows[duplicate]]] = _DUPLICATE

    def _quarantine(self, batch: pa.RecordBatch, reason: np.ndarray) -> pa.RecordBatch:
        rejected = np.flatnonzero(reason)
        ticks = batch.take(pa.array(rejected)).to_pylist()
        codes = reason[rejected].tolist()
        details = []
        for tick, code, pos in zip(ticks, codes, rejected.tolist()):
            self._quarantined[REASONS[code - 1]] += 1
            details.append(self._detail(code, tick, int(self._row_watermark[pos])))
        columns = {
            "source": [stream_source(self.ctx.node_id, t["provider"], t["symbol"]) for t in ticks],
            "row": [tick["seq"] for tick in ticks],
            "symbol": [tick["symbol"] for tick in ticks],
            "ts": [tick["ts"] for tick in ticks],
            "reason": [REASONS[code - 1] for code in codes],
            "detail": details,
            "raw": [json.dumps(tick, separators=(",", ":"), allow_nan=True) for tick in ticks],
        }
        return pa.RecordBatch.from_pydict(columns, schema=QUARANTINE_ROW)

    def _detail(self, code: int, tick: dict[str, Any], watermark: int) -> str:
        if code == _UNKNOWN_SYMBOL:
            known = self._symbols.to_pylist()
            shown = ", ".join(known[:_SYMBOLS_SHOWN])
            if len(known) > _SYMBOLS_SHOWN:
                shown += f", ... ({len(known)} in all)"
            return f"symbol {tick['symbol']!r} is not one of the configured symbols ({shown})"
        if code == _BAD_TIMESTAMP:
            return self._plausible.describe(tick["ts"])
        if code == _BAD_PRICE:
            return f"price {_show(tick['price'])} must be a finite number > 0"
        if code == _BAD_SIZE:
            return f"size {_show(tick['size'])} must be a finite number >= 0"
        if code == _BAD_QUOTE:
            bid, ask = tick["bid"], tick["ask"]
            if bid is None and ask is None:
                return "quote has neither price nor bid/ask; bid or ask must be set"
            field, value = ("ask", ask) if _absent_or_valid(bid) else ("bid", bid)
            return f"{field} {_show(value)} must be a finite number > 0"
        if code == _CROSSED_QUOTE:
            return f"bid {_show(tick['bid'])} > ask {_show(tick['ask'])}: crossed quote (bid must be <= ask)"
        if code == _LATE:
            return (
                f"ts {tick['ts']} ({iso_ns(tick['ts'])}) is older than its watermark {watermark} "
                f"({iso_ns(watermark)}; newest earlier event time minus allowed lateness): "
                "late tick; late_policy drop: not applied"
            )
        kind = _QUOTE if tick["price"] is None else _TRADE
        return (
            f"seq {tick['seq']} already seen for provider {tick['provider']!r}, "
            f"symbol {tick['symbol']!r}, {kind}: replayed tick"
        )


def _to_float(array: pa.Array) -> np.ndarray:
    """float64 numpy view of a float64 Arrow array; nulls become NaN."""
    return array.to_numpy(zero_copy_only=False)


def _to_bool(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _absent_or_valid(value: float | None) -> bool:
    return value is None or (np.isfinite(value) and value > 0)


def _show(value: float | None) -> str:
    return "null" if value is None else repr(value)
