"""Deployments in harness tests: a fleet of hosts with simulated devices, and the API.

`host_settings(model, device_mib)` is a pool manager's `models` + `devices` settings
(one simulated GPU, accounted by estimate; the pools really run on the CPU).
`fleet_of(root, settings)` starts an orchestrator and one pool manager per host, each
in its own network namespace of a new `Fleet` (FLT-04), for a test module to share;
`reset(cluster)` empties it between tests. `apply`, `deployment` and `placed` drive
`PUT/GET /v2/deployments/{name}`; `hosts` and `cordon` read and cordon hosts
(`GET /v2/hosts`, `POST /v2/hosts/{id}/cordon`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ci_harness.cluster import Cluster, wait_for, workers_under
from ci_harness.fleet import Fleet

__all__ = [
    "MiB",
    "apply",
    "cordon",
    "deployment",
    "fleet_of",
    "gpu",
    "host_settings",
    "hosts",
    "placed",
    "reset",
]

MiB = 1 << 20


def host_settings(model: Path, device_mib: int, capability: str = "8.6") -> dict[str, Any]:
    """A host holding the model `tiny` (alias `tiny-model`) and one simulated GPU."""
    return {
        "models": [{"id": "tiny", "path": str(model), "aliases": ["tiny-model"]}],
        "devices": [
            {
                "id": "gpu0",
                "kind": "gpu",
                "name": "Simulated GPU",
                "memory_total_bytes": device_mib * MiB,
                "compute_capability": capability,
            }
        ],
    }


def deployment(cluster: Cluster, name: str) -> dict[str, Any]:
    with cluster.client() as client:
        return dict(client.get(f"/v2/deployments/{name}").json())


def apply(cluster: Cluster, name: str, body: dict[str, Any]) -> dict[str, Any]:
    with cluster.client() as client:
        response = client.put(f"/v2/deployments/{name}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def placed(cluster: Cluster, name: str) -> dict[str, str]:
    """The deployment's pools: pool id -> host id."""
    return {p["pool_id"]: p["host_id"] for p in deployment(cluster, name)["pools"]}


def hosts(cluster: Cluster) -> dict[str, dict[str, Any]]:
    with cluster.client() as client:
        return {h["host_id"]: h for h in client.get("/v2/hosts").json()["hosts"]}


def cordon(cluster: Cluster, host_id: str, cordoned: bool = True) -> None:
    with cluster.client() as client:
        response = client.post(f"/v2/hosts/{host_id}/cordon", json={"cordoned": cordoned})
    assert response.status_code == 204, response.text


def gpu(host: dict[str, Any]) -> dict[str, Any]:
    """The simulated GPU of a host as `GET /v2/hosts` shows it."""
    return dict(next(d for d in host["devices"] if d["id"] == "gpu0"))


@contextmanager
def fleet_of(root: Path, settings: dict[str, dict[str, Any]]) -> Iterator[Cluster]:
    """An orchestrator and one pool manager per host (no static pools; `settings` per
    host), each manager in its own network namespace. On exit every daemon must stop
    with 0 and no worker may survive; the fleet's namespaces and bridge are deleted.
    The caller skips first where `ci_harness.fleet.unavailable()` gives a reason."""
    cluster = Cluster(root, {h: [] for h in settings}, {}, settings)
    cluster.fleet = Fleet().start()
    try:
        cluster.start()
        names = sorted(settings)
        wait_for(lambda: sorted(hosts(cluster)) == names, f"hosts {names} to join")
        yield cluster
    finally:
        try:
            codes = cluster.stop()
            survivors = workers_under(root)
        finally:
            cluster.fleet.close()
    if survivors or any(codes.values()):
        print(cluster.logs())
    assert not survivors, f"workers survived their pool manager: {survivors}"
    assert all(code == 0 for code in codes.values()), codes


def reset(cluster: Cluster) -> None:
    """Delete every deployment and uncordon every host, then wait until no host has a
    pool left and every simulated GPU is wholly free again."""
    with cluster.client() as client:
        for view in client.get("/v2/deployments").json()["deployments"]:
            assert client.delete(f"/v2/deployments/{view['name']}").status_code == 204
    for host_id in cluster.pools:
        cordon(cluster, host_id, False)

    def empty() -> bool:
        return all(
            not seen["pools"] and gpu(seen)["memory_free_bytes"] == gpu(seen)["memory_total_bytes"]
            for seen in hosts(cluster).values()
        )

    wait_for(empty, "every pool to stop and every device to be free")
