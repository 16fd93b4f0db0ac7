"""The scenarios of `specs/features/tasks/recovery.feature`, on a cluster of their own
(`solo_cluster` in conftest: one single-slot pool), since they kill its processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from ci_harness.bdd import TERMINAL, World
from ci_harness.cluster import Cluster, wait_for
from pytest_bdd import parsers, scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(str(Path(__file__).resolve().parents[4] / "specs/features/tasks/recovery.feature"))


@pytest.fixture(scope="module")
def cluster(solo_cluster: Cluster) -> Cluster:
    return solo_cluster


def ended(cluster: Cluster, task_id: str) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        lambda: (s := cluster.task(task_id)) and s.get("state") in TERMINAL and s,
        f"task {task_id} to end",
    )
    return status


@when("the engine serving it is killed")
def _(world: World) -> None:
    assert world.stream is not None
    pool_id = world.stream.events[0].data["pool_id"]
    (host,) = [h for h, pools in world.cluster.pools.items() if pool_id in {p["id"] for p in pools}]
    (pid,) = world.cluster.worker_pids(host, pool_id)
    world.values["restarts"] = world.cluster.pool(pool_id)["restarts"]
    world.values["pool"] = pool_id
    os.kill(pid, signal.SIGKILL)


@then(parsers.parse('its stream ends with the error "{code}", marked retriable'))
def _(world: World, code: str) -> None:
    assert world.stream is not None
    seen = world.stream.result()
    world.stream = None
    assert seen[0].name == "started" and any(e.name == "token" for e in seen), seen[:3]
    assert seen[-1].name == "error" and seen[-1].data["code"] == code, seen[-1]
    assert seen[-1].data["retriable"] is True, seen[-1]
    status = world.cluster.task(world.task_id)
    assert status["state"] == "failed" and status["attempts"] == 1, status  # no silent retry


@then("the pool is ready again once its engine has restarted")
def _(world: World) -> None:
    pool_id, before = world.values["pool"], world.values["restarts"]
    wait_for(
        lambda: (pool := world.cluster.pool(pool_id)) and pool["restarts"] == before + 1,
        f"{pool_id} to restart its engine",
    )
    world.cluster.wait_ready([pool_id])


@when("the orchestrator is killed and started again")
def _(world: World) -> None:
    assert world.stream is not None
    stream, world.stream = world.stream, None
    world.values["long"], world.values["queued"] = world.started[0], world.task_id
    assert world.cluster.restart_orchestrator(signal.SIGKILL) == -signal.SIGKILL
    stream.__exit__(None, None, None)  # its connection died with the orchestrator


@then(parsers.parse('the long task ends as failed with the retriable error "{code}"'))
def _(world: World, code: str) -> None:
    status = ended(world.cluster, world.values["long"])
    assert status["state"] == "failed", status
    assert status["error"]["code"] == code and status["error"]["retriable"] is True, status
    events = world.cluster.events(world.values["long"])
    assert events[-1].name == "error" and events[-1].data["code"] == code, events[-1]


@then("the queued task runs to its end")
def _(world: World) -> None:
    status = ended(world.cluster, world.values["queued"])
    assert status["state"] == "completed", status
    assert world.cluster.events(world.values["queued"])[-1].name == "end"
