"""Compare two parity proofs stream by stream, down to the first diverging checkpoint.

Both proofs hold, per stream, the chain hash ``h_i`` after every ``checkpoint_every``
messages and after the last one (:mod:`parity.canonical`). Because ``h_i`` covers all
messages ``1..i``, the first checkpoint where two proofs disagree brackets the first
differing message: it lies in ``(last agreeing checkpoint, first disagreeing one]``
(1-based message numbers). With different ``checkpoint_every`` only the message counts
both proofs checkpointed are compared (multiples of both), so the range is wider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamComparison", "ProofComparison", "compare_proofs"]


@dataclass(frozen=True)
class StreamComparison:
    """How one stream compares between proof A and proof B.

    Attributes:
        stream: the stream name.
        status: ``match``; ``diverged``; ``only_in_a`` / ``only_in_b`` (one proof lacks
            the stream); ``incomparable`` (different canonical fields or float bits,
            so no hash can agree).
        messages_a, messages_b: message counts (None if the stream is absent).
        checkpoint: message count of the first disagreeing checkpoint (None if the
            streams match, or agree at every common checkpoint and differ after).
        first_message, last_message: 1-based range holding the first differing message.
        detail: one human-readable sentence.
    """

    stream: str
    status: str
    messages_a: int | None = None
    messages_b: int | None = None
    checkpoint: int | None = None
    first_message: int | None = None
    last_message: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProofComparison:
    """Result of :func:`compare_proofs`.

    Attributes:
        streams: one :class:`StreamComparison` per stream in either proof, sorted by name.
        notes: differences that do not make streams diverge (graph file, data files,
            tickgraph version, checkpoint spacing).
    """

    streams: list[StreamComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        """True when both proofs have the same streams and every stream matches."""
        return bool(self.streams) and all(s.status == "match" for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"match", "streams": [...], "notes": [...]}``."""
        return {"match": self.match, "streams": [s.to_dict() for s in self.streams], "notes": list(self.notes)}


def _checkpoints(stream: Mapping[str, Any]) -> dict[int, str]:
    """Message count -> hash, including the final (messages, hash)."""
    points = {int(c["messages"]): str(c["hash"]) for c in stream.get("checkpoints", [])}
    points[int(stream["messages"])] = str(stream["hash"])
    return points


def _compare_stream(name: str, a: Mapping[str, Any], b: Mapping[str, Any], same_canon: bool) -> StreamComparison:
    ma, mb = int(a["messages"]), int(b["messages"])
    if not same_canon or list(a.get("fields", [])) != list(b.get("fields", [])):
        return StreamComparison(
            name, "incomparable", ma, mb,
            detail=f"{name}: hashed with different canonical forms (fields {a.get('fields')} vs "
            f"{b.get('fields')}, or different float bits); hashes cannot agree",
        )  # fmt: skip
    if ma == mb and a["hash"] == b["hash"]:
        return StreamComparison(name, "match", ma, mb, detail=f"{name}: match ({ma:,} messages, hash {a['hash'][:16]}...)")
    points_a, points_b = _checkpoints(a), _checkpoints(b)
    agreed = 0
    for count in sorted(set(points_a) & set(points_b)):
        if points_a[count] != points_b[count]:
            return StreamComparison(
                name, "diverged", ma, mb, checkpoint=count, first_message=agreed + 1, last_message=count,
                detail=f"{name}: DIVERGED at checkpoint {count:,}: the first differing message is among "
                f"messages {agreed + 1:,}..{count:,} (1-based); the streams agree up to message {agreed:,} "
                f"(A has {ma:,} messages, B {mb:,})",
            )  # fmt: skip
        agreed = count
    last = max(ma, mb)
    return StreamComparison(
        name, "diverged", ma, mb, checkpoint=None, first_message=agreed + 1, last_message=last,
        detail=f"{name}: DIVERGED after message {agreed:,}, the last checkpoint both proofs share and "
        f"agree on: the first differing message is among messages {agreed + 1:,}..{last:,} "
        f"(A has {ma:,} messages, B {mb:,})",
    )  # fmt: skip


def compare_proofs(a: Mapping[str, Any], b: Mapping[str, Any]) -> ProofComparison:
    """Compare proof documents A and B (already verified or trusted).

    Args:
        a, b: proof documents (:mod:`parity.proof`).

    Returns:
        A :class:`ProofComparison`: per stream, match or where it first diverges;
        notes on differing graph file, data files, version or checkpoint spacing.
    """
    canon_a, canon_b = a.get("canonical", {}), b.get("canonical", {})
    same_canon = (canon_a.get("version"), canon_a.get("float_bits")) == (
        canon_b.get("version"),
        canon_b.get("float_bits"),
    )
    notes = []
    if canon_a.get("checkpoint_every") != canon_b.get("checkpoint_every"):
        notes.append(
            f"checkpoint spacing differs (A every {canon_a.get('checkpoint_every')}, B every "
            f"{canon_b.get('checkpoint_every')}): only common checkpoints are compared"
        )
    if a.get("graph") != b.get("graph"):
        notes.append(f"graph files differ: A {a.get('graph')}, B {b.get('graph')}")
    if a.get("data_files") != b.get("data_files"):
        notes.append("data files differ (paths, sizes or SHA-256): see each proof's 'data_files'")
    if a.get("tickgraph_version") != b.get("tickgraph_version"):
        notes.append(f"tickgraph versions differ: A {a.get('tickgraph_version')}, B {b.get('tickgraph_version')}")
    streams_a, streams_b = a.get("streams", {}), b.get("streams", {})
    results = []
    for name in sorted(set(streams_a) | set(streams_b)):
        if name not in streams_b:
            m = int(streams_a[name]["messages"])
            results.append(StreamComparison(name, "only_in_a", m, None, detail=f"{name}: only in A ({m:,} messages)"))
        elif name not in streams_a:
            m = int(streams_b[name]["messages"])
            results.append(StreamComparison(name, "only_in_b", None, m, detail=f"{name}: only in B ({m:,} messages)"))
        else:
            results.append(_compare_stream(name, streams_a[name], streams_b[name], same_canon))
    return ProofComparison(results, notes)
