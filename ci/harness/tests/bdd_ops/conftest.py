"""Steps shared by the operator's scenarios (TST-03): `specs/features/operations/*.feature`.

Each test module here binds one feature file to real processes through the harness
(`ci_harness.cluster`, and `ci_harness.deployments.fleet_of` where a feature speaks of
hosts: a fleet of network namespaces, FLT-04) and provides the module-scoped `cluster`
those scenarios share; steps used by one feature only live in its module, steps used by
several live here. A scenario's facts travel in `scene` (function-scoped).

The rules of the run come from `ci_harness.bdd_rules` (imported here, so pytest finds
its hooks): a requirement tag (`@POOL-04`) becomes a `requirement` mark, a step that two
definitions match is an error before its scenario starts, and a step that none matches
fails it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from ci_harness.bdd_rules import (  # noqa: F401 (hooks, found by name)
    pytest_bdd_apply_tag,
    pytest_bdd_before_scenario,
    pytest_configure,
)
from ci_harness.cluster import Cluster, wait_for
from ci_harness.deployments import cordon, deployment, hosts
from ci_harness.scenes import (
    AT_ONCE_S,
    LONG,
    Scene,
    apply_deployment,
    apply_replicas,
    completed,
    cordon_device,
    engine_pid,
    job_for_pool,
    pending_reasons,
    ready_pools,
    refused,
    run_job,
    says,
)
from ci_harness.streams import BackgroundStream
from pytest_bdd import given, then, when

# -- a scenario's facts --------------------------------------------------------------------


@pytest.fixture
def scene() -> Iterator[Scene]:
    facts = Scene()
    yield facts
    facts.resume()  # never leave an engine frozen for the next scenario
    for stream in facts.streams.values():
        stream.__exit__(None, None, None)


# -- jobs ----------------------------------------------------------------------------------


@given(says('a long job is streaming on pool "{pool_id}"'))
def _(cluster: Cluster, scene: Scene, pool_id: str) -> None:
    scene.engines[pool_id] = engine_pid(cluster, pool_id)
    response = cluster.submit({**job_for_pool(cluster, pool_id), "max_tokens": LONG})
    assert response.status_code == 202, response.text
    stream = BackgroundStream(cluster, response.json()["task_id"]).__enter__()
    scene.streams["long"] = stream
    stream.wait_tokens(1)


@then("the long job ends normally with all its tokens")
def _(scene: Scene) -> None:
    events = scene.streams["long"].result()
    assert events[-1].name == "end", events[-1]
    assert events[-1].data["tokens_out"] == LONG


@then(says('a job pinned to pool "{pool_id}" completes'))
def _(cluster: Cluster, pool_id: str) -> None:
    events = run_job(cluster, job_for_pool(cluster, pool_id))
    assert completed(events, 8), (events[:1], events[-1:])
    assert events[0].data["pool_id"] == pool_id


@then(says('a job pinned to pool "{pool_id}" is refused with {status:d} "{code}"'))
def _(cluster: Cluster, pool_id: str, status: int, code: str) -> None:
    refused(cluster.submit(job_for_pool(cluster, pool_id)), status, code)


@then(says('a job for "{model}" completes'))
def _(cluster: Cluster, model: str) -> None:
    events = run_job(cluster, {"model": model, "prompt": "A job", "max_tokens": 8})
    assert completed(events, 8), (events[:1], events[-1:])


@then(says('a job for "{model}" is refused at once with {status:d} "{code}"'))
def _(cluster: Cluster, model: str, status: int, code: str) -> None:
    began = time.monotonic()
    response = cluster.submit({"model": model, "prompt": "A job", "max_tokens": 8})
    assert time.monotonic() - began < AT_ONCE_S, "the refusal was not at once"
    refused(response, status, code)


@when("the engine that was held up resumes")
def _(scene: Scene) -> None:
    assert scene.paused, "no engine was held up"
    scene.resume()


# -- pools ---------------------------------------------------------------------------------


@given(says('the operator drains pool "{pool_id}" with a deadline of {ms:d} ms'))
@when(says('the operator drains pool "{pool_id}" with a deadline of {ms:d} ms'))
def _(cluster: Cluster, pool_id: str, ms: int) -> None:
    with cluster.client() as client:
        response = client.post(f"/v2/pools/{pool_id}/drain", json={"deadline_ms": ms})
    assert response.status_code == 202, response.text


@when(says('the operator undoes the drain of pool "{pool_id}"'))
def _(cluster: Cluster, pool_id: str) -> None:
    with cluster.client() as client:
        response = client.post(f"/v2/pools/{pool_id}/undrain")
    assert response.status_code == 202, response.text


@then(says('pool "{pool_id}" is not ready'))
def _(cluster: Cluster, pool_id: str) -> None:
    pool = cluster.pool(pool_id)
    assert pool, f"no pool {pool_id}"
    assert pool["ready"] is False, pool


@then(says('pool "{pool_id}" is ready'))
def _(cluster: Cluster, pool_id: str) -> None:
    cluster.wait_ready([pool_id])


@given(says('pool "{pool_id}" reaches the state "{state}"'))
@then(says('pool "{pool_id}" reaches the state "{state}"'))
def _(cluster: Cluster, pool_id: str, state: str) -> None:
    wait_for(lambda: cluster.pool(pool_id).get("state") == state, f"{pool_id} to be {state}")


@then(says('pool "{pool_id}" reports the error "{text}"'))
def _(cluster: Cluster, pool_id: str, text: str) -> None:
    pool = cluster.pool(pool_id)
    assert text in pool["last_error"], pool
    assert pool["ready"] is False, pool


@then(says('pool "{pool_id}" is served by the same engine process as before'))
def _(cluster: Cluster, scene: Scene, pool_id: str) -> None:
    assert engine_pid(cluster, pool_id) == scene.engines[pool_id]


# -- deployments on a fleet ----------------------------------------------------------------


REPLICAS = (
    'the operator applies the deployment "{name}" of "{model}" with {low:d} to {high:d} replicas'
)


@given(says(REPLICAS + ' on "{host_id}"'))
@when(says(REPLICAS + ' on "{host_id}"'))
def _(cluster: Cluster, name: str, model: str, low: int, high: int, host_id: str) -> None:
    apply_replicas(cluster, name, model, low, high, constraints={"hosts": [host_id]})


@given(says(REPLICAS + ' on "{host_id}", on a GPU'))
@when(says(REPLICAS + ' on "{host_id}", on a GPU'))
def _(cluster: Cluster, name: str, model: str, low: int, high: int, host_id: str) -> None:
    apply_replicas(
        cluster, name, model, low, high, constraints={"hosts": [host_id], "device_kind": "gpu"}
    )


@given(says('the operator applies the deployment "{name}" of "{model}"'))
@when(says('the operator applies the deployment "{name}" of "{model}"'))
def _(cluster: Cluster, name: str, model: str) -> None:
    apply_deployment(cluster, name, model)


@then(says('the deployment "{name}" is "{phase}" with no pools'))
def _(cluster: Cluster, name: str, phase: str) -> None:
    view = deployment(cluster, name)
    assert (view["phase"], view["pools"]) == (phase, []), view


@given(says('the deployment "{name}" has {count:d} ready pool'))
@then(says('the deployment "{name}" has {count:d} ready pool'))
def _(cluster: Cluster, name: str, count: int) -> None:
    ready_pools(cluster, name, count)
    assert deployment(cluster, name)["phase"] == "ready"


@then(
    says(
        'the deployment "{name}" is pending on "{host_id}" device "{device}" '
        'with a reason containing "{text}"'
    )
)
def _(cluster: Cluster, name: str, host_id: str, device: str, text: str) -> None:
    reasons = pending_reasons(cluster, name)
    assert text in reasons.get((host_id, device), ""), reasons


@then(says('the deployment "{name}" is pending with the reason "{text}"'))
def _(cluster: Cluster, name: str, text: str) -> None:
    assert text in pending_reasons(cluster, name).values(), pending_reasons(cluster, name)


# -- cordon --------------------------------------------------------------------------------


@when(says('the operator cordons the host "{host_id}"'))
def _(cluster: Cluster, host_id: str) -> None:
    cordon(cluster, host_id)


@when(says('the operator lifts the cordon of the host "{host_id}"'))
def _(cluster: Cluster, host_id: str) -> None:
    cordon(cluster, host_id, False)


@when(says('the operator cordons the device "{device}" of the host "{host_id}"'))
def _(cluster: Cluster, host_id: str, device: str) -> None:
    cordon_device(cluster, host_id, device, True)


# -- the fleet -----------------------------------------------------------------------------


def fleet_is(cluster: Cluster, names: list[str]) -> None:
    """The fleet's hosts are these, each live at its own namespace's address (FLT-04)."""
    assert cluster.fleet is not None
    seen = hosts(cluster)
    assert sorted(seen) == sorted(names), sorted(seen)
    for host_id in names:
        assert seen[host_id]["live"], seen[host_id]
        assert seen[host_id]["address"] == cluster.fleet.hosts[host_id].address, seen[host_id]


@given(says('a fleet of the hosts "{a}", "{b}" and "{c}"'))
def _(cluster: Cluster, a: str, b: str, c: str) -> None:
    fleet_is(cluster, [a, b, c])


@given(says('a fleet of the hosts "{a}" and "{b}"'))
def _(cluster: Cluster, a: str, b: str) -> None:
    fleet_is(cluster, [a, b])


# -- the command line ----------------------------------------------------------------------


@when(says('the operator runs "{command}"'))
def _(cluster: Cluster, scene: Scene, command: str) -> None:
    program, *args = shlex.split(command)
    assert program == "llorch", command
    argv = [sys.executable, "-m", "llorch", *args, "--url", cluster.url]
    scene.values["command"] = subprocess.run(argv, capture_output=True, text=True, timeout=120)


def command_run(scene: Scene) -> subprocess.CompletedProcess[str]:
    run: subprocess.CompletedProcess[str] = scene.values["command"]
    return run


@then("the command succeeds")
def _(scene: Scene) -> None:
    run = command_run(scene)
    assert run.returncode == 0, (run.args, run.stdout, run.stderr)


@then(says('the command prints "{first}" and "{second}"'))
def _(scene: Scene, first: str, second: str) -> None:
    out = command_run(scene).stdout
    assert first in out and second in out, out


@then(says('the command shows the pool "{pool_id}" in the state "{state}"'))
def _(scene: Scene, pool_id: str, state: str) -> None:
    (shown,) = json.loads(command_run(scene).stdout)  # `show --json`: a list of one
    assert (shown["pool_id"], shown["state"]) == (pool_id, state), shown
