"""The pool manager's own life (issue 11; POOL-05, POOL-07, REL-06): a SIGKILLed pool
manager leaves no second set of engines behind its restart, SIGTERM drains running
work before it exits 0, and a drain can be undone. Real processes throughout: the
orchestrator, pool managers and `llorch worker` engines on the tiny model."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from ci_harness.cluster import Cluster, pinned_job, tiny_pool, wait_for
from ci_harness.streams import BackgroundStream
from provisioners.testing import llama_server_for_tests

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
HOST = "host-a"
MANAGER = f"pool-managerd-{HOST}"
LONG = 8000  # tokens: several seconds of generation on the tiny model


def restart_until_serving(
    cluster: Cluster, pool_id: str, engines: Callable[[], set[int]], timeout_s: float = 60.0
) -> int:
    """SIGKILL the pool manager, check its engines outlive it, start it again on the
    same state_dir and wait until the pool's engines are all new and it is ready.
    Returns the most engine processes of the pool seen at any moment after the restart
    (issue 11 saw twice the set)."""
    old = engines()
    manager = cluster.processes[MANAGER]
    manager.send_signal(signal.SIGKILL)
    assert manager.wait(timeout=10) == -signal.SIGKILL
    assert engines() == old  # what a SIGKILL leaves behind
    cluster.start_manager(HOST)
    most = 0

    def serving_again() -> bool:
        nonlocal most
        pids = engines()
        most = max(most, len(pids))
        return bool(pids) and not pids & old and bool(cluster.pool(pool_id).get("ready"))

    wait_for(serving_again, f"pool {pool_id} to serve again on fresh engines", timeout_s)
    return most


def test_a_sigkilled_pool_manager_leaves_no_second_set_of_engines_and_a_second_one_exits_3(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({HOST: [tiny_pool("p1", tiny_model, replicas=2)]})
    assert len(cluster.worker_pids(HOST, "p1")) == 2

    most = restart_until_serving(cluster, "p1", lambda: set(cluster.worker_pids(HOST, "p1")))

    assert most <= 2, f"{most} engine processes served p1 at once"
    assert len(cluster.worker_pids(HOST, "p1")) == 2  # one per replica
    events = cluster.stream_pinned("p1")
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 8
    log = (cluster.root / f"{MANAGER}.log").read_text()
    assert "left by a previous pool manager" in log

    # A second pool manager on the same state_dir (not a restart: this one lives) must
    # not take the running engines for leftovers: it exits 3 and stops nothing.
    serving, after = cluster.processes[MANAGER], set(cluster.worker_pids(HOST, "p1"))
    cluster.start_manager(HOST)
    second, cluster.processes[MANAGER] = cluster.processes[MANAGER], serving
    assert second.wait(timeout=30) == 3
    assert "in use by another pool-managerd" in (cluster.root / f"{MANAGER}.log").read_text()
    assert set(cluster.worker_pids(HOST, "p1")) == after

    assert cluster.stop_process(MANAGER) == 0
    assert cluster.worker_pids(HOST, "p1") == []


@pytest.fixture(scope="module")
def llama_server() -> list[str]:
    """The test llama-server's command prefix (built once per machine, then found; this
    fixture is not bounded by the test timeout, as in test_engine_pools)."""
    return list(llama_server_for_tests().command)


def llama_servers(binary: str, model: Path) -> set[int]:
    """Pids of llama-server processes serving `model` (the session's own fixture file)."""
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0] == binary and str(model.resolve()) in cmdline:
            found.add(int(process.info["pid"]))
    return found


@pytest.mark.timeout(300, func_only=True)
def test_a_sigkilled_pool_manager_leaves_no_second_set_of_llama_servers_either(
    cluster_factory: Factory, tiny_model: Path, llama_server: list[str]
) -> None:
    pool = tiny_pool(
        "ls", tiny_model, engine="llamacpp", engine_command=llama_server, ctx=4096, replicas=2
    )
    cluster = cluster_factory({HOST: [pool]})

    def servers() -> set[int]:
        return llama_servers(llama_server[0], tiny_model)

    assert len(servers()) == 2

    most = restart_until_serving(cluster, "ls", servers, timeout_s=120)
    assert most <= 2, f"{most} llama-server processes served ls at once"
    assert len(servers()) == 2
    assert cluster.stream_pinned("ls")[-1].name == "end"
    assert cluster.stop_process(MANAGER) == 0
    assert servers() == set()


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


def llorch_pools(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llorch", "pools", *args, "--url", cluster.url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_drain_can_be_undone_while_it_waits_for_jobs_and_after_it_stopped_the_engines(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {HOST: [tiny_pool("d1", tiny_model), tiny_pool("d2", tiny_model, aliases=["other"])]}
    )
    with cluster.client() as client:  # bad input first: typed errors, nothing changes
        extra = client.post("/v2/pools/d1/undrain", json={"deadline_ms": 5})
        unknown = client.post("/v2/pools/nope/undrain")
        not_draining = client.post("/v2/pools/d1/undrain", json={})
    assert extra.status_code == 400 and extra.json()["code"] == "INVALID_PARAMS"
    assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"
    assert not_draining.status_code == 202 and cluster.pool("d1")["ready"] is True

    # Undone while the drain waits for a running job: the same engine serves on.
    (engine,) = cluster.worker_pids(HOST, "d1")
    task = cluster.submit(pinned_job("default", "d1", max_tokens=LONG)).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        drain(cluster, "d1", 600_000)
        assert cluster.pool("d1")["ready"] is False  # no new work from now on
        undrain(cluster, "d1")
        assert cluster.pool("d1")["ready"] is True
        assert not stream.done, "the job ended before the undrain"
        events = stream.result()
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == LONG
    assert cluster.worker_pids(HOST, "d1") == [engine]  # never stopped

    # Undone after the drain stopped the engine (both through the CLI): a fresh one
    # starts and serves.
    assert llorch_pools(cluster, "drain", "d1", "--deadline-ms", "0").returncode == 0
    wait_for(lambda: cluster.pool("d1").get("state") == "stopped", "the drain to stop d1")
    assert cluster.worker_pids(HOST, "d1") == []
    refused = cluster.submit(pinned_job("default", "d1"))
    assert refused.status_code == 503 and refused.json()["code"] == "POOL_UNREADY"
    # Work for the model whose only pool is drained is refused at once, not queued
    # until max_queue_wait_ms (issue 11: /v2/tasks and /v1/completions hung 300 s).
    with cluster.client() as client:
        for path, body in (
            ("/v2/tasks", {"model": "default", "prompt": "x", "max_tokens": 4}),
            ("/v1/completions", {"model": "default", "prompt": "x", "max_tokens": 4}),
        ):
            answer = client.post(path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert "POOL_UNREADY" in answer.text and int(answer.headers["retry-after"]) >= 1
    assert cluster.stream_pinned("d2", model="other")[-1].name == "end"  # work goes elsewhere
    misused = llorch_pools(cluster, "undrain", "d1", "--deadline-ms", "5")
    assert misused.returncode == 2 and "--deadline-ms is for drain only" in misused.stderr
    undone = llorch_pools(cluster, "undrain", "d1")
    assert undone.returncode == 0, undone.stderr
    cluster.wait_ready(["d1"])
    pool = cluster.pool("d1")
    assert (pool["draining"], pool["state"]) == (False, "ready")
    (fresh,) = cluster.worker_pids(HOST, "d1")
    assert fresh != engine
    assert cluster.stream_pinned("d1")[-1].name == "end"
