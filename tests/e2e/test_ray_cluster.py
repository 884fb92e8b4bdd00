"""The same `flwr run .` on a Ray cluster of two nodes: a head and a worker, two processes.

The head gets no CPUs (it only coordinates, as a cluster's head often does), so every
ClientApp actor has to be placed on the worker: a round that trains its devices there,
and Ray's own record of where the actors ran, show the work left the head's node.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulations.demo import DemoSettings, run_demo
from simulations.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    ray_cluster = LocalRayCluster(head_cpus=0, worker_cpus=(1,))
    try:
        ray_cluster.start()
        yield ray_cluster
    finally:
        ray_cluster.stop()


def test_a_round_runs_its_devices_on_the_worker_node(cluster, tmp_path):
    nodes = cluster.nodes()
    assert sorted(n.is_head for n in nodes) == [False, True]
    worker = next(n for n in nodes if not n.is_head)

    result = run_demo(
        DemoSettings(
            root=tmp_path,
            employees=3,
            rounds=1,
            hours=0.5,
            score=False,
            ray_address=cluster.address,
        )
    )

    assert result.run.returncode == 0, result.run.log_file.read_text()[-3000:]
    assert [r["round"] for r in result.rounds] == [1]
    assert result.rounds[0]["fit"]["clients_trained"] == 3
    actors = cluster.client_actors()
    assert actors, "no ClientApp actor was created on the cluster"
    assert {a.node_id for a in actors} == {worker.node_id}
