"""How a graph run fails: :class:`NodeFailure` names the node and shard, whatever the backend.

An operator's exception inside a host, a Ray actor that died (killed, out of memory, its
node lost) and a failing call to it all become one ``NodeFailure``; Ray wraps errors in
its own types, so :func:`find_node_failure` digs the innermost one out of a cause chain.
"""

from __future__ import annotations

from graph.secrets import redact
from graph.text import printable

__all__ = ["NodeFailure", "find_node_failure", "is_actor_death", "ACTOR_DIED_ERRORS"]

#: Ray error class names that mean the actor (its process or node) is gone, not that the
#: operator raised: a restart from the last checkpoint can heal those.
ACTOR_DIED_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "OwnerDiedError",
                     "WorkerCrashedError", "ObjectLostError", "ActorUnschedulableError")  # fmt: skip


class NodeFailure(RuntimeError):
    """A node's operator raised (or its actor died); names the node and shard.

    Attributes:
        node_id: the YAML node id.
        shard: the shard index.
        error: one line, ``ExceptionType: message`` (redacted, printable).
        details: the formatted traceback inside the operator (for ``--verbose``).
        actor_died: True when the actor itself was lost (a restart may heal it), False
            when the operator raised (it would raise again).
    """

    def __init__(self, node_id: str, shard: int, error: str, details: str = "", actor_died: bool = False) -> None:
        error, details = redact(printable(error)), redact(details)
        super().__init__(f"node '{node_id}' (shard {shard}) failed: {error}")
        self.node_id = node_id
        self.shard = shard
        self.error = error
        self.details = details
        self.actor_died = actor_died

    def __reduce__(self):  # keep attributes across Ray's pickling
        return (NodeFailure, (self.node_id, self.shard, self.error, self.details, self.actor_died))


def find_node_failure(exc: BaseException) -> NodeFailure | None:
    """The innermost :class:`NodeFailure` in ``exc``'s cause chain (Ray wraps errors)."""
    seen: set[int] = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NodeFailure) and hasattr(exc, "node_id"):
            found = exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    if found is not None and type(found) is not NodeFailure:
        # Ray's RayTaskError subclasses the cause's type; its str() is Ray's traceback
        # banner, not the one-line failure: rebuild the plain NodeFailure.
        found = NodeFailure(found.node_id, found.shard, found.error, found.details, found.actor_died)
    return found


def is_actor_death(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error in its cause chain) says a Ray actor or node is gone."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in ACTOR_DIED_ERRORS:
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return False
