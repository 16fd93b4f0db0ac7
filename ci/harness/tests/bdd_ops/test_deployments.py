"""specs/features/operations/deployments.feature over real processes (PLC-04, PLC-06,
API-11, FLT-04): an orchestrator and three pool managers, each in its own network
namespace of a fleet, with simulated GPUs (accounted by estimate; the pools really run
the tiny model on the CPU). After each scenario every deployment is deleted and every
pool gone (`ci_harness.deployments.reset`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_harness.cluster import Cluster, pinned_job, wait_for
from ci_harness.deployments import deployment, placed
from ci_harness.scenes import (
    REPO,
    THREE_HOSTS,
    Scene,
    apply_deployment,
    apply_replicas,
    completed,
    emptied_fleet,
    fleet_scene,
    ready_pools,
    run_job,
    says,
)
from ci_harness.streams import BackgroundStream
from pytest_bdd import given, scenarios, then, when

pytestmark = pytest.mark.integration
BUSY_TOKENS = 8000  # seconds of decoding each, so the later jobs queue (ctx 16384)

scenarios(str(REPO / "specs/features/operations/deployments.feature"))


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("bdd-deployments")
    with fleet_scene(root, tiny_model, THREE_HOSTS) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def emptied(cluster: Cluster) -> Iterator[None]:
    yield
    emptied_fleet(cluster)


def netns_of(pid: int) -> str:
    found = subprocess.run(
        ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


REPLICAS = (
    'the operator applies the deployment "{name}" of "{model}" with {low:d} to {high:d} replicas'
)


@given(says(REPLICAS + ' on "{host_id}", unloaded after {ms:d} ms idle'))
def _(cluster: Cluster, name: str, model: str, low: int, high: int, host_id: str, ms: int) -> None:
    apply_replicas(
        cluster, name, model, low, high, idle_unload_after_ms=ms, constraints={"hosts": [host_id]}
    )


@given(says(REPLICAS + ' and a context of {ctx:d} tokens on "{host_id}"'))
def _(cluster: Cluster, name: str, model: str, low: int, high: int, ctx: int, host_id: str) -> None:
    apply_replicas(cluster, name, model, low, high, ctx=ctx, constraints={"hosts": [host_id]})


@given(says(REPLICAS + " spread over GPUs"))
def _(cluster: Cluster, name: str, model: str, low: int, high: int) -> None:
    apply_replicas(
        cluster, name, model, low, high, policy="spread", constraints={"device_kind": "gpu"}
    )


@when(
    says(
        'the operator applies the deployment "{name}" of "{model}" '
        "needing a context of {ctx:d} tokens on a GPU"
    )
)
def _(cluster: Cluster, name: str, model: str, ctx: int) -> None:
    apply_deployment(cluster, name, model, ctx=ctx, constraints={"device_kind": "gpu"})


@when(says('a client submits a job for "{model}"'))
def _(cluster: Cluster, scene: Scene, model: str) -> None:
    scene.events = run_job(cluster, {"model": model, "prompt": "hello", "max_tokens": 8})


@then("the job's started event reports the time spent loading the pool")
def _(scene: Scene) -> None:
    assert scene.events[0].name == "started", scene.events[0]
    assert scene.events[0].data["load_ms"] > 0, scene.events[0]


@then(says('the job completes on a pool of "{name}"'))
def _(scene: Scene, name: str) -> None:
    assert completed(scene.events, 8), scene.events[-1]
    assert scene.events[0].data["pool_id"].startswith(f"{name}-"), scene.events[0]


@then(says('the deployment "{name}" unloads its idle pool'))
def _(cluster: Cluster, name: str) -> None:
    wait_for(lambda: deployment(cluster, name)["pools"] == [], f"the idle pool of {name} to go")


@when(says('a client submits {count:d} long jobs for "{model}"'))
def _(cluster: Cluster, scene: Scene, count: int, model: str) -> None:
    for index in range(count):
        body = {"model": model, "prompt": f"job {index}", "max_tokens": BUSY_TOKENS}
        response = cluster.submit(body)
        assert response.status_code == 202, response.text
        stream = BackgroundStream(cluster, response.json()["task_id"]).__enter__()
        scene.streams[f"job {index}"] = stream


@then(says('the deployment "{name}" grows to {count:d} ready pools'))
def _(cluster: Cluster, name: str, count: int) -> None:
    ready_pools(cluster, name, count)


@then(says('the jobs for "{name}" all complete, on {count:d} different pools'))
def _(scene: Scene, name: str, count: int) -> None:
    pools = set()
    for stream in scene.streams.values():
        events = stream.result()
        assert completed(events, BUSY_TOKENS), events[-1]
        pools.add(events[0].data["pool_id"])
    assert len(pools) == count and all(p.startswith(f"{name}-") for p in pools), pools


@then(says('the deployment "{name}" has {count:d} ready pools on {hosts:d} different hosts'))
def _(cluster: Cluster, name: str, count: int, hosts: int) -> None:
    where = ready_pools(cluster, name, count)
    assert len(set(where.values())) == hosts, where


@then(says('each pool of "{name}" is advertised at its own host\'s address'))
def _(cluster: Cluster, name: str) -> None:
    assert cluster.fleet is not None
    for pool_id, host_id in placed(cluster, name).items():
        host = cluster.fleet.hosts[host_id]
        (replica,) = cluster.pool(pool_id)["replicas"]
        assert replica["endpoint"].rsplit(":", 1)[0] == host.address, replica
        (worker,) = cluster.worker_pids(host_id, pool_id)
        assert netns_of(worker) == host.netns


@then(says('a job pinned to each pool of "{name}" completes'))
def _(cluster: Cluster, name: str) -> None:
    for pool_id in placed(cluster, name):
        events = run_job(cluster, pinned_job(name, pool_id))
        assert completed(events, 8) and events[0].data["pool_id"] == pool_id, events[-1]
