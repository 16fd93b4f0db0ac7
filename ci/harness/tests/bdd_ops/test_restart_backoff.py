"""specs/features/operations/restart_backoff.feature over real processes (POOL-04,
POOL-03, REL-02): one pool manager restarting crashed engines after 0.2 s, doubling,
without jitter, and giving up after 3 crashes; "steady" serves the tiny model,
"crashy" is given a GGUF of an architecture the engine does not know, so every start
of its engine fails. The delays are read from the pool manager's narration (its JSON
log lines, action `backoff`)."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_harness.bad_models import UNLOADABLE_ARCHITECTURE, write_unloadable_model
from ci_harness.cluster import Cluster, tiny_pool, wait_for
from ci_harness.scenes import REPO, Scene, engine_pid, says
from ci_harness.scenes import running as running_cluster
from pytest_bdd import given, scenarios, then, when

pytestmark = pytest.mark.integration
HOST = "host-a"
RESTART = {
    "initial_backoff_s": 0.2,
    "factor": 2.0,
    "max_backoff_s": 10.0,
    "jitter_ratio": 0.0,
    "max_crashes": 3,
}

scenarios(str(REPO / "specs/features/operations/restart_backoff.feature"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("backoff")
    unloadable = write_unloadable_model(root / "nosuch.gguf")
    pools = {
        HOST: [
            tiny_pool("steady", tiny_model),
            tiny_pool("crashy", unloadable, aliases=["crashy-model"]),
        ]
    }
    with running_cluster(Cluster(root, pools, {}, {HOST: {"restart": RESTART}}), ["steady"]) as c:
        yield c


def restart_delays(cluster: Cluster, pool_id: str) -> list[float]:
    """The delays the pool manager narrated for the pool's restarts, in order."""
    delays = []
    for line in (cluster.root / f"pool-managerd-{HOST}.log").read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("pool_id") == pool_id and record.get("action") == "backoff":
            found = re.search(r"restart in ([0-9.]+) s", str(record["human"]))
            assert found, record
            delays.append(float(found.group(1)))
    return delays


@given(
    says(
        "a pool manager with a restart back-off of {first:g} s doubling, "
        "giving up after more than {crashes:d} crashes"
    )
)
def _(cluster: Cluster, first: float, crashes: int) -> None:
    policy = cluster.hosts[HOST]["restart"]
    assert (policy["initial_backoff_s"], policy["factor"]) == (first, 2.0)
    assert (policy["max_crashes"], policy["jitter_ratio"]) == (crashes, 0.0)


@given(says('a pool "{pool_id}" whose engine cannot load its model'))
def _(cluster: Cluster, pool_id: str) -> None:
    (config,) = [p for p in cluster.pools[HOST] if p["id"] == pool_id]
    assert UNLOADABLE_ARCHITECTURE.encode() in Path(config["model"]).read_bytes()


@then(says('the pool manager narrated restarts of pool "{pool_id}" in {a:g}, {b:g} and {c:g} s'))
def _(cluster: Cluster, pool_id: str, a: float, b: float, c: float) -> None:
    assert restart_delays(cluster, pool_id) == [a, b, c]


@then(says('the pool manager narrated a restart of pool "{pool_id}" in {delay:g} s'))
def _(cluster: Cluster, pool_id: str, delay: float) -> None:
    assert restart_delays(cluster, pool_id) == [delay]


@then(says('pool "{pool_id}" counts {count:d} restarts'))
def _(cluster: Cluster, pool_id: str, count: int) -> None:
    assert cluster.pool(pool_id)["restarts"] == count


@when(says('the engine of pool "{pool_id}" is killed'))
def _(cluster: Cluster, scene: Scene, pool_id: str) -> None:
    scene.values["restarts before"] = cluster.pool(pool_id)["restarts"]
    os.kill(engine_pid(cluster, pool_id), signal.SIGKILL)


@then(says('the long job ends with the retriable error "{code}"'))
def _(scene: Scene, code: str) -> None:
    events = scene.streams["long"].result()
    assert events[-1].name == "error", events[-1]
    assert (events[-1].data["code"], events[-1].data["retriable"]) == (code, True)


@then(says('pool "{pool_id}" is ready again after a restart'))
def _(cluster: Cluster, scene: Scene, pool_id: str) -> None:
    def back() -> bool:
        pool = cluster.pool(pool_id)
        return bool(pool["ready"] and pool["restarts"] > scene.values["restarts before"])

    wait_for(back, f"pool {pool_id} to restart and be ready")
