"""Failure handling across processes: re-queue before the first token, WORKER_RESET after
it, restart with back-off, clean shutdown without orphans (REL-02, POOL-04, POOL-07)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from ci_harness.cluster import Cluster, Event, parse_events, tiny_pool, wait_for

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]


def test_killing_a_worker_before_its_first_token_requeues_the_job_and_it_completes_after_restart(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({"host-a": [tiny_pool("solo", tiny_model)]})
    (pid,) = cluster.worker_pids("host-a", "solo")
    os.kill(pid, signal.SIGSTOP)  # the worker accepts the call but cannot answer it
    try:
        task_id = cluster.submit({"model": "default", "prompt": "x", "max_tokens": 16}).json()[
            "task_id"
        ]
        wait_for(lambda: cluster.task(task_id)["state"] == "running", "the job to be dispatched")
    finally:
        os.kill(pid, signal.SIGKILL)
    events = cluster.events(task_id)  # waits for the terminal event
    assert events[0].name == "started"
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 16
    status = cluster.task(task_id)
    assert status["state"] == "completed" and status["attempts"] == 2
    (new_pid,) = cluster.worker_pids("host-a", "solo")
    assert new_pid != pid
    pool = cluster.pool("solo")
    assert pool["restarts"] == 1 and pool["ready"]


def test_killing_a_worker_mid_stream_ends_the_job_with_a_retriable_worker_reset(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({"host-a": [tiny_pool("solo", tiny_model)]})
    (pid,) = cluster.worker_pids("host-a", "solo")
    task_id = cluster.submit({"model": "default", "prompt": "x", "max_tokens": 8000}).json()[
        "task_id"
    ]
    seen: list[Event] = []
    first_token = threading.Event()

    def read() -> None:
        with cluster.client() as client, client.stream("GET", f"/v2/tasks/{task_id}/events") as r:
            for event in parse_events(r.iter_lines()):
                seen.append(event)
                if event.name == "token":
                    first_token.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first_token.wait(30)
    os.kill(pid, signal.SIGKILL)
    reader.join(30)
    assert seen[-1].name == "error", seen[-1]
    assert seen[-1].data["code"] == "WORKER_RESET" and seen[-1].data["retriable"] is True
    assert cluster.task(task_id)["attempts"] == 1  # tokens were delivered: no silent retry
    cluster.wait_ready(["solo"])  # and the pool comes back after its restart
    assert cluster.pool("solo")["restarts"] == 1


def test_a_full_queue_answers_429_admission_reject_with_retry_after(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"host-a": [tiny_pool("solo", tiny_model)]}, queue_capacity=1, reject_retry_after_ms=2500
    )
    running = cluster.submit({"model": "default", "prompt": "a", "max_tokens": 8000}).json()
    wait_for(lambda: cluster.task(running["task_id"])["state"] == "running", "a running job")
    queued = cluster.submit({"model": "default", "prompt": "b", "max_tokens": 4})
    assert queued.status_code == 202
    rejected = cluster.submit({"model": "default", "prompt": "c", "max_tokens": 4})
    assert rejected.status_code == 429
    envelope = rejected.json()
    assert envelope["code"] == "ADMISSION_REJECT" and envelope["retriable"] is True
    assert envelope["policy_label"] == "reject" and envelope["retry_after_ms"] == 2500
    assert rejected.headers["retry-after"] == "3"
    for task_id in (running["task_id"], queued.json()["task_id"]):
        assert cluster.cancel(task_id) == 204


def test_sigterm_on_the_pool_manager_stops_its_workers_and_exits_cleanly(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({"host-a": [tiny_pool("p1", tiny_model, replicas=2)]})
    pids = cluster.worker_pids("host-a", "p1")
    assert len(pids) == 2
    assert cluster.stop_process("pool-managerd-host-a") == 0
    assert cluster.worker_pids("host-a", "p1") == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    wait_for(lambda: not cluster.pool("p1").get("live"), "the orchestrator to see the host gone")
    response = cluster.submit(
        {"model": "default", "prompt": "x", "max_tokens": 4, "placement": {"pin_pool_id": "p1"}}
    )
    assert response.status_code == 503 and response.json()["code"] == "POOL_UNREADY"
