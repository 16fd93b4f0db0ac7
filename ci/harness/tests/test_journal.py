"""Nothing accepted is lost (REL-01..06), over real processes: the orchestrator is
killed (SIGKILL) or stopped (SIGTERM) under load and started again on its state
directory; every job it accepted reaches one end that `GET /v2/tasks/{id}` answers.
Idempotent submits (REL-05) return the same job, across a restart too.

Cluster: one orchestrator, one pool of the tiny fixture model with 4 slots (2 replicas
of 2), llama.cpp in-process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for

pytestmark = pytest.mark.integration
LONG = 8000  # tokens: several seconds of generation on the tiny model
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def cluster(tiny_model: Path, tmp_path: Path) -> Any:
    cluster = Cluster(
        tmp_path,
        {"host-a": [tiny_pool("tiny-a", tiny_model, slots=2, replicas=2)]},
        orchestrator={"shutdown_grace_s": 20},
        # Engines frozen on purpose (`_engines_frozen`) are not restarted for it.
        hosts={
            "host-a": {
                "restart": {
                    "initial_backoff_s": 0.3,
                    "max_backoff_s": 2.0,
                    "probe_failures_to_restart": 1000,
                }
            }
        },
    )
    cluster.start()
    yield cluster
    cluster.stop()


def _submit(cluster: Cluster, max_tokens: int, **headers: str) -> str:
    response = cluster.submit(
        {"model": "default", "prompt": "journal", "max_tokens": max_tokens}, **headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def _running(cluster: Cluster, task_ids: list[str]) -> bool:
    return all(cluster.task(t)["state"] == "running" for t in task_ids)


def _started(cluster: Cluster, task_ids: list[str]) -> bool:
    """Each job runs or has run (a short one may end before the last one starts)."""
    return all(cluster.task(t)["state"] in ("running", "completed") for t in task_ids)


def _ended(cluster: Cluster, task_id: str) -> dict[str, Any] | None:
    status = cluster.task(task_id)
    return status if status["state"] in TERMINAL else None


@contextlib.contextmanager
def _engines_frozen(cluster: Cluster) -> Iterator[None]:
    """SIGSTOP every worker process of host-a's pool manager for the block, SIGCONT after:
    the jobs they run stay running, whatever the machine's load, and no token reaches the
    orchestrator meanwhile."""
    manager = psutil.Process(cluster.processes["pool-managerd-host-a"].pid)
    workers = [p for p in manager.children() if "worker_adapters.worker" in p.cmdline()]
    assert len(workers) == 2, [p.cmdline() for p in manager.children()]
    for worker in workers:
        worker.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)


def _end_of(cluster: Cluster, task_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(lambda: _ended(cluster, task_id), "a job's end", timeout_s)
    return status


def test_a_sigkilled_orchestrator_runs_its_queued_jobs_and_ends_its_running_ones_typed(
    cluster: Cluster,
) -> None:
    running = [_submit(cluster, LONG) for _ in range(4)]
    wait_for(lambda: _running(cluster, running), "4 jobs to run")
    # The engines are frozen from here to the kill, so that the four long jobs still hold
    # every slot when it comes, however slowly the 50 submits go on a loaded machine.
    with _engines_frozen(cluster):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            queued = list(pool.map(lambda _: _submit(cluster, 4), range(50)))
        with cluster.client() as client:
            listed = client.get("/v2/tasks", params={"limit": 1000}).json()["tasks"]
        states = {job["task_id"]: job["state"] for job in listed}
        assert {states[t] for t in queued} == {"queued"}, states
        assert {states[t] for t in running} == {"running"}, states
        process = cluster.processes["orchestratord"]
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

    cluster.restart_orchestrator()  # already killed: starts it again on its state

    for task_id in running:
        status = _end_of(cluster, task_id)
        assert status["state"] == "failed", status
        assert status["error"]["code"] == "ORCHESTRATOR_RESTART", status
        assert status["error"]["retriable"] is True
        events = cluster.events(task_id)
        assert events[-1].name == "error" and events[-1].data["code"] == "ORCHESTRATOR_RESTART"
        assert len({e.id for e in events}) == len(events)
    for task_id in queued:
        status = _end_of(cluster, task_id)
        assert status["state"] == "completed", status
        assert cluster.events(task_id)[-1].name == "end"


def test_the_same_idempotency_key_and_body_is_the_same_job_also_after_a_restart(
    cluster: Cluster,
) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = _submit(cluster, 4, **key)
    assert _submit(cluster, 4, **key) == first
    other = cluster.submit({"model": "default", "prompt": "other", "max_tokens": 4}, **key)
    assert other.status_code == 422 and other.json()["code"] == "IDEMPOTENCY_CONFLICT"
    _end_of(cluster, first)

    cluster.restart_orchestrator(signal.SIGKILL)

    assert _submit(cluster, 4, **key) == first
    assert cluster.task(first)["state"] == "completed"
    again = cluster.submit({"model": "default", "prompt": "other", "max_tokens": 4}, **key)
    assert again.status_code == 422


def test_an_idempotent_openai_retry_gets_the_same_completion(cluster: Cluster) -> None:
    body = {"model": "default", "prompt": "same", "max_tokens": 6, "temperature": 0.9}
    headers = {"Idempotency-Key": "v1-retry"}
    with cluster.client() as client:
        first = client.post("/v1/completions", json=body, headers=headers)
        second = client.post("/v1/completions", json=body, headers=headers)
    assert first.status_code == second.status_code == 200, first.text
    assert first.headers["x-llorch-task-id"] == second.headers["x-llorch-task-id"]
    assert first.json()["choices"][0]["text"] == second.json()["choices"][0]["text"]


def test_sigterm_refuses_new_jobs_lets_running_ones_finish_and_keeps_queued_ones(
    cluster: Cluster,
) -> None:
    running = [_submit(cluster, 2000) for _ in range(4)]
    wait_for(lambda: _started(cluster, running), "4 jobs to start")
    queued = [_submit(cluster, 4) for _ in range(6)]
    process = cluster.processes["orchestratord"]
    process.send_signal(signal.SIGTERM)

    def refused() -> httpx.Response | None:
        response = cluster.submit({"model": "default", "prompt": "late", "max_tokens": 4})
        return response if response.status_code == 503 else None

    late = wait_for(refused, "new jobs to be refused")
    assert late.json()["code"] == "SHUTTING_DOWN" and late.json()["retriable"] is True
    assert int(late.headers["retry-after"]) >= 1
    assert process.wait(timeout=60) == 0

    cluster.restart_orchestrator(signal.SIGKILL)  # already stopped: starts it again
    for task_id in running:
        assert cluster.task(task_id)["state"] == "completed"
    for task_id in queued:
        status = _end_of(cluster, task_id)
        assert status["state"] == "completed", status


def test_a_job_that_ended_before_a_restart_replays_whole_with_its_end(cluster: Cluster) -> None:
    task_id = _submit(cluster, 40)
    before = cluster.events(task_id)
    assert before[-1].name == "end"

    cluster.restart_orchestrator(signal.SIGKILL)

    after = cluster.events(task_id)
    assert [(e.id, e.name, e.data) for e in after] == [(e.id, e.name, e.data) for e in before]
    resumed = cluster.events(task_id, last_event_id=before[-2].id)
    assert [e.name for e in resumed] == ["end"]


def test_after_a_restart_a_model_whose_pool_manager_has_not_rejoined_is_503_not_404(
    cluster: Cluster,
) -> None:
    assert cluster.stop_process("pool-managerd-host-a") == 0
    cluster.restart_orchestrator(signal.SIGKILL)

    early = cluster.submit({"model": "default", "prompt": "early", "max_tokens": 4})
    assert early.status_code == 503, early.text
    assert early.json()["code"] == "POOL_UNREADY" and early.json()["retriable"] is True
    assert int(early.headers["retry-after"]) >= 1

    cluster.start_manager("host-a")
    cluster.wait_ready(["tiny-a"])
    assert _end_of(cluster, _submit(cluster, 4))["state"] == "completed"
