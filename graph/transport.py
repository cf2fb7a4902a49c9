"""Transports: how a host's messages reach a downstream host, in-process or through Ray.

Both take ``send(target, shard, channel, messages)``: an ordered list of
:mod:`graph.messages` for one host, on the sender's ``channel`` (``"node#shard"``).
Ray runs the calls from one caller to one synchronous actor in submission order, so each
edge is FIFO and control messages stay in order with the data (docs:
ray-core/actors/task-orders).

Backpressure: at most ``max_in_flight`` calls per (sender, receiver shard) are pending; a
sender blocks on the oldest before sending more (Ray pattern "limit-pending-tasks"), so a
fast source never fills memory in front of a slow sink.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from graph.failures import NodeFailure, find_node_failure, is_actor_death
from graph.messages import Message

if TYPE_CHECKING:
    from graph.host import NodeHost

__all__ = ["LocalTransport", "RayTransport"]


class LocalTransport:
    """In-process delivery: a call is a direct method call on the target host."""

    def __init__(self, hosts: dict[tuple[str, int], NodeHost]) -> None:
        self.hosts = hosts

    def send(self, target: str, shard: int, channel: str, messages: list[Message]) -> None:
        """Push ``messages`` (in order) on ``channel`` of host ``(target, shard)``, synchronously."""
        self.hosts[(target, shard)].push(channel, messages)

    def drain(self) -> None:
        """Nothing is ever in flight in-process."""


class RayTransport:
    """Delivery to :class:`HostGroup` actors, at most ``max_in_flight`` pending calls per target shard.

    Hosts chained into the sender's own actor (``local``) are called directly: no
    serialization, no object store, no scheduling.
    """

    def __init__(self, handles: dict[tuple[str, int], Any], max_in_flight: int,
                 local: dict[tuple[str, int], NodeHost] | None = None) -> None:
        import ray  # the only import of ray below graph/build.py

        self._ray = ray
        self.handles = handles
        self.local = local or {}
        self.max_in_flight = max_in_flight
        self.in_flight: dict[tuple[str, int], deque] = {}

    def send(self, target: str, shard: int, channel: str, messages: list[Message]) -> None:
        """Push ``messages`` to ``(target, shard)``: directly if chained here, else as a Ray call.

        Blocks while that shard already has ``max_in_flight`` calls pending (backpressure),
        waiting for the oldest. Raises :class:`NodeFailure` (naming the node and shard) when a
        call it waited on failed.
        """
        host = self.local.get((target, shard))
        if host is not None:
            host.push(channel, messages)
            return
        pending = self.in_flight.setdefault((target, shard), deque())
        while len(pending) >= self.max_in_flight:
            self._wait(target, shard, pending.popleft())
        pending.append(self.handles[(target, shard)].push.remote((target, shard), channel, messages))

    def drain(self) -> None:
        """Wait for every pending call; re-raise the first downstream failure."""
        for (target, shard), pending in self.in_flight.items():
            while pending:
                self._wait(target, shard, pending.popleft())

    def _wait(self, target: str, shard: int, ref: Any) -> None:
        try:
            self._ray.get(ref)
        except Exception as exc:  # re-raise as the failing node's NodeFailure
            failure = find_node_failure(exc)
            if failure is not None:
                raise failure from None
            died = is_actor_death(exc)
            raise NodeFailure(target, shard, f"{type(exc).__name__}: {exc}".splitlines()[0], actor_died=died) from None
