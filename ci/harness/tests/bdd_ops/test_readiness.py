"""specs/features/operations/readiness.feature over real processes (POOL-02, PLC-02):
one pool manager with a pool that becomes ready ("ok") and one whose model file is not
a model ("broken"); a second pool manager is started during a scenario, and its engine
frozen (SIGSTOP) while it starts, so the pool is provably not ready for as long as the
scenario looks."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ci_harness.bad_models import write_not_a_model
from ci_harness.cluster import Cluster, tiny_pool, wait_for, workers_under
from ci_harness.scenes import REPO, Scene, running, says
from pytest_bdd import given, scenarios, then

pytestmark = pytest.mark.integration
LATE_HOST = "host-late"

scenarios(str(REPO / "specs/features/operations/readiness.feature"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("readiness")
    broken = write_not_a_model(root / "notes.gguf")
    pools = {
        "host-a": [
            tiny_pool("ok", tiny_model),
            tiny_pool("broken", broken, aliases=["broken-model"]),
        ]
    }
    with running(Cluster(root, pools), ["ok"]) as cluster:
        yield cluster


def capabilities(cluster: Cluster) -> list[dict[str, Any]]:
    with cluster.client() as client:
        response = client.get("/v2/meta/capabilities")
    assert response.status_code == 200, response.text
    return list(response.json()["pools"])


@given(
    says(
        'a pool manager running the pool "{ok}" and the pool "{broken}" '
        "whose model file is not a model"
    )
)
def _(cluster: Cluster, ok: str, broken: str) -> None:
    assert cluster.pool(ok)["ready"] is True
    (config,) = [p for p in cluster.pools["host-a"] if p["id"] == broken]
    assert Path(config["model"]).read_text().startswith("this is not a model")


@given(
    says(
        'a second pool manager starts the pool "{pool_id}" '
        "and its engine is held up while it starts"
    )
)
def _(cluster: Cluster, scene: Scene, tiny_model: Path, pool_id: str) -> None:
    cluster.pools[LATE_HOST] = [tiny_pool(pool_id, tiny_model, aliases=["late-model"])]
    cluster.start_manager(LATE_HOST)
    marker = cluster.root / LATE_HOST / "run" / f"{pool_id}-r"
    (pid,) = wait_for(lambda: workers_under(marker), f"the engine of {pool_id} to start")
    os.kill(pid, signal.SIGSTOP)
    scene.paused.append(pid)
    wait_for(lambda: cluster.pool(pool_id), f"the orchestrator to know pool {pool_id}")


@then(says('the capabilities list pool "{pool_id}"'))
def _(cluster: Cluster, pool_id: str) -> None:
    assert pool_id in [p["pool_id"] for p in capabilities(cluster)]


@then(says('the capabilities do not list pool "{pool_id}"'))
def _(cluster: Cluster, pool_id: str) -> None:
    assert pool_id not in [p["pool_id"] for p in capabilities(cluster)]
