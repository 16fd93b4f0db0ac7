"""The pool manager's own life (issue 11; POOL-05, POOL-07, REL-06): a SIGKILLed pool
manager leaves no second set of engines behind its restart, SIGTERM drains running
work before it exits 0, and a drain can be undone. Real processes throughout: the
orchestrator, pool managers and `llorch worker` engines on the tiny model."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ci_harness.cluster import Cluster, pinned_job, tiny_pool, wait_for
from ci_harness.streams import BackgroundStream

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
HOST = "host-a"
MANAGER = f"pool-managerd-{HOST}"
LONG = 8000  # tokens: several seconds of generation on the tiny model


def sigkill_manager(cluster: Cluster) -> None:
    manager = cluster.processes[MANAGER]
    manager.send_signal(signal.SIGKILL)
    assert manager.wait(timeout=10) == -signal.SIGKILL


def restart_until_serving(cluster: Cluster, pool_id: str, old: set[int]) -> int:
    """Start the pool manager again on the same state_dir; wait until the pool's engines
    are all new and the pool is ready. Returns the most engine processes of the pool
    seen at any moment meanwhile (the bug this guards against showed twice the set)."""
    cluster.start_manager(HOST)
    most = 0

    def serving_again() -> bool:
        nonlocal most
        pids = set(cluster.worker_pids(HOST, pool_id))
        most = max(most, len(pids))
        return bool(pids) and not pids & old and bool(cluster.pool(pool_id).get("ready"))

    wait_for(serving_again, f"pool {pool_id} to serve again on fresh engines")
    return most


def test_a_sigkilled_pool_manager_leaves_no_second_set_of_engines_after_its_restart(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({HOST: [tiny_pool("p1", tiny_model, replicas=2)]})
    before = set(cluster.worker_pids(HOST, "p1"))
    assert len(before) == 2

    sigkill_manager(cluster)
    assert set(cluster.worker_pids(HOST, "p1")) == before  # the engines outlive a SIGKILL
    most = restart_until_serving(cluster, "p1", before)

    assert most <= 2, f"{most} engine processes served p1 at once"
    assert len(cluster.worker_pids(HOST, "p1")) == 2  # one per replica
    events = cluster.stream_pinned("p1")
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 8
    log = (cluster.root / f"{MANAGER}.log").read_text()
    assert "left by a previous pool manager" in log
    assert cluster.stop_process(MANAGER) == 0
    assert cluster.worker_pids(HOST, "p1") == []


def test_a_second_pool_manager_on_the_same_state_dir_exits_3_and_stops_nothing(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({HOST: [tiny_pool("p1", tiny_model)]})
    first = cluster.processes[MANAGER]
    before = cluster.worker_pids(HOST, "p1")
    cluster.start_manager(HOST)  # same config, same state_dir
    second = cluster.processes[MANAGER]
    cluster.processes[MANAGER] = first  # the teardown stops the first
    assert second.wait(timeout=30) == 3
    assert "in use by another pool-managerd" in (cluster.root / f"{MANAGER}.log").read_text()
    assert cluster.worker_pids(HOST, "p1") == before
    assert cluster.stream_pinned("p1")[-1].name == "end"


def test_sigterm_lets_a_running_job_finish_then_the_pool_manager_exits_0_without_engines(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    grace_s = 30.0
    cluster = cluster_factory(
        {HOST: [tiny_pool("p1", tiny_model)]}, {HOST: {"shutdown_grace_s": grace_s}}
    )
    task = cluster.submit(pinned_job("default", "p1", max_tokens=LONG)).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        signalled = time.monotonic()
        cluster.processes[MANAGER].send_signal(signal.SIGTERM)
        wait_for(lambda: cluster.pool("p1").get("state") == "draining", "the pool to drain")
        assert not stream.done, "the job ended before the drain was reported"
        events = stream.result()
    assert events[-1].name == "end", events[-1]  # finished, not cancelled
    assert events[-1].data["tokens_out"] == LONG
    assert stream.ended_at is not None and stream.ended_at - signalled < grace_s
    assert cluster.processes[MANAGER].wait(timeout=grace_s) == 0
    assert cluster.worker_pids(HOST, "p1") == []


def drain(cluster: Cluster, pool_id: str, deadline_ms: int) -> None:
    with cluster.client() as client:
        response = client.post(f"/v2/pools/{pool_id}/drain", json={"deadline_ms": deadline_ms})
    assert response.status_code == 202, response.text


def undrain(cluster: Cluster, pool_id: str) -> None:
    with cluster.client() as client:
        response = client.post(f"/v2/pools/{pool_id}/undrain")
    assert response.status_code == 202, response.text


def test_an_undrained_pool_serves_again_on_fresh_engines_after_its_drain_stopped_them(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {HOST: [tiny_pool("d1", tiny_model), tiny_pool("d2", tiny_model, aliases=["other"])]}
    )
    (old,) = cluster.worker_pids(HOST, "d1")
    drain(cluster, "d1", 0)
    wait_for(lambda: cluster.pool("d1").get("state") == "stopped", "the drain to stop d1")
    assert cluster.worker_pids(HOST, "d1") == []
    refused = cluster.submit(pinned_job("default", "d1"))
    assert refused.status_code == 503 and refused.json()["code"] == "POOL_UNREADY"
    served_elsewhere = cluster.stream_pinned("d2", model="other")
    assert served_elsewhere[-1].name == "end"

    undrain(cluster, "d1")

    cluster.wait_ready(["d1"])
    pool = cluster.pool("d1")
    assert (pool["draining"], pool["state"]) == (False, "ready")
    (fresh,) = cluster.worker_pids(HOST, "d1")
    assert fresh != old
    assert cluster.stream_pinned("d1")[-1].name == "end"


def test_undrain_during_a_drain_calls_it_off_and_the_same_engine_serves_on(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({HOST: [tiny_pool("d1", tiny_model)]})
    (engine,) = cluster.worker_pids(HOST, "d1")
    task = cluster.submit(pinned_job("default", "d1", max_tokens=LONG)).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        drain(cluster, "d1", 600_000)
        assert cluster.pool("d1")["ready"] is False  # no new work from now on
        undrain(cluster, "d1")
        assert cluster.pool("d1")["ready"] is True
        events = stream.result()
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == LONG
    assert cluster.worker_pids(HOST, "d1") == [engine]  # never stopped
    assert cluster.stream_pinned("d1")[-1].name == "end"


def test_undrain_refuses_a_body_with_fields_and_an_unknown_pool(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({HOST: [tiny_pool("d1", tiny_model)]})
    with cluster.client() as client:
        extra = client.post("/v2/pools/d1/undrain", json={"deadline_ms": 5})
        unknown = client.post("/v2/pools/nope/undrain")
        empty = client.post("/v2/pools/d1/undrain", json={})
    assert extra.status_code == 400 and extra.json()["code"] == "INVALID_PARAMS"
    assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"
    assert empty.status_code == 202  # not draining: nothing to undo
    assert cluster.pool("d1")["ready"] is True
