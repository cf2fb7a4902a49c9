"""The ``api`` sink: a graph serves its own bar stream (or publishes it into a running service).

Two modes, one node kind:

* **serve** (default): the node runs the service (``service/app.py``: REST bars, WebSocket
  bars, signals, exports, replay jobs, ``/metrics``, the cockpit) on its own thread and
  event loop inside its actor, at ``host:port``, and feeds every ``bars`` batch it
  receives to the WebSocket hub. ``live.yaml`` uses it, so a live session serves its
  own stream at http://127.0.0.1:8000. The token comes from ``$TICKGRAPH_API_TOKEN``
  (never from params); a non-loopback ``host`` without it fails the node at start.
* **publish** (``publish_url`` set): no server; the batches go to the service at that
  URL over its ingest link (``service/wire.py``). The service adds such a node to the
  replay graphs it launches (``service/graphs.py``).

Inputs: ``bars`` (BAR rows, every status) and ``signals`` (SIGNAL rows: the newest value
per symbol and name is kept for ``GET /v1/signals/latest``). The node never blocks the
graph on a WebSocket client: publishing hands a batch to the service's loop and
returns (serve), or keeps at most 8 frames in flight to the service (publish).

Example::

    - id: api
      kind: api
      inputs: [bars, signals_spread_bps]
      params: {port: 8000, store_url: "sqlite:///tickgraph.db"}
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import ConfigDict, Field, field_validator, model_validator

from db.engine import absolute_sqlite_url, mask_url
from graph.operator import Emit, Operator, OperatorContext, Params

__all__ = ["ApiSink", "ApiParams"]

_log = logging.getLogger("tickgraph.api")


class ApiParams(Params):
    """Params of the ``api`` kind.

    Attributes:
        host, port: serve mode: where the service listens (127.0.0.1:8000; port 0 picks one).
        store_url: serve mode: the store the REST routes read (bars, signals, jobs).
        graph: serve mode: the replay graph of ``POST /v1/replay/ticks`` (default
            ``config/replay.yaml``).
        backfill_bars: confirmed bars kept per stream for ``?backfill=N``.
        client_buffer: unsent bytes per WebSocket client before it is closed (1008).
        client_stall_s: seconds a WebSocket client's socket may take nothing before it is closed.
        linger_s: serve mode: after end-of-stream keep serving until every client was sent
            every message, for at most this long; 0 stops with the graph.
        publish_url: publish mode: the service to send the bars to (``http://127.0.0.1:8000``).
        publish_key: publish mode: that service's ingest key (masked in ``repr``).
        publish_run: publish mode: the run id its messages carry (a replay job's id); None: a new id.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    store_url: str = "sqlite:///tickgraph.db"
    graph: str | None = None
    backfill_bars: int = Field(2000, ge=0, le=1_000_000)
    client_buffer: int = Field(4 << 20, ge=1, le=1 << 30)
    client_stall_s: float = Field(10.0, gt=0, le=3600)
    linger_s: float = Field(0.0, ge=0, le=86_400)
    publish_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    publish_key: str | None = None
    publish_run: str | None = Field(None, pattern=r"^[0-9A-Za-z_-]{1,64}$")

    @field_validator("store_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return absolute_sqlite_url(value)

    @model_validator(mode="after")
    def _publish(self) -> ApiParams:
        if (self.publish_url is None) != (self.publish_key is None):
            raise ValueError("publish_url and publish_key go together (publish mode)")
        return self

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            if name == "publish_key" and value:
                yield name, "***"
            else:
                yield name, mask_url(value) if name == "store_url" else value


class ApiSink(Operator):
    """Serves (or publishes) the graph's bars; see the module docstring.

    Args:
        params: :class:`ApiParams`.
        ctx: the host context.

    Raises:
        service.config.ServiceConfigError: a non-loopback host without ``$TICKGRAPH_API_TOKEN``.
        OSError: the port cannot be bound.
        service.wire.PublishError: publish mode: the service cannot be reached.
    """

    Params: ClassVar[type[Params]] = ApiParams
    outputs: ClassVar[dict[str, pa.Schema]] = {}

    def __init__(self, params: ApiParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        self._server: Any = None
        self._publisher: Any = None
        self._state: Any = None
        self._bars = 0
        self._signals = 0
        self.run = uuid.uuid4().hex  # serve mode: the run id of this node's messages
        if params.publish_url is not None:
            from service.wire import Publisher

            self._publisher = Publisher(params.publish_url, params.publish_key, params.publish_run or uuid.uuid4().hex)
            self.url = params.publish_url
            return
        from pathlib import Path

        from service.app import STATE, create_app
        from service.cluster import RayCluster
        from service.config import ServiceConfig
        from service.server import ServiceServer

        extra = {"graph": Path(params.graph)} if params.graph else {}
        config = ServiceConfig.from_env(
            params.store_url, host=params.host, port=params.port, backfill_bars=params.backfill_bars,
            client_buffer=params.client_buffer, client_stall_s=params.client_stall_s, **extra,
        )  # fmt: skip
        app = create_app(config, cluster=RayCluster.current())
        self._state = app[STATE]
        self._server = ServiceServer(app, params.host, params.port)
        self._server.start()
        self.url = self._server.url
        _log.warning("api node %r: serving %s (cockpit at %s/)", ctx.node_id, self.url, self.url)

    def on_batch(self, stream: str, batch: pa.RecordBatch) -> list[Emit]:
        """Hand ``bars`` and ``signals`` batches to the service (or the publisher)."""
        if stream not in ("bars", "signals") or batch.num_rows == 0:
            return []
        if stream == "bars":
            self._bars += batch.num_rows
        else:
            self._signals += batch.num_rows
        if self._publisher is not None:
            self._publisher.send(stream, batch)
        elif stream == "bars":
            self._server.call(self._publish_bars, batch)
        else:
            self._server.call(remember_signals, self._state.latest_signals, batch)
        return []

    def _publish_bars(self, batch: pa.RecordBatch) -> None:
        self._state.metrics.hub_bars.inc(batch.num_rows)
        self._state.hub.publish(batch, self.run)

    def on_eof(self) -> list[Emit]:
        """Publish mode: flush and send end-of-stream; serve mode: linger (``linger_s``)."""
        if self._publisher is not None:
            self._publisher.finish()
        elif self.params.linger_s:
            deadline = time.monotonic() + self.params.linger_s
            while time.monotonic() < deadline and self._state.hub.backlog():
                time.sleep(0.05)
        return []

    def close(self) -> None:
        """Stop the server or close the ingest link (idempotent)."""
        if self._publisher is not None:
            self._publisher.close()
        if self._server is not None:
            self._server.stop()

    def metrics(self) -> dict[str, Any]:
        """``mode``, ``url``, ``bars`` and ``signals`` rows received, WebSocket ``clients`` (serve)."""
        out: dict[str, Any] = {
            "mode": "publish" if self._publisher is not None else "serve",
            "url": self.url,
            "bars": self._bars,
            "signals": self._signals,
        }
        if self._state is not None:
            out["clients"] = self._state.hub.stats()["clients"]
        return out


def remember_signals(latest: dict[tuple[str, str], dict[str, Any]], batch: pa.RecordBatch) -> None:
    """Keep the newest row per (symbol, name) of a SIGNAL batch in ``latest`` (by ``ts``)."""
    for row in batch.to_pylist():
        key = (row["symbol"], row["name"])
        known = latest.get(key)
        if known is None or row["ts"] >= known["ts"]:
            latest[key] = row
