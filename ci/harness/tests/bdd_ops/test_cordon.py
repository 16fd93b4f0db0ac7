"""specs/features/operations/cordon.feature over real processes (POOL-08, PLC-04): an
orchestrator and two pool managers, each in its own network namespace of a fleet, with
a 1 GiB simulated GPU each. After each scenario every device and host is uncordoned,
every deployment deleted and every pool gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_harness.cluster import Cluster, wait_for
from ci_harness.deployments import deployment, gpu, hosts
from ci_harness.scenes import REPO, TWO_HOSTS, emptied_fleet, fleet_scene, ready_pools, says
from pytest_bdd import scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(str(REPO / "specs/features/operations/cordon.feature"))


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with fleet_scene(tmp_path_factory.mktemp("bdd-cordon"), tiny_model, TWO_HOSTS) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def emptied(cluster: Cluster) -> Iterator[None]:
    yield
    wait_for(lambda: all(h["live"] for h in hosts(cluster).values()), "every host to be live")
    emptied_fleet(cluster)


@then(says('the hosts list shows the device "{device}" of "{host_id}" cordoned'))
def _(cluster: Cluster, device: str, host_id: str) -> None:
    seen = hosts(cluster)[host_id]
    assert device == "gpu0" and gpu(seen)["cordoned"] is True, seen
    assert seen["cordoned"] is False, seen  # the device, not the host


@then(says('the deployment "{name}" has {count:d} ready pool on the device "{device}"'))
def _(cluster: Cluster, name: str, count: int, device: str) -> None:
    ready_pools(cluster, name, count)
    assert [p["device"] for p in deployment(cluster, name)["pools"]] == [device] * count


@when(says('the pool manager of "{host_id}" restarts'))
def _(cluster: Cluster, host_id: str) -> None:
    assert cluster.stop_process(f"pool-managerd-{host_id}") == 0
    wait_for(lambda: not hosts(cluster)[host_id]["live"], f"{host_id} to be seen gone")
    cluster.restart_manager(host_id)


@then(says('the hosts list shows "{host_id}" live and cordoned'))
def _(cluster: Cluster, host_id: str) -> None:
    wait_for(lambda: hosts(cluster)[host_id]["live"], f"{host_id} to rejoin")
    assert hosts(cluster)[host_id]["cordoned"] is True


@then(says('the hosts list shows "{host_id}" live and not cordoned'))
def _(cluster: Cluster, host_id: str) -> None:
    seen = hosts(cluster)[host_id]
    assert (seen["live"], seen["cordoned"]) == (True, False), seen
