"""The machinery every live websocket source shares: a private asyncio loop, reconnects, batches.

Threads and hand-off::

    source thread (asyncio, aiohttp)                 host thread (NodeHost.pump)
    ws.receive -> handle_frame -> rows --flush-->  [bounded outbox]  --> events(): ("ticks", batch),
                 (per provider)          size or linger_ms              Watermark, ... or IDLE

* The loop thread starts on the first ``events()`` call and owns the websocket: it
  connects, sends the provider's subscribe (and auth) messages, reads frames and parses
  them into TICK rows (``handle_frame``, one implementation per provider). Rows are
  flushed into the outbox as one micro-batch when ``batch_rows`` are pending or
  ``linger_ms`` after the first pending row, so a quiet feed still delivers within
  ``linger_ms``. Malformed frames become QUARANTINE rows (``actors/live/parsing.py``).
* ``events()`` takes batches from the outbox and yields each ``("ticks", batch)``
  followed by a :class:`~graph.operator.Watermark` from a live
  :class:`~graph.watermarks.WatermarkGenerator`; with nothing ready it yields the
  watermark if the idle advance moved it, then ``IDLE``. It waits for data (at most
  ``poll_ms`` <= 50 ms) only at the start of a host step; once it has yielded
  something, an empty outbox ends the step at once, so the host sends each batch
  downstream as soon as it arrives (the bar engine's forming update follows within the
  same step, on the batch's watermark).
* Backpressure: the outbox holds ``max_queued_batches``; while it is full the loop stops
  reading the socket (TCP pushes back to the exchange), it never grows without bound.
* Liveness: aiohttp answers websocket pings (``autoping``) and sends its own every
  ``heartbeat_s`` (a missing pong closes the socket); a connection that delivers no
  frame at all for ``silence_timeout_s`` is *silent* (a watchdog task on the loop's
  monotonic clock notices it) and is closed and reconnected.
  Provider keep-alives (Finnhub ``{"type":"ping"}``, Coinbase ``heartbeat``) count as
  frames.
* Reconnect: after a drop, a close, a silence or a failed connect the source waits
  ``reconnect_initial_s * reconnect_multiplier**attempt`` (capped at
  ``reconnect_max_s``), shortened by up to ``reconnect_jitter`` of itself at random
  (``random.Random(jitter_seed)``: a seed makes the delays reproducible), then
  reconnects and resubscribes. The attempt counter resets once a connection delivers
  data; ``max_reconnects`` consecutive failures end the source with an error.
  Everything parsed before a drop is flushed first: nothing received is lost.
* Sequence gaps: providers with trade ids (Binance, Coinbase) report a jump in a
  symbol's trade ids as a gap (count in ``metrics()['gaps']``, missing ids in
  ``missing_trades``, one WARNING log line with the REST request that would backfill
  it); with ``backfill: true`` the request is sent and the recovered trades are
  emitted (they never advance the watermark and may be late ticks downstream).
* ``stop()`` / ``close()``: cancel the loop, flush every row already parsed into the
  outbox and end the thread; ``events()`` then yields what is left and returns. A host
  that pulls ``events()`` after ``stop()`` therefore loses nothing at a stop. (The
  runtime of issue 2 sends end-of-stream first and calls ``close()`` after it, so the
  rows inside the source at that moment -- at most about one ``linger_ms`` of ticks --
  are not forwarded; the NodeHost.pump change proposed with issue 5 drains them.) A
  fatal error (a refused key) is queued after the rows before it and raised by
  ``events()`` in order. Nothing here ever logs or raises a key (``actors/live/keys.py``).

Watermarks: only ticks stamped with a real-time exchange event time advance the
watermark. Ticks whose ``ts`` is a receive time (Binance spot ``bookTicker``) or that
replay history (Coinbase's subscription snapshot, backfilled trades) do not, so a clock
skew or a stale snapshot cannot make on-time trades late. Before the first such tick
the feed counts as idle from the source's start (``idle_timeout_ms`` of the graph's
``event_time``), so a quote-only feed still gets a wall-clock watermark.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
import pyarrow as pa
from pydantic import ConfigDict, Field, field_validator

from actors.live.keys import Secret, redact
from actors.live.parsing import FrameError, QuarantineRows, TickRows
from graph.operator import IDLE, Emit, OperatorContext, Params, Source, Watermark, check_snapshot_version
from graph.schemas import QUARANTINE, TICK, watermark_rows
from graph.watermarks import WatermarkGenerator

__all__ = ["LiveParams", "LiveSource", "Backoff", "SequenceTracker", "RestRequest", "FatalSourceError", "ConnectionLost"]


class FatalSourceError(RuntimeError):
    """A failure reconnecting cannot fix (a refused key, a rejected subscription)."""


class ConnectionLost(Exception):
    """The current connection ended (closed, dropped, silent); the loop reconnects."""


@dataclass(frozen=True)
class RestRequest:
    """A REST request that backfills missing trades (built by a provider, sent by the source).

    Attributes:
        method: ``GET``.
        url: absolute URL without query.
        params: query parameters, in order.
    """

    method: str
    url: str
    params: dict[str, str | int] = field(default_factory=dict)

    @property
    def full_url(self) -> str:
        """``url?params`` as sent."""
        return f"{self.url}?{urlencode(self.params)}" if self.params else self.url


@dataclass
class Backoff:
    """Exponential reconnect delays with jitter.

    ``delay(attempt) = min(max_s, initial_s * multiplier**attempt) * (1 - jitter * u)``
    with ``u`` uniform in [0, 1) from ``rng``: jitter 0 is plain exponential backoff,
    jitter 1 is "full jitter" (AWS Architecture Blog, "Exponential Backoff and Jitter").

    Attributes:
        initial_s, max_s: first and largest delay (seconds).
        multiplier: growth per attempt (>= 1).
        jitter: fraction of the delay that may be randomly removed, in [0, 1].
        rng: the random source (seeded for reproducible delays).
    """

    initial_s: float
    max_s: float
    multiplier: float
    jitter: float
    rng: random.Random

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (0-based)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return base * (1.0 - self.jitter * self.rng.random())


class SequenceTracker:
    """Last trade id per key (e.g. ``(symbol, "trade")``), to detect gaps.

    ``check`` returns the missing id range when an id jumps by more than one; a repeated
    or older id returns None and is counted in ``repeated`` (duplicates are the
    normalizer's job; they are not gaps).
    """

    def __init__(self) -> None:
        self.last: dict[Any, int] = {}
        self.repeated = 0

    def check(self, key: Any, seq: int) -> tuple[int, int] | None:
        """Record ``seq`` for ``key``; ``(first_missing, last_missing)`` if ids were skipped."""
        last = self.last.get(key)
        if last is not None and seq <= last:
            self.repeated += 1
            return None
        self.last[key] = seq
        if last is not None and seq > last + 1:
            return last + 1, seq - 1
        return None


class _Outbox:
    """Thread-safe FIFO from the loop thread to ``events()``; ``capacity`` bounds normal puts."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque = deque()
        self._ready = threading.Condition()

    def full(self) -> bool:
        """True when ``capacity`` items wait (the loop thread then stops reading)."""
        return len(self._items) >= self.capacity

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: tuple) -> None:
        """Append ``item`` (never blocks: the bound is enforced by the reader) and wake ``get``."""
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self, timeout_s: float) -> tuple | None:
        """The oldest item, waiting up to ``timeout_s`` (0: no wait); None if there is none."""
        with self._ready:
            if not self._items and timeout_s > 0:
                self._ready.wait(timeout_s)
            return self._items.popleft() if self._items else None


class LiveParams(Params):
    """Params every live source has.

    Attributes:
        url: websocket URL (``ws://`` or ``wss://``); point it at a local server in tests.
        symbols: instruments to subscribe to, as the provider spells them.
        batch_rows: flush a micro-batch once this many ticks are pending.
        linger_ms: flush a non-empty micro-batch at the latest this long after its first
            tick (0: after every frame).
        max_queued_batches: outbox capacity (batches); when full the socket is not read.
        poll_ms: longest ``events()`` waits for data before yielding ``IDLE`` (<= 50).
        connect_timeout_s: TCP + TLS + websocket handshake limit.
        heartbeat_s: websocket ping interval (aiohttp closes the socket when the pong
            is missing for half of it); None: no client pings.
        silence_timeout_s: no frame at all for this long = a silent connection:
            close and reconnect. None disables.
        reconnect_initial_s, reconnect_max_s, reconnect_multiplier, reconnect_jitter:
            the :class:`Backoff` schedule.
        jitter_seed: seed of the jitter RNG (None: from the OS).
        max_reconnects: consecutive failed connections before the source fails; None: forever.
        backfill: send the REST request of a sequence gap and emit the recovered trades.
        rest_url: the provider's REST base URL for backfills.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str
    symbols: list[str] = Field(min_length=1)
    batch_rows: int = Field(4096, ge=1)
    linger_ms: float = Field(10.0, ge=0)
    max_queued_batches: int = Field(64, ge=1)
    poll_ms: float = Field(20.0, gt=0, le=50)
    connect_timeout_s: float = Field(10.0, gt=0)
    heartbeat_s: float | None = Field(20.0, gt=0)
    silence_timeout_s: float | None = Field(30.0, gt=0)
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    reconnect_multiplier: float = Field(2.0, ge=1)
    reconnect_jitter: float = Field(0.5, ge=0, le=1)
    jitter_seed: int | None = None
    max_reconnects: int | None = Field(None, ge=0)
    backfill: bool = False
    rest_url: str = ""

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"must be a ws:// or wss:// URL, got scheme {parts.scheme or 'none'!r}")
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str]) -> list[str]:
        if any(not symbol.strip() for symbol in value):
            raise ValueError("symbols must be non-empty strings")
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"symbols must be unique, got {', '.join(repeated)} more than once")
        return value


class LiveSource(Source):
    """Base of the websocket sources (see the module docstring). Subclasses implement:

    * :meth:`handle_frame` (parse one text frame into :meth:`trade` / :meth:`quote` /
      :meth:`reject` calls; may :meth:`reply`),
    * :meth:`subscribe_messages` (JSON messages sent after connecting) or :meth:`on_open`,
    * optionally :meth:`connect_url` (adds secrets), :meth:`backfill_request` and
      :meth:`parse_backfill`, and the class attribute ``provider``.

    Outputs:
        ticks: TICK micro-batches, origin ``live``, provider ``provider``.
        quarantine: QUARANTINE rows of malformed frames (reasons in ``actors/live/parsing.py``).
    """

    Params: ClassVar[type[Params]] = LiveParams
    outputs: ClassVar[dict[str, pa.Schema]] = {"ticks": TICK, "quarantine": QUARANTINE}
    provider: ClassVar[str] = "live"
    #: Websocket handshake statuses that reconnecting cannot fix.
    fatal_statuses: ClassVar[frozenset[int]] = frozenset({401, 403, 451})

    def __init__(self, params: LiveParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._log = logging.getLogger(f"tickgraph.live.{self.provider}")
        self._clock = ctx.clock_ns or time.time_ns
        self._watermarks = WatermarkGenerator("live", ctx.allowed_lateness_ns, ctx.idle_timeout_ns)
        self._observed = False
        self._outbox = _Outbox(params.max_queued_batches)
        self._ticks = TickRows()
        self._bad = QuarantineRows()
        self._quarantine_source = f"{ctx.node_id}/{self.provider}"
        self._next_row = 0
        self._counts: Counter[str] = Counter()
        self._ignored: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._sequences = SequenceTracker()
        self._backoff = Backoff(
            params.reconnect_initial_s,
            params.reconnect_max_s,
            params.reconnect_multiplier,
            params.reconnect_jitter,
            random.Random(params.jitter_seed),
        )
        self._secrets: list[Secret] = []
        self._replies: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task | None = None
        self._loop_ready = threading.Event()
        self._stopping = threading.Event()
        self._finished = False
        self._linger: asyncio.TimerHandle | None = None
        self._session: aiohttp.ClientSession | None = None
        self._backfills: set[asyncio.Task] = set()
        self._got_data = False
        self._started_ns: int | None = None
        self._emitted = 0
        self._emitted_ids: dict[str, int] = {}  # symbol -> largest trade seq emitted (the offset)
        self._newest_emitted: int | None = None  # largest watermark-moving ts emitted
        self._last_watermark: int | None = None
        self._last_frame = 0.0  # time.monotonic() of the last frame (silence watchdog)
        self._recv_ns = 0  # receive time of the frame being parsed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(node_id={self.ctx.node_id!r}, url={self.display_url()!r}, symbols={self.params.symbols!r})"

    # -- provider hooks ------------------------------------------------------------------

    def handle_frame(self, text: str, recv_ns: int) -> None:
        """Parse one text frame received at ``recv_ns`` (ns UTC); raise FrameError for a bad frame."""
        raise NotImplementedError

    def subscribe_messages(self) -> list[dict[str, Any]]:
        """JSON messages sent, in order, right after each (re)connect."""
        return []

    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Called once per connection before reading: sends :meth:`subscribe_messages`."""
        for message in self.subscribe_messages():
            await ws.send_str(orjson.dumps(message).decode())
        self._counts["subscriptions_sent"] += 1

    def connect_url(self) -> str:
        """The URL actually dialled (may carry a secret: never log it; see :meth:`display_url`)."""
        return self.params.url

    def display_url(self) -> str:
        """The URL for logs and errors: no secret in it."""
        return redact(self.params.url, self._secrets)

    def backfill_request(self, symbol: str, first_id: int, last_id: int) -> RestRequest | None:
        """The REST request returning trades ``first_id..last_id`` of ``symbol`` (None: no REST API)."""
        return None

    def parse_backfill(self, symbol: str, payload: Any, first_id: int, last_id: int, recv_ns: int) -> int:
        """Emit the trades of a backfill response (ids in ``first_id..last_id``); returns how many."""
        return 0

    # -- helpers for providers ---------------------------------------------------------------

    def _plausible(self, ts: int) -> bool:
        return self.ctx.earliest_ns <= ts < self.ctx.latest_ns

    def trade(
        self, symbol: str, ts: int, seq: int, price: float, size: float, side: str | None, *, advances_watermark: bool = True
    ) -> None:
        """Append a trade tick (``ts`` ns UTC exchange time; ``side`` = aggressor ``buy``/``sell``).

        A ``ts`` outside the plausible event-time range never advances the watermark (the
        normalizer quarantines the tick as ``bad_timestamp``).
        """
        advances_watermark = advances_watermark and self._plausible(ts)
        self._ticks.add(symbol, ts, seq, price=price, size=size, side=side, advances_watermark=advances_watermark, now_ns=self._recv_ns)
        self._counts["trades"] += 1

    def quote(
        self,
        symbol: str,
        ts: int,
        seq: int,
        bid: float | None,
        ask: float | None,
        bid_size: float | None = None,
        ask_size: float | None = None,
        *,
        advances_watermark: bool = True,
    ) -> None:
        """Append a quote tick (price null; ``advances_watermark=False`` when ``ts`` is a receive time)."""
        advances_watermark = advances_watermark and self._plausible(ts)
        self._ticks.add(
            symbol, ts, seq, bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size,
            advances_watermark=advances_watermark, now_ns=self._recv_ns,
        )  # fmt: skip
        self._counts["quotes"] += 1

    def reject(self, error: FrameError, raw: str, recv_ns: int, index: int = 0, symbol: str | None = None, ts: int | None = None) -> None:
        """Quarantine a malformed frame (or item ``index`` of a batched frame)."""
        row = recv_ns + index
        self._next_row = max(self._next_row, row + 1)
        self._bad.add(self._quarantine_source, row, error, redact(raw, self._secrets), symbol, ts)
        self._rejected[error.reason] += 1

    def ignore(self, kind: str) -> None:
        """Count a well-formed frame that carries no tick (acks, depth updates, ...)."""
        self._ignored[kind] += 1

    def reply(self, message: dict[str, Any]) -> None:
        """Send ``message`` (JSON) on the current connection after this frame (e.g. a pong)."""
        self._replies.append(orjson.dumps(message).decode())

    def check_sequence(self, symbol: str, kind: str, seq: int) -> None:
        """Track trade ids per (symbol, kind): log, count and maybe backfill a gap."""
        gap = self._sequences.check((symbol, kind), seq)
        if gap is None:
            return
        first, last = gap
        missing = last - first + 1
        self._counts["gaps"] += 1
        self._counts["missing_trades"] += missing
        request = self.backfill_request(symbol, first, last)
        backfill = f"; backfill: {request.method} {request.full_url}" if request is not None else ""
        self._log.warning(
            "%s %s %s id gap: %d -> %d (%d missing)%s",
            self.provider, symbol, kind, first - 1, last + 1, missing, backfill,
        )  # fmt: skip
        if request is not None and self.params.backfill and self._loop is not None:
            task = self._loop.create_task(self._backfill(symbol, first, last, request))
            self._backfills.add(task)
            task.add_done_callback(self._backfills.discard)

    def fail(self, message: str) -> None:
        """Raise a :class:`FatalSourceError` (secrets redacted) from inside frame handling."""
        raise FatalSourceError(redact(message, self._secrets))

    # -- Source API -----------------------------------------------------------------------

    def events(self) -> Iterator[Emit | Watermark | object]:
        """Yield tick batches, each followed by a watermark; watermarks and IDLE when quiet.

        Never blocks longer than ``poll_ms``. Ends (returns) only after :meth:`stop`
        once everything received has been yielded.

        Raises:
            FatalSourceError: the provider refused the key or the subscription, or
                ``max_reconnects`` consecutive connections failed (after yielding the
                ticks received before).
        """
        self._start()
        poll_s = self.params.poll_ms / 1000
        waited = True
        while True:
            # Wait only at the start of a host step: once something was yielded, an empty
            # outbox ends the step at once (IDLE), so the host sends the batch downstream
            # now instead of holding it while more batches trickle in (latency).
            item = self._outbox.get(poll_s if waited else 0.0)
            now = self._clock()
            if item is None:
                waited = True
                watermark = self._advance(now)
                if watermark is not None:
                    yield watermark
                yield IDLE
                continue
            waited = False
            kind = item[0]
            if kind == "ticks":
                _, batch, top = item
                if top is not None:
                    self._watermarks.observe(top, now)
                    self._observed = True
                self._emitted += batch.num_rows
                self._note_emitted(batch)
                yield "ticks", batch
                watermark = self._advance(now)
                if watermark is not None:
                    yield watermark
            elif kind == "quarantine":
                yield "quarantine", item[1]
            elif kind == "error":
                self._finished = True
                raise item[1]
            else:  # "done": stopped, everything yielded
                self._finished = True
                return

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop receiving: cancel the loop, flush every parsed row into the outbox, end the thread.

        Afterwards ``events()`` yields what is left, then returns (idempotent).
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is None:  # never started: nothing was received
            self._outbox.put(("done",))
            return
        self._loop_ready.wait(timeout_s)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._cancel_main)
            except RuntimeError:  # loop already closed: the thread is ending on its own
                pass
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._log.warning("%s source %s: loop thread did not stop within %.1f s", self.provider, self.ctx.node_id, timeout_s)

    def close(self) -> None:
        """Stop the loop thread (see :meth:`stop`); rows not yet pulled stay in the outbox."""
        self.stop()

    def metrics(self) -> dict[str, Any]:
        """Counters for the run summary (never a URL with a key, never a key).

        Returns:
            ``ticks`` (rows yielded), ``trades``/``quotes`` (parsed), ``frames``,
            ``quarantined`` {reason: n}, ``ignored`` {message kind: n}, ``connections``,
            ``reconnects``, ``silent_disconnects``, ``drops``, ``gaps``,
            ``missing_trades``, ``repeated_ids``, ``backfilled``, ``backfill_failures``,
            ``provider_errors``, ``backpressure_waits``, ``queued`` (batches), ``watermark``.
        """
        counts = self._counts
        names = (
            "frames", "trades", "quotes", "connections", "reconnects", "silent_disconnects", "drops",
            "gaps", "missing_trades", "backfilled", "backfill_failures", "provider_errors", "backpressure_waits",
        )  # fmt: skip
        return {
            "provider": self.provider,
            "ticks": self._emitted,
            **{name: counts[name] for name in names},
            "repeated_ids": self._sequences.repeated,
            "quarantined": dict(self._rejected),
            "ignored": dict(self._ignored),
            "queued": len(self._outbox),
            "watermark": self._last_watermark,
        }

    # -- checkpoints ---------------------------------------------------------------------------

    def _note_emitted(self, batch: pa.RecordBatch) -> None:
        trades = batch.filter(batch.column("price").is_valid())
        if trades.num_rows:
            for item in pa.Table.from_batches([trades]).group_by("symbol").aggregate([("seq", "max")]).to_pylist():
                symbol, seq = item["symbol"], item["seq_max"]
                self._emitted_ids[symbol] = max(seq, self._emitted_ids.get(symbol, seq))
        ts = batch.column("ts").to_numpy()[watermark_rows(batch)]
        if len(ts):
            top = int(ts.max())
            self._newest_emitted = top if self._newest_emitted is None else max(top, self._newest_emitted)

    def snapshot(self) -> dict[str, Any]:
        """The feed's offset: per symbol, the last trade id *emitted* (ticks still queued
        are not), the newest event time emitted, and the counters.

        After :meth:`restore`, the first trade of a (re)connection whose id jumps past the
        restored one is a sequence gap: counted, and with ``backfill: true`` fetched by
        REST (:meth:`backfill_request`), so nothing between the checkpoint and the restart
        is lost; trades received again are duplicates for the normalizer.
        """
        last_ids = {key: self._emitted_ids[key[0]] for key in self._sequences.last if key[0] in self._emitted_ids}
        return {
            "version": 1, "last_ids": last_ids, "emitted": self._emitted, "newest": self._newest_emitted,
            "counts": dict(self._counts), "provider_state": self.provider_state(),
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Resume after a :meth:`snapshot` (before the connection starts).

        Raises:
            ValueError: a snapshot of another version.
        """
        check_snapshot_version(state, 1, self.provider)
        self._sequences.last = dict(state["last_ids"])
        self._emitted_ids = {key[0]: seq for key, seq in state["last_ids"].items()}
        self._emitted, self._newest_emitted = state["emitted"], state["newest"]
        self._counts.update(state["counts"])
        if self._newest_emitted is not None:
            self._watermarks.observe(self._newest_emitted, self._clock())
        self.restore_provider_state(state["provider_state"])

    def provider_state(self) -> Any:
        """A provider's own resumable state (e.g. a seq counter), for :meth:`snapshot`."""
        return None

    def restore_provider_state(self, state: Any) -> None:
        """Restore what :meth:`provider_state` returned."""

    # -- internals: host side --------------------------------------------------------------

    def _advance(self, now: int) -> Watermark | None:
        """The watermark if it moved since the last one yielded."""
        idle = self.ctx.idle_timeout_ns
        if not self._observed and idle is not None and self._started_ns is not None and now - self._started_ns >= idle:
            self._watermarks.observe(self._started_ns, self._started_ns)  # idle since the start
            self._observed = True
        current = self._watermarks.current(now)
        if current is None or (self._last_watermark is not None and current <= self._last_watermark):
            return None
        self._last_watermark = current
        return Watermark(current)

    def _start(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        self._started_ns = self._clock()
        self._thread = threading.Thread(target=self._thread_main, name=f"live:{self.ctx.node_id}", daemon=True)
        self._thread.start()

    # -- internals: loop thread -----------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        final: tuple = ("done",)
        try:
            self._main_task = loop.create_task(self._main())
            self._loop_ready.set()
            if self._stopping.is_set():
                self._main_task.cancel()
            loop.run_until_complete(self._main_task)
        except asyncio.CancelledError:
            pass
        except FatalSourceError as exc:
            final = ("error", exc)
        except BaseException as exc:  # a bug in a connector: surface it from events()
            final = ("error", exc)
        finally:
            self._loop_ready.set()
            self._flush()
            self._outbox.put(final)
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _cancel_main(self) -> None:
        if self._main_task is not None:
            self._main_task.cancel()

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.params.connect_timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                self._session = session
                await self._connection_loop(session)
        finally:
            for task in list(self._backfills):
                task.cancel()

    async def _connection_loop(self, session: aiohttp.ClientSession) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._got_data = False
            try:
                await self._connect_once(session)
            except FatalSourceError:
                raise
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in self.fatal_statuses:
                    raise FatalSourceError(self._refused_message(exc.status)) from None
                self._log.warning("%s: %s refused the websocket handshake: HTTP %s", self.provider, self.display_url(), exc.status)
            except (ConnectionLost, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                self._log.warning("%s: connection to %s ended: %s", self.provider, self.display_url(), self._describe(exc))
            self._flush()  # nothing received before a drop is lost
            if self._stopping.is_set():
                return
            failures = 1 if self._got_data else failures + 1
            if self.params.max_reconnects is not None and failures > self.params.max_reconnects:
                raise FatalSourceError(
                    f"{self.provider}: {failures} consecutive connections to {self.display_url()} failed "
                    f"(max_reconnects {self.params.max_reconnects})"
                )
            delay = self._backoff.delay(failures - 1)
            self._counts["reconnects"] += 1
            self._log.warning("%s: reconnecting to %s in %.3f s (attempt %d)", self.provider, self.display_url(), delay, failures)
            await asyncio.sleep(delay)

    def _refused_message(self, status: int) -> str:
        return f"{self.provider}: {self.display_url()} refused the websocket handshake with HTTP {status}"

    def _describe(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return redact(f"{type(exc).__name__}: {text}" if not isinstance(exc, ConnectionLost) else text, self._secrets)

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        params = self.params
        async with session.ws_connect(
            self.connect_url(),
            heartbeat=params.heartbeat_s,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
            max_msg_size=16 * 1024 * 1024,
        ) as ws:
            self._counts["connections"] += 1
            self._log.info("%s: connected to %s", self.provider, self.display_url())
            await self.on_open(ws)
            await self._read(ws)

    async def receive_text(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The next text frame, within ``silence_timeout_s``; raises ConnectionLost otherwise."""
        silence = self.params.silence_timeout_s
        try:
            if silence is None:
                msg = await ws.receive()
            else:  # one deadline for the whole call: pongs inside receive() must not extend it
                msg = await asyncio.wait_for(ws.receive(), silence)
        except asyncio.TimeoutError:
            self._counts["silent_disconnects"] += 1
            raise ConnectionLost(f"no frame for {silence} s (silent connection)") from None
        if msg.type is aiohttp.WSMsgType.TEXT:
            return msg.data
        if msg.type is aiohttp.WSMsgType.BINARY:
            return msg.data.decode("utf-8", errors="replace")
        self._counts["drops"] += 1
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise ConnectionLost(f"websocket error: {msg.data}")
        raise ConnectionLost(f"closed by the server (code {ws.close_code})")

    async def process(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        """Parse one frame, send its replies, flush if due (used by :meth:`_read` and handshakes)."""
        recv = self._clock()
        if recv < self._next_row:
            recv = self._next_row
        self._next_row = recv + 1
        self._counts["frames"] += 1
        self._recv_ns = recv
        try:
            self.handle_frame(text, recv)
        except FrameError as error:
            self.reject(error, text, recv)
        if self._replies:
            replies, self._replies = self._replies, []
            for message in replies:
                await ws.send_str(message)
        self._after_rows()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read frames until the connection ends; a watchdog task ends a silent one.

        The hot loop awaits ``ws.receive()`` directly: a per-frame ``wait_for`` would cost
        a task per frame (too slow at 10,000 frames/s). The watchdog checks the time of
        the last frame every quarter of ``silence_timeout_s`` and cancels the reader.
        """
        silence = self.params.silence_timeout_s
        self._last_frame = time.monotonic()
        reader = asyncio.ensure_future(self._read_frames(ws))
        if silence is None:
            await reader
            return
        watchdog = asyncio.ensure_future(self._watch_silence(silence))
        try:
            await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, watchdog):
                task.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()
        self._counts["silent_disconnects"] += 1
        raise ConnectionLost(f"no frame for {silence} s (silent connection)")

    async def _watch_silence(self, silence: float) -> None:
        while True:
            remaining = self._last_frame + silence - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, silence / 4) + 0.001)

    async def _read_frames(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            while self._outbox.full():
                self._counts["backpressure_waits"] += 1
                await asyncio.sleep(0.001)
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                text = msg.data
            elif msg.type is aiohttp.WSMsgType.BINARY:
                text = msg.data.decode("utf-8", errors="replace")
            else:
                self._counts["drops"] += 1
                if msg.type is aiohttp.WSMsgType.ERROR:
                    raise ConnectionLost(f"websocket error: {msg.data}")
                raise ConnectionLost(f"closed by the server (code {ws.close_code})")
            self._last_frame = time.monotonic()
            self._got_data = True
            await self.process(ws, text)

    def _after_rows(self) -> None:
        pending = len(self._ticks) + len(self._bad)
        if not pending:
            return
        linger = self.params.linger_ms / 1000
        if len(self._ticks) >= self.params.batch_rows or linger == 0:
            self._flush()
        elif self._linger is None and self._loop is not None:
            self._linger = self._loop.call_later(linger, self._flush)

    def _flush(self) -> None:
        """Move every pending row into the outbox (quarantine first, then ticks)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if len(self._bad):
            self._outbox.put(("quarantine", self._bad.take()))
        if len(self._ticks):
            batch, top = self._ticks.take(self.provider)
            self._outbox.put(("ticks", batch, top))

    async def _backfill(self, symbol: str, first: int, last: int, request: RestRequest) -> None:
        try:
            async with self._session.request(request.method, request.url, params=request.params) as response:
                if response.status != 200:
                    raise aiohttp.ClientError(f"HTTP {response.status}")
                payload = await response.json(loads=orjson.loads, content_type=None)
            recv = self._recv_ns = self._clock()
            found = self.parse_backfill(symbol, payload, first, last, recv)
            self._counts["backfilled"] += found
            self._log.warning("%s %s: backfilled %d of %d missing trades", self.provider, symbol, found, last - first + 1)
            self._after_rows()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed backfill is logged and counted; the stream goes on
            self._counts["backfill_failures"] += 1
            self._log.warning("%s %s: backfill %s failed: %s", self.provider, symbol, request.full_url, self._describe(exc))
