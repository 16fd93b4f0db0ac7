"""With the journal on, memory keeps only the most recent finished jobs
(`finished_tasks_kept`, 1,000 by default); the journal answers for the others, with no
restart involved: status, the whole stream and a resume from any event, an idempotent
retry, and the OpenAI facade's idempotent retry. Only the task list is bounded by
memory. Over real processes: one orchestrator, the tiny fixture model in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for

pytestmark = pytest.mark.integration
KEPT = 2


@pytest.fixture
def cluster(tiny_model: Path, tmp_path: Path) -> Any:
    cluster = Cluster(
        tmp_path,
        {"host-a": [tiny_pool("tiny-a", tiny_model, slots=2)]},
        orchestrator={"finished_tasks_kept": KEPT},
    )
    cluster.start()
    yield cluster
    cluster.stop()


def _submit(cluster: Cluster, prompt: str, **headers: str) -> str:
    response = cluster.submit({"model": "default", "prompt": prompt, "max_tokens": 12}, **headers)
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def _completed(cluster: Cluster, task_id: str) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        lambda: (s := cluster.task(task_id))["state"] == "completed" and s,
        f"task {task_id} to complete",
    )
    return status


def test_jobs_past_the_memory_window_are_answered_from_the_journal(cluster: Cluster) -> None:
    keyed = _submit(cluster, "the first job", **{"Idempotency-Key": "kept-in-the-journal"})
    first_status = _completed(cluster, keyed)
    first_events = cluster.events(keyed)
    assert first_events[-1].name == "end"
    # Enough later jobs, each waited for, that the first leaves the memory window.
    later = [_submit(cluster, f"later job {n}") for n in range(KEPT + 2)]
    for task_id in later:
        _completed(cluster, task_id)

    with cluster.client() as client:
        listed = client.get("/v2/tasks", params={"state": "completed", "limit": 1000}).json()
    listed_ids = [t["task_id"] for t in listed["tasks"]]
    assert keyed not in listed_ids and len(listed_ids) == KEPT, listed_ids

    again = cluster.task(keyed)  # from the journal
    assert again["state"] == "completed"
    assert again["tokens_out"] == first_status["tokens_out"] > 0
    replayed = cluster.events(keyed)
    assert [(e.id, e.name, e.data) for e in replayed] == [
        (e.id, e.name, e.data) for e in first_events
    ]
    middle = first_events[len(first_events) // 2].id
    resumed = cluster.events(keyed, last_event_id=middle)
    assert [(e.id, e.name) for e in resumed] == [
        (e.id, e.name) for e in first_events if e.id > middle
    ]
    assert _submit(cluster, "the first job", **{"Idempotency-Key": "kept-in-the-journal"}) == keyed
    other = cluster.submit(
        {"model": "default", "prompt": "another body", "max_tokens": 12},
        **{"Idempotency-Key": "kept-in-the-journal"},
    )
    assert other.status_code == 422 and other.json()["code"] == "IDEMPOTENCY_CONFLICT"


def test_an_openai_retry_past_the_memory_window_gets_the_same_completion(
    cluster: Cluster,
) -> None:
    body = {"model": "default", "prompt": "same", "max_tokens": 6, "temperature": 0.9}
    headers = {"Idempotency-Key": "v1-past-memory"}
    with cluster.client() as client:
        first = client.post("/v1/completions", json=body, headers=headers)
        assert first.status_code == 200, first.text
        for n in range(KEPT + 2):
            _completed(cluster, _submit(cluster, f"later job {n}"))
        second = client.post("/v1/completions", json=body, headers=headers)
    assert second.status_code == 200, second.text
    assert first.headers["x-llorch-task-id"] == second.headers["x-llorch-task-id"]
    assert first.json()["choices"][0]["text"] == second.json()["choices"][0]["text"]
