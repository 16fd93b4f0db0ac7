"""A client that goes away from a one-round-trip stream cancels its task after the grace
period (API-06), on both: the llorch SSE stream and the OpenAI facade's. A two-step job
(202, then events), or a stream that asks with `X-Llorch-On-Disconnect: continue`, runs
to its end without a reader, and a resume gives the rest (REL-04).

Cluster: one orchestrator (disconnect grace 500 ms), one single-slot pool of the tiny
fixture model running llama.cpp in-process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for

pytestmark = pytest.mark.integration
LONG = 8000  # tokens: several seconds of generation on the tiny model


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(
        tmp_path_factory.mktemp("disconnect"), {"host-a": [tiny_pool("tiny-a", tiny_model)]}
    )
    cluster.start()
    yield cluster
    codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())


def read_until_a_token(lines: Iterator[str], marker: str) -> None:
    for line in lines:
        if marker in line:
            return
    raise AssertionError("the stream ended before its first token")


def assert_cancelled_for_the_disconnect(cluster: Cluster, task_id: str) -> None:
    status = wait_for(
        lambda: (s := cluster.task(task_id))["state"] != "running" and s,
        "the abandoned task to end",
    )
    assert status["state"] == "cancelled", status
    assert status["error"]["code"] == "CANCELLED" and "disconnect" in status["error"]["message"]
    wait_for(lambda: cluster.pool("tiny-a")["slots_free"] == 1, "the slot to be released")


def test_leaving_a_one_round_trip_task_stream_cancels_the_task_after_the_grace(
    cluster: Cluster,
) -> None:
    body = {"model": "default", "prompt": "d", "max_tokens": LONG}
    with (
        cluster.client() as client,
        client.stream(
            "POST", "/v2/tasks", json=body, headers={"Accept": "text/event-stream"}
        ) as response,
    ):
        assert response.status_code == 200
        task_id = response.headers["x-llorch-task-id"]
        read_until_a_token(response.iter_lines(), "event: token")
    assert_cancelled_for_the_disconnect(cluster, task_id)


def test_a_two_step_job_runs_to_its_end_without_a_reader_and_resumes_without_gaps(
    cluster: Cluster,
) -> None:
    task_id = cluster.submit({"model": "default", "prompt": "d", "max_tokens": 200}).json()[
        "task_id"
    ]
    seen = []
    with (
        cluster.client() as client,
        client.stream("GET", f"/v2/tasks/{task_id}/events") as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
            if line == "event: token":
                break
    status = wait_for(
        lambda: (s := cluster.task(task_id))["state"] not in ("queued", "running") and s,
        "the readerless job to end",
        timeout_s=60,
    )
    assert status["state"] == "completed", status
    rest = cluster.events(task_id, last_event_id=seen[-1])
    full = cluster.events(task_id)
    assert [e.id for e in rest] == [e.id for e in full if e.id > seen[-1]]
    assert rest[-1].name == "end"
    indices = [e.data["i"] for e in full if e.name == "token"]
    assert indices and indices == list(range(len(indices)))


def test_leaving_an_openai_stream_cancels_the_task_after_the_grace(cluster: Cluster) -> None:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": LONG,
        "stream": True,
    }
    with (
        cluster.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        task_id = json.loads(first[len("data: ") :])["id"].removeprefix("chatcmpl-")
        read_until_a_token(lines, '"content":"')
    assert_cancelled_for_the_disconnect(cluster, task_id)
