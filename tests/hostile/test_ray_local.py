"""A local run stays local (hostile-input cases 11, 13-15), checked on real Ray processes.

Each test starts its own Ray in a subprocess (not the session's instance): what is
checked is how a fresh ``run.py`` or :func:`graph.cluster.start_private_ray` starts one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT
from tests.hostile.cuts import tardis_cut, tardis_spec, write_graph

pytestmark = pytest.mark.ray
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

PROBE = textwrap.dedent(
    """
    import json, sys, time
    import psutil
    from graph.cluster import start_private_ray
    start_private_ray(num_cpus=1, dashboard=True)
    import ray

    @ray.remote
    class Shard:
        def ready(self):
            return True

    shard = Shard.remote()
    ray.get(shard.ready.remote())
    time.sleep(2)  # let the dashboard agent and the metrics exporters come up
    me = psutil.Process()
    found = set()
    for process in [me, *me.children(recursive=True)]:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((connection.laddr.ip, connection.laddr.port, process.name()))
        except psutil.Error:
            pass
    print(json.dumps(sorted(found)))
    ray.shutdown()
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def test_a_default_local_ray_listens_on_loopback_only():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    sockets = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {name for _, _, name in sockets}
    assert any("gcs_server" in name for name in names) and any("raylet" in name for name in names)
    assert len(sockets) >= 6  # GCS, raylets, a worker, the dashboard and its agent, metrics
    assert {ip for ip, _, _ in sockets} <= LOOPBACK, sockets


OTHER_CLUSTER = textwrap.dedent(
    """
    import sys, ray
    context = ray.init(num_cpus=1, include_dashboard=False)
    print(context.address_info["gcs_address"], flush=True)
    sys.stdin.readline()  # until the test's run is over
    from ray._private import state  # the GCS's actor table (the state API needs a dashboard)
    print(len(state.actors()), flush=True)
    ray.shutdown()
    """
)


def test_ray_address_of_another_cluster_is_ignored_without_address(tmp_path):
    # someone else's cluster, named by RAY_ADDRESS: a run without --address must start its
    # own instance, and print only its summary on stdout (Ray's worker output and notices
    # go to stderr, and Ray's token-authentication warning is replaced by one line of ours)
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_CLUSTER], cwd=ROOT, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        address = other.stdout.readline().strip()
        assert ":" in address
        graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
        run = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), "--graph", str(graph), "--no-progress", "--no-dashboard", "--num-cpus", "1"],
            cwd=ROOT, env=_env(RAY_ADDRESS=address), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        other.stdin.write("\n")
        other.stdin.flush()
        actors_there = int(other.stdout.readline().strip())
    finally:
        other.kill()
    assert run.returncode == 0, run.stderr
    assert actors_there == 0  # nothing of ours ran in the other cluster
    assert "ray: private instance, listening on 127.0.0.1 only, token authentication on" in run.stderr
    assert "Token authentication is enabled" not in run.stderr + run.stdout
    lines = run.stdout.splitlines()
    assert lines[0].startswith("graph hostile (") and "ticks read" in lines[1]
    assert all(line.startswith(("graph ", "  ")) for line in lines), run.stdout  # the summary and nothing else


def test_address_with_nothing_there_fails_within_the_connect_timeout(tmp_path):
    graph = write_graph(tmp_path, [tardis_spec(tardis_cut(tmp_path / "trades.csv"))])
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--graph", str(graph), "--address", "127.0.0.1:1", "--connect-timeout", "3"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.monotonic() - started < 30  # Ray alone retried for more than 7 minutes
    assert run.returncode == 2
    assert "error: no Ray cluster answers at 127.0.0.1:1 (127.0.0.1:1: Connection refused) after 3 s" in run.stderr
    assert "Traceback" not in run.stderr
