"""The graph runtime at a glance (its parts live in one module each):

==========================  ===========================================================
module                      concept
==========================  ===========================================================
``graph/messages.py``       what travels on an edge: Data, Watermark, Barrier, EndOfStream
``graph/partition.py``      keyed routing: stable ``shard_of(symbol)``, Route
``graph/transport.py``      in-process and Ray delivery, backpressure
``graph/host.py``           NodeHost (one shard: operator, routing, watermarks, barriers)
                            and HostGroup (the shards chained in one Ray actor)
``graph/checkpoints.py``    the checkpoint files of a run
``graph/failures.py``       NodeFailure: a failed node, by id and shard
``graph/build.py``          spec -> started, wired hosts (a Deployment)
``graph/driver.py``         GraphRun: drive, checkpoint, restart, record the run
==========================  ===========================================================

This module re-exports their public names for callers that want "the runtime".
"""

from __future__ import annotations

from graph.failures import NodeFailure, find_node_failure
from graph.host import HostConfig, HostGroup, NodeHost
from graph.messages import END_OF_STREAM, Barrier, Data, EndOfStream, Message, Watermark
from graph.partition import Route, partition_batch, shard_of
from graph.transport import LocalTransport, RayTransport

__all__ = [
    "END_OF_STREAM",
    "Barrier",
    "Data",
    "EndOfStream",
    "HostConfig",
    "HostGroup",
    "LocalTransport",
    "Message",
    "NodeFailure",
    "NodeHost",
    "RayTransport",
    "Route",
    "Watermark",
    "find_node_failure",
    "partition_batch",
    "shard_of",
]
