"""Deployments over three pool managers with simulated devices (API-11, PLC-04/06/07,
POOL-08): placement by measured free memory, pending with per-host reasons, cordon,
load on first request and idle unload. Pools really run (the tiny model, on the CPU);
only the devices they are accounted to are simulated. Each host is a network namespace
of a fleet (FLT-04), so every command and every job crosses the bridge as it would
between machines. One fleet serves the module; after each test its deployments are
deleted and every pool is gone before the next. test_fleet_placement.py has spread,
binpack and cordon on three equal hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ci_harness.cluster import Cluster, wait_for
from ci_harness.deployments import (
    MiB,
    apply,
    cordon,
    deployment,
    fleet_of,
    host_settings,
    hosts,
    placed,
    reset,
)
from ci_harness.fleet import unavailable

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]


@pytest.fixture(scope="module")
def fleet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """host-a: 1 GiB device, host-b: 600 MiB, host-c: 8 GiB; one fleet for the module."""
    reason = unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    settings = {
        "host-a": host_settings(tiny_model, 1024),
        "host-b": host_settings(tiny_model, 600),
        "host-c": host_settings(tiny_model, 8192, "9.0"),
    }
    with fleet_of(tmp_path_factory.mktemp("deployments"), settings) as cluster:
        yield cluster


@pytest.fixture
def three_hosts(fleet: Cluster) -> Iterator[Cluster]:
    """The module's fleet with host-c cordoned; emptied and uncordoned after the test."""
    cordon(fleet, "host-c")
    yield fleet
    print(fleet.logs())  # shown only when the test fails
    reset(fleet)


def test_pools_go_where_they_fit_and_a_cordoned_host_receives_nothing(three_hosts: Cluster) -> None:
    cluster = three_hosts
    body = {
        "model": "tiny",
        "ctx": 2048,
        "replicas": {"min": 2, "max": 2},
        "policy": "spread",
        "constraints": {"device_kind": "gpu"},
    }
    first = apply(cluster, "alpha", body)
    estimate = first["estimate"]["total"]
    assert 100 * MiB < estimate < 400 * MiB, estimate  # weights + KV + compute + runtime
    wait_for(lambda: len(placed(cluster, "alpha")) == 2, "two pools of alpha")
    assert sorted(placed(cluster, "alpha").values()) == ["host-a", "host-b"]  # spread, not c
    cluster.wait_ready(list(placed(cluster, "alpha")))
    view = deployment(cluster, "alpha")
    assert view["phase"] == "ready"
    for pool in view["pools"]:
        assert pool["device"] == "gpu0" and pool["memory_estimated_bytes"] == estimate
        assert pool["memory_actual_bytes"] > 0  # measured: the worker's resident memory
    devices = {h: seen["devices"][-1] for h, seen in hosts(cluster).items()}
    assert devices["host-b"]["memory_free_bytes"] == 600 * MiB - estimate  # accounted

    huge = apply(
        cluster, "huge", {"model": "tiny", "ctx": 1 << 20, "constraints": {"device_kind": "gpu"}}
    )
    assert huge["phase"] == "pending" and huge["pools"] == []
    reasons = {(r["host_id"], r["device_id"]): r["reason"] for r in huge["pending_reasons"]}
    assert reasons[("host-c", "*")] == "host is cordoned"
    assert reasons[("host-a", "gpu0")].startswith(f"needs {huge['estimate']['total']} bytes")
    assert "free of" in reasons[("host-b", "gpu0")]
    assert reasons[("host-a", "cpu")].startswith("device is a cpu")

    cli = subprocess.run(
        [sys.executable, "-m", "llorch", "deploy", "show", "huge", "--url", cluster.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "pending" in cli.stdout and "host is cordoned" in cli.stdout
    assert hosts(cluster)["host-c"]["pools"] == []


def test_binpack_fills_the_fuller_device_before_opening_another(three_hosts: Cluster) -> None:
    cluster = three_hosts
    apply(
        cluster,
        "packed",
        {"model": "tiny", "ctx": 2048, "policy": "binpack", "constraints": {"device_kind": "gpu"}},
    )
    wait_for(lambda: placed(cluster, "packed"), "a pool of packed")
    assert list(placed(cluster, "packed").values()) == ["host-b"]  # least room left after


def test_a_job_for_a_deployment_scaled_to_zero_loads_it_completes_and_it_unloads_when_idle(
    three_hosts: Cluster,
) -> None:
    cluster = three_hosts
    view = apply(
        cluster,
        "lazy",
        {
            "model": "tiny",
            "ctx": 2048,
            "replicas": {"min": 0, "max": 1},
            "idle_unload_after_ms": 1500,
            "constraints": {"hosts": ["host-a"]},
        },
    )
    assert view["phase"] == "idle" and view["pools"] == []
    response = cluster.submit({"model": "lazy", "prompt": "hello", "max_tokens": 8})
    assert response.status_code == 202, response.text
    events = cluster.events(response.json()["task_id"])
    assert events[0].name == "started" and events[0].data["load_ms"] > 0
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 8
    assert events[0].data["pool_id"].startswith("lazy-")
    wait_for(lambda: deployment(cluster, "lazy")["pools"] == [], "the idle pool to unload")
    assert deployment(cluster, "lazy")["phase"] == "idle"
    pool_id = events[0].data["pool_id"]
    said = (cluster.root / "orchestratord.log").read_text()
    assert said.count(f"stopping pool {pool_id} on") == 1  # one Stop, not one per pass


def test_deleting_a_deployment_stops_its_pools(three_hosts: Cluster) -> None:
    cluster = three_hosts
    apply(cluster, "gone", {"model": "tiny", "ctx": 2048})
    wait_for(lambda: placed(cluster, "gone"), "a pool of gone")
    pool_id = next(iter(placed(cluster, "gone")))
    with cluster.client() as client:
        assert client.delete("/v2/deployments/gone").status_code == 204
        assert client.get("/v2/deployments/gone").status_code == 404
    wait_for(lambda: not cluster.pool(pool_id), "the pool to be stopped and removed")


def test_a_deployment_for_a_model_no_host_holds_is_pending_with_that_reason(
    three_hosts: Cluster,
) -> None:
    view = apply(three_hosts, "ghost", {"model": "no-such-model"})
    assert view["phase"] == "pending"
    assert view["pending_reasons"][0]["reason"] == "no host holds model 'no-such-model'"


def test_bad_deployment_bodies_are_typed_400s(three_hosts: Cluster) -> None:
    with three_hosts.client() as client:
        bad_name = client.put("/v2/deployments/Bad_Name", json={"model": "tiny"})
        inverted = client.put(
            "/v2/deployments/x", json={"model": "tiny", "replicas": {"min": 3, "max": 1}}
        )
        unknown = client.put("/v2/deployments/x", json={"model": "tiny", "gpus": 8})
    for response in (bad_name, inverted, unknown):
        assert response.status_code == 400
        assert json.loads(response.text)["code"] == "INVALID_PARAMS"


def test_the_catalog_lists_host_models_and_a_retired_model_takes_no_new_jobs(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"host-a": [], "host-b": []},
        hosts={
            "host-a": host_settings(tiny_model, 1024),
            "host-b": host_settings(tiny_model, 1024),
        },
        fleet=True,
    )
    wait_for(lambda: len(hosts(cluster)) == 2, "two hosts to join")
    with cluster.client() as client:
        page = client.get("/v2/catalog/models")
        assert page.status_code == 200
        (model,) = page.json()["models"]
        assert model["id"] == "tiny" and model["hosts"] == ["host-a", "host-b"]
        assert model["lifecycle"] == "Active" and len(model["sha256"]) == 64
        assert model["architecture"] == "llama" and model["trained_context"] == 32768
        etag = page.headers["etag"]
        assert client.get("/v2/catalog/models", headers={"If-None-Match": etag}).status_code == 304
        verified = client.post("/v2/catalog/models/tiny/verify").json()
        assert verified["ok"] and [h["host_id"] for h in verified["hosts"]] == ["host-a", "host-b"]
        assert client.get("/v2/catalog/models/tiny").json()["verified_at_ms"] > 0
    apply(cluster, "t", {"model": "tiny", "ctx": 2048})
    wait_for(lambda: placed(cluster, "t"), "a pool")
    cluster.wait_ready(list(placed(cluster, "t")))
    assert cluster.submit({"model": "t", "prompt": "x", "max_tokens": 2}).status_code == 202
    with cluster.client() as client:
        retired = client.post("/v2/catalog/models/tiny/state", json={"state": "Retired"})
        assert retired.status_code == 200 and retired.json()["lifecycle"] == "Retired"
        refused = client.post("/v2/tasks", json={"model": "t", "prompt": "x", "max_tokens": 2})
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
        assert (
            client.post("/v2/catalog/models/tiny/state", json={"state": "Gone"}).status_code == 400
        )
        assert client.get("/v2/catalog/models/none").status_code == 404
