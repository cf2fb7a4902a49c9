"""The messages on every edge of a graph, in stream order: data, watermark, barrier, end-of-stream.

Defined once, used by sources (``events()`` yields :class:`Watermark`), hosts and
transports. Every edge is FIFO, so control messages stay in order with the data::

    Data Data Watermark Data Barrier(7) Data Watermark ... EndOfStream

* :class:`Data`: one Arrow batch of an output stream.
* :class:`Watermark`: event time has reached ``ts`` on this edge (no later tick has a
  smaller ``ts``, except late ticks).
* :class:`Barrier`: checkpoint ``checkpoint_id``: everything before it belongs to the
  checkpoint, everything after it to the next (asynchronous barrier snapshotting, as in
  Flink: a host with several inputs holds the data behind a barrier until every input
  has delivered it, then snapshots its operator and forwards the barrier).
* :data:`END_OF_STREAM`: this edge is done (:data:`STOPPED`: done early, by a stop).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["Data", "Watermark", "Barrier", "EndOfStream", "END_OF_STREAM", "STOPPED", "Message"]


@dataclass(frozen=True, slots=True)
class Data:
    """A batch of output stream ``stream`` (its schema is the sender's ``outputs[stream]``)."""

    stream: str
    batch: pa.RecordBatch


@dataclass(frozen=True, slots=True)
class Watermark:
    """Event-time progress: no later tick on this edge has ``ts`` < ``ts`` (int64 ns UTC)."""

    ts: int


@dataclass(frozen=True, slots=True)
class Barrier:
    """Checkpoint ``checkpoint_id`` (1, 2, ...; increasing): snapshot everything before it."""

    checkpoint_id: int


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """No more messages on this edge (use :data:`END_OF_STREAM` or :data:`STOPPED`).

    Attributes:
        stopped: the stream was stopped before its end (``--duration``, Ctrl-C): what is
            still open is incomplete (a host calls its operator's ``on_stop``).
    """

    stopped: bool = False


#: The end-of-stream message.
END_OF_STREAM = EndOfStream()
#: The end-of-stream message of a stream stopped before its end.
STOPPED = EndOfStream(stopped=True)

#: Any message on an edge.
Message = Data | Watermark | Barrier | EndOfStream
