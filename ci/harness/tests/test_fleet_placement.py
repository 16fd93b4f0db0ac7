"""Deployment placement across a fleet (issue 10; FLT-04, PLC-04/07, POOL-08).

One orchestrator in the root namespace and three pool managers, `host-a`..`host-c`, each
in its own network namespace with its own address, each with one simulated 450 MiB GPU
(two pools of the tiny model fit, three do not; the pools really run, on the CPU). One
fleet serves the module; after every test its deployments are deleted, its hosts
uncordoned, and the test waits until every pool is gone and every device is free again.

- `spread` puts one replica on each host, each replica's worker runs in its host's
  namespace, is dialled at its host's address, and serves a job pinned to it;
- `binpack` fills one host before it opens the next;
- a cordoned host gets no new pool: neither a replica of a new deployment nor the load
  on first request of a job, which waits until the host is uncordoned; the pool it
  already has keeps serving.

That jobs stream from every host's static pools is in test_fleet.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_harness.cluster import Cluster, Event, wait_for
from ci_harness.deployments import (
    MiB,
    apply,
    cordon,
    deployment,
    fleet_of,
    gpu,
    host_settings,
    hosts,
    placed,
    reset,
)
from ci_harness.fleet import unavailable

pytestmark = pytest.mark.integration
HOSTS = ["host-a", "host-b", "host-c"]
DEVICE_MIB = 450
CTX = 2048  # the estimate for this context is about 182 MiB: two pools fit a device
GPU = {"device_kind": "gpu"}


@pytest.fixture(scope="module")
def fleet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    settings = {h: host_settings(tiny_model, DEVICE_MIB) for h in HOSTS}
    with fleet_of(tmp_path_factory.mktemp("fleet-placement"), settings) as cluster:
        yield cluster


@pytest.fixture
def cluster(fleet: Cluster) -> Iterator[Cluster]:
    """The module's fleet, emptied and uncordoned for the next test."""
    yield fleet
    print(fleet.logs())  # shown only when the test fails
    reset(fleet)


def stream_on(cluster: Cluster, model: str, pool_id: str) -> list[Event]:
    return cluster.stream_pinned(pool_id, model, prompt="One replica per host")


def served(events: list[Event], pool_id: str) -> bool:
    return (
        events[0].name == "started"
        and events[0].data["pool_id"] == pool_id
        and events[-1].name == "end"
        and events[-1].data["tokens_out"] == 8
    )


def netns_of(pid: int) -> str:
    """The named network namespace a process runs in."""
    found = subprocess.run(
        ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def test_spread_puts_one_replica_on_each_host_and_each_replica_serves_a_job(
    cluster: Cluster,
) -> None:
    assert cluster.fleet is not None
    apply(
        cluster,
        "wide",
        {
            "model": "tiny",
            "ctx": CTX,
            "replicas": {"min": 3, "max": 3},
            "policy": "spread",
            "constraints": GPU,
        },
    )
    wait_for(lambda: len(placed(cluster, "wide")) == 3, "three pools of wide")
    where = placed(cluster, "wide")
    assert sorted(where.values()) == HOSTS, where
    cluster.wait_ready(list(where))
    assert deployment(cluster, "wide")["phase"] == "ready"
    for pool_id, host_id in where.items():
        host = cluster.fleet.hosts[host_id]
        (replica,) = cluster.pool(pool_id)["replicas"]
        assert replica["endpoint"].rsplit(":", 1)[0] == host.address  # dialled across
        (worker,) = cluster.worker_pids(host_id, pool_id)
        assert netns_of(worker) == host.netns
        events = stream_on(cluster, "wide", pool_id)
        assert served(events, pool_id), (pool_id, events[0], events[-1])


def test_binpack_fills_one_host_before_it_opens_the_next(cluster: Cluster) -> None:
    view = apply(
        cluster,
        "packed",
        {
            "model": "tiny",
            "ctx": CTX,
            "replicas": {"min": 3, "max": 3},
            "policy": "binpack",
            "constraints": GPU,
        },
    )
    estimate = view["estimate"]["total"]
    assert 2 * estimate <= DEVICE_MIB * MiB < 3 * estimate, estimate  # two fit a host
    wait_for(lambda: len(placed(cluster, "packed")) == 3, "three pools of packed")
    assert sorted(placed(cluster, "packed").values()) == ["host-a", "host-a", "host-b"]
    seen = hosts(cluster)
    assert gpu(seen["host-a"])["memory_free_bytes"] == DEVICE_MIB * MiB - 2 * estimate
    assert gpu(seen["host-b"])["memory_free_bytes"] == DEVICE_MIB * MiB - estimate
    assert seen["host-c"]["pools"] == []


def test_a_cordoned_host_gets_no_new_pool_and_the_pool_it_has_keeps_serving(
    cluster: Cluster,
) -> None:
    on_b = {"device_kind": "gpu", "hosts": ["host-b"]}
    apply(cluster, "resident", {"model": "tiny", "ctx": CTX, "constraints": on_b})
    wait_for(lambda: placed(cluster, "resident"), "the resident pool on host-b")
    (resident,) = placed(cluster, "resident")
    cluster.wait_ready([resident])

    cordon(cluster, "host-b")
    assert hosts(cluster)["host-b"]["cordoned"]
    kept = json.loads((cluster.root / "host-b" / "cordon.json").read_text())
    assert kept["host"] is True  # the manager in host-b's namespace took the command

    # Spread over host-b and host-c would put one replica on each: both go to host-c.
    both = {"device_kind": "gpu", "hosts": ["host-b", "host-c"]}
    body = {"model": "tiny", "ctx": CTX, "replicas": {"min": 2, "max": 2}, "constraints": both}
    apply(cluster, "fresh", {**body, "policy": "spread"})
    wait_for(lambda: len(placed(cluster, "fresh")) == 2, "two pools of fresh")
    assert sorted(placed(cluster, "fresh").values()) == ["host-c", "host-c"]

    # A job for a deployment at zero replicas that only host-b may hold: nothing loads.
    lazy = {"model": "tiny", "ctx": CTX, "replicas": {"min": 0, "max": 1}, "constraints": on_b}
    assert apply(cluster, "lazy", lazy)["phase"] == "idle"
    response = cluster.submit({"model": "lazy", "prompt": "wait for me", "max_tokens": 8})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]

    def refused_for_cordon() -> bool:
        reasons = deployment(cluster, "lazy")["pending_reasons"]
        return {"host_id": "host-b", "device_id": "*", "reason": "host is cordoned"} in reasons

    wait_for(refused_for_cordon, "the load on first request to be refused on host-b")
    assert placed(cluster, "lazy") == {} and cluster.task(task_id)["state"] == "queued"
    assert sorted(hosts(cluster)["host-b"]["pools"]) == [resident]

    # The pool host-b already had keeps serving.
    assert served(stream_on(cluster, "resident", resident), resident)

    # Uncordoned, host-b takes the waiting job's pool and the job completes.
    cordon(cluster, "host-b", False)
    events = cluster.events(task_id)
    assert events[0].name == "started" and events[0].data["load_ms"] > 0
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 8
    assert list(placed(cluster, "lazy").values()) == ["host-b"]
