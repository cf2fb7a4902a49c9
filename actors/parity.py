"""The parity tracker (node kind ``parity``): a canonical hash of every stream it reads.

A sink with no outputs. It subscribes to any streams (``inputs: [normalizer, bars,
signals]``); each input stream (by its name: ``ticks``, ``bars``, ``signals``, ...) is
hashed row by row in canonical form (:mod:`parity.canonical`) and in an order that
batching, sharding and timing cannot change (:mod:`parity.ordering`, which proves it):

* ``ticks`` from one normalizer: in arrival order (= source order);
* ``bars`` (from any number of shards): the final row of every bar (its confirmed
  row, or its last correction under ``late_policy: amend``), released at the aligned
  watermark and hashed sorted by (bar end, symbol, timeframe, ts); forming rows are
  not hashed (their number depends on batching).

So the bars hash of a replay is the same for two runs, for ``bars.parallelism`` 1 and
4, in-process and on Ray, and for a burst and a paced replay of the same ticks.

At end-of-stream, with ``proof_path`` set, it writes a signed proof
(:mod:`parity.proof`; key from ``$TICKGRAPH_PARITY_KEY``, checked when the node starts
so a run never ends without its proof). Its metrics (``parity``: stream -> messages,
hash) go into the run summary under ``parity``.

Example::

    - id: parity
      kind: parity
      inputs: [normalizer, bars]
      params:
        checkpoint_every: 1000
        proof_path: ../out/parity/replay.proof.json

Cost: about 3-5 us per hashed row in Python (orjson + SHA-256 per row), so hashing
the ticks of a multi-million-tick burst replay takes seconds; it runs in its own actor.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from graph.operator import Emit, Operator, OperatorContext, Params, Source
from graph.params import InputFile, OutputFile
from parity.canonical import DEFAULT_FLOAT_BITS
from parity.ordering import Order, OrderedStream
from parity.proof import build_proof, sign_proof, signing_key, write_proof

__all__ = ["ParityTracker", "ParityParams", "discover_data_files"]


class ParityParams(Params):
    """Params of a ``parity`` node.

    Attributes:
        checkpoint_every: record a checkpoint hash every this many messages (rows) per
            stream, >= 1.
        float_bits: significant bits kept of every float's significand (1..53; 53 =
            exact); see :mod:`parity.canonical` for why bits.
        order: stream name -> ``arrival`` | ``bar_end`` | ``event_time``; streams not
            listed use ``bar_end`` if they carry BAR rows, else ``arrival``.
        proof_path: write a signed proof here at end-of-stream (relative to the graph
            file); empty or absent: no proof. Needs ``$TICKGRAPH_PARITY_KEY``.
        data_files: files to hash into the proof; absent: the files named in the
            params of the graph file's source nodes.

    Under the late policy ``amend`` a bar is hashed once it can no longer be corrected:
    ``event_time.amend_window_ms`` after its end (the same setting the bar engines use).
    """

    checkpoint_every: int = Field(default=10_000, ge=1)
    float_bits: int = Field(default=DEFAULT_FLOAT_BITS, ge=1, le=53)
    order: dict[str, Order] = Field(default_factory=dict)
    proof_path: OutputFile | None = None
    data_files: list[InputFile] | None = None

    @field_validator("proof_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class ParityTracker(Operator):
    """Hashes every input stream canonically; optionally writes a signed proof at the end.

    Args:
        params: a :class:`ParityParams`.
        ctx: the host context (``graph_file`` and ``base_dir`` for the proof).

    Raises:
        ProofError: ``proof_path`` is set but ``$TICKGRAPH_PARITY_KEY`` is not.
        ValueError: the node runs with parallelism > 1 (one tracker must see every row).
    """

    Params: ClassVar[type[Params]] = ParityParams
    outputs: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: ParityParams, ctx: OperatorContext) -> None:
        super().__init__(params, ctx)
        if ctx.num_shards != 1:
            raise ValueError(
                f"parity node {ctx.node_id!r} has parallelism {ctx.num_shards}; it must be 1 "
                "so that one tracker sees every row of each stream"
            )
        self._key: bytes | None = None
        if params.proof_path is not None:
            self._key = signing_key(purpose=f"sign the parity proof of node {ctx.node_id!r} ({params.proof_path})")
        self._streams: dict[str, OrderedStream] = {}
        self._proof_written: str | None = None
        self._amend_window_ns = ctx.amend_window_ns if ctx.late_policy == "amend" else 0

    def __repr__(self) -> str:  # never shows the key
        return f"ParityTracker(node_id={self.ctx.node_id!r}, streams={sorted(self._streams)})"

    def on_batch(self, stream: str, batch: Any) -> list[Emit]:
        """Hash (``arrival``) or buffer (``bar_end``, ``event_time``) one batch of ``stream``."""
        tracker = self._streams.get(stream)
        if tracker is None:
            tracker = self._streams[stream] = OrderedStream(
                stream,
                batch.schema,
                self.params.order.get(stream),
                self.params.float_bits,
                self.params.checkpoint_every,
                self._amend_window_ns,
            )
        tracker.add(batch)
        return []

    def on_watermark(self, ts: int) -> list[Emit]:
        """Release buffered rows whose bound is ``<= ts`` (the MIN watermark over the inputs)."""
        for tracker in self._streams.values():
            tracker.release(ts)
        return []

    def on_eof(self) -> list[Emit]:
        """Hash everything still buffered; write the signed proof if ``proof_path`` is set."""
        for tracker in self._streams.values():
            tracker.finish()
        if self.params.proof_path is not None and self._key is not None:
            self._proof_written = str(write_proof(self.params.proof_path, self.proof()))
        return []

    def proof(self) -> dict[str, Any]:
        """The signed proof of the streams as hashed so far (complete after end-of-stream).

        Raises:
            ProofError: no key (the node has no ``proof_path`` and the variable is unset).
            OSError: a data file or the graph file cannot be read.
        """
        key = self._key or signing_key(purpose="sign a parity proof")
        streams = {
            name: {**tracker.hasher.to_dict(), "order": tracker.order, "out_of_order": tracker.out_of_order}
            for name, tracker in self._streams.items()
        }
        graph_file = self.ctx.graph_file
        files = self.params.data_files
        if files is None:
            files = discover_data_files(graph_file) if graph_file is not None else []
        document = build_proof(
            streams,
            checkpoint_every=self.params.checkpoint_every,
            float_bits=self.params.float_bits,
            graph_file=graph_file,
            data_files=files,
            base_dir=self.ctx.base_dir,
        )
        return sign_proof(document, key)

    def metrics(self) -> dict[str, Any]:
        """``parity``: stream -> {messages, hash}; ``ordering``: per-stream counters; ``proof``: path.

        Hashes reflect the rows hashed so far; after end-of-stream they are final.
        """
        return {
            "parity": {
                name: {"messages": t.hasher.messages, "hash": t.hasher.hexdigest}
                for name, t in sorted(self._streams.items())
            },
            "ordering": {name: t.counters() for name, t in sorted(self._streams.items())},
            "proof": self._proof_written,
        }

    def snapshot(self) -> dict[str, Any]:
        """Every stream's chain, checkpoints and buffered rows (picklable)."""
        return {"streams": copy.deepcopy(self._streams)}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot`."""
        self._streams = copy.deepcopy(state["streams"])


def discover_data_files(graph_file: str | Path) -> list[Path]:
    """The input files a graph reads: existing files named in its source nodes' params.

    The graph file is loaded and validated again (``${VAR}`` filled from the
    environment), so relative paths are resolved as the run resolved them. ``--set``
    overrides of the run are not visible here: pass ``data_files`` to be exact.

    Args:
        graph_file: the graph file.

    Returns:
        Absolute paths, in the order the params name them, without duplicates.

    Raises:
        GraphError: the graph file no longer loads.
    """
    from graph.registry import load_kind
    from graph.spec import load_graph

    loaded = load_graph(graph_file)
    found: dict[Path, None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value:
            path = Path(value)
            if not path.is_absolute():
                path = loaded.base_dir / path
            if path.is_file():
                found[path.resolve()] = None

    for node in loaded.spec.nodes:
        if issubclass(load_kind(node.kind), Source):
            walk(node.params)
    return list(found)
