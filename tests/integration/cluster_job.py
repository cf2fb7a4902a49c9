"""The main job on a 3-node Ray cluster on this machine, losing a worker node mid-run.

Run as a script by ``tests/integration/test_recovery.py`` (a Ray cluster cannot share
the test process with the session's Ray instance)::

    python -m tests.integration.cluster_job OUT_DIR

A head and two worker nodes (``ray.cluster_utils.Cluster``, one CPU each, no dashboard);
the graph runs with ``runtime.placement=spread``; once a checkpoint is complete and a
third of the ticks were read, the worker node hosting ``bars#1`` (or, if that is the head,
``bars#0``) is removed. Writes ``OUT_DIR/cluster.json``: where every node shard ran before
the loss, which Ray node was removed, the restarts, the recoveries and the summary.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from graph.build import build_graph
from graph.summary import build_summary
from tests.integration.recovery_jobs import main_job


def main(out: Path) -> None:
    # Ray notices a lost node after failed health checks (default 5 x 3 s); 2 x 0.5 s here
    fast_health_checks = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 2}
    head = {"num_cpus": 1, "include_dashboard": False, "_system_config": fast_health_checks}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        loaded, _ = main_job(out, "runtime.placement=spread")
        run = build_graph(loaded, backend="ray")
        placed = {f"{node}#{shard}": ray.get(handle.node_id.remote()) for (node, shard), handle in run.hosts.items()}
        by_id = {worker.node_id: worker for worker in workers}
        victim = next(by_id[placed[key]] for key in ("bars#1", "bars#0") if placed[key] in by_id)
        removed: list[int] = []

        def lose_a_node(rows: int, watermark) -> None:
            if not removed and rows >= 20_000 and run.last_complete is not None:
                removed.append(rows)
                cluster.remove_node(victim, allow_graceful=False)

        summary = build_summary(loaded, run.run(on_progress=lose_a_node))
        report = {
            "nodes": len({w.node_id for w in workers} | {cluster.head_node.node_id}),
            "placed": placed, "removed": victim.node_id, "removed_at_rows": removed,
            "restarts": run.restarts, "recoveries": run.recoveries, "run_id": run.run_id, "summary": summary,
        }  # fmt: skip
        (out / "cluster.json").write_text(json.dumps(report, default=str))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
