"""Admission and placement policies across real processes: drop-lru tells the evicted
task (ADM-02), API keys and quotas (SEC-01, ADM-05), the watchdog (ADM-06), sessions
keep landing on their warm pool (API-10, PLC-03)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
LONG = 8000


def test_drop_lru_evicts_the_oldest_batch_task_and_tells_it_on_its_stream(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"host-a": [tiny_pool("solo", tiny_model)]}, queue_capacity=2, full_queue_policy="drop-lru"
    )
    running = cluster.submit({"model": "default", "prompt": "a", "max_tokens": LONG}).json()
    wait_for(lambda: cluster.task(running["task_id"])["state"] == "running", "a running task")
    old_batch = cluster.submit(
        {"model": "default", "prompt": "b", "max_tokens": 4, "priority": "batch"}
    ).json()
    interactive = cluster.submit({"model": "default", "prompt": "c", "max_tokens": 4}).json()
    newcomer = cluster.submit({"model": "default", "prompt": "d", "max_tokens": 4})
    assert newcomer.status_code == 202  # admitted by evicting, not refused
    evicted = cluster.events(old_batch["task_id"])
    assert [e.name for e in evicted] == ["error"]
    assert evicted[0].data["code"] == "QUEUE_FULL_DROP_LRU" and evicted[0].data["retriable"]
    assert cluster.task(old_batch["task_id"])["state"] == "failed"
    assert cluster.task(interactive["task_id"])["state"] == "queued"
    for task_id in (running["task_id"], interactive["task_id"], newcomer.json()["task_id"]):
        cluster.cancel(task_id)


KEY = "sk-test-123456"


def test_api_keys_are_required_and_quotas_answer_429_with_retry_after(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    keys = [
        {
            "name": "team-a",
            "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(),
            "max_concurrent": 1,
            "requests_per_minute": 3,
        }
    ]
    auth = {"Authorization": f"Bearer {KEY}"}
    cluster = cluster_factory(
        {"host-a": [tiny_pool("solo", tiny_model, slots=2)]}, headers=auth, api_keys=keys
    )
    body: dict[str, Any] = {"model": "default", "prompt": "x", "max_tokens": 4}
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        missing = client.post("/v2/tasks", json=body)
        wrong = client.post("/v2/tasks", json=body, headers={"Authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert missing.json()["code"] == "UNAUTHORIZED"
        assert client.get("/healthz").status_code == 200  # ops endpoints stay open
        long = client.post("/v2/tasks", json={**body, "max_tokens": LONG}, headers=auth).json()
        wait_for(lambda: cluster.task(long["task_id"])["state"] == "running", "a running task")
        concurrent = client.post("/v2/tasks", json=body, headers=auth)
        assert concurrent.status_code == 429 and concurrent.json()["code"] == "QUOTA_EXCEEDED"
        assert concurrent.headers["retry-after"] == "1"
        client.post(f"/v2/tasks/{long['task_id']}/cancel", headers=auth)
        wait_for(lambda: cluster.task(long["task_id"])["state"] == "cancelled", "the cancel")
        for _ in range(2):
            done = client.post("/v2/tasks", json=body, headers=auth).json()
            assert cluster.events(done["task_id"])[-1].name == "end"
        over = client.post("/v2/tasks", json=body, headers=auth)
        assert over.status_code == 429 and over.json()["code"] == "QUOTA_EXCEEDED"
        assert "requests per minute" in over.json()["message"]
        assert 1 <= int(over.headers["retry-after"]) <= 60


def test_the_watchdog_ends_a_silent_stream_with_decode_timeout_and_frees_the_slot(
    cluster_factory: Factory,
) -> None:
    mock = {"id": "mock-1", "engine": "mock", "ctx": 4096, "slots": 1, "aliases": ["m"]}
    cluster = cluster_factory({"host-a": [mock]}, idle_timeout_ms=600)
    task = cluster.submit(
        {"model": "m", "prompt": "[[mock hang_after=3]] go", "max_tokens": 50}
    ).json()
    events = cluster.events(task["task_id"])
    assert [e.name for e in events[:4]] == ["started", "token", "token", "token"]
    assert events[-1].name == "error" and events[-1].data["code"] == "DECODE_TIMEOUT"
    wait_for(lambda: cluster.pool("mock-1")["slots_free"] == 1, "the slot to be released")
    after = cluster.events(
        cluster.submit({"model": "m", "prompt": "ok", "max_tokens": 3}).json()["task_id"]
    )
    assert after[-1].name == "end"


def test_session_turns_keep_landing_on_their_warm_pool(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"host-a": [tiny_pool("tiny-a", tiny_model), tiny_pool("tiny-b", tiny_model)]}
    )
    first = cluster.submit(
        {
            "model": "default",
            "session_id": "conv-1",
            "prompt": "hi",
            "max_tokens": 4,
            "placement": {"pin_pool_id": "tiny-b"},
        }
    ).json()
    assert cluster.events(first["task_id"])[0].data["pool_id"] == "tiny-b"
    pools = []
    for turn in range(3):
        task = cluster.submit(
            {"model": "default", "session_id": "conv-1", "prompt": f"turn {turn}", "max_tokens": 4}
        ).json()
        pools.append(cluster.events(task["task_id"])[0].data["pool_id"])
    assert pools == ["tiny-b"] * 3  # without the session, tiny-a would win the tie-break
    other = cluster.submit({"model": "default", "prompt": "x", "max_tokens": 4}).json()
    assert cluster.events(other["task_id"])[0].data["pool_id"] == "tiny-a"
    with cluster.client() as client:
        session = client.get("/v2/sessions/conv-1").json()
        assert session["turns"] == 4 and session["pool_id"] == "tiny-b" and session["kv_warm"]
        assert session["ttl_ms_remaining"] > 0 and session["max_turns"] == 8
        assert client.delete("/v2/sessions/conv-1").status_code == 204
        assert client.get("/v2/sessions/conv-1").status_code == 404


def test_a_session_past_its_turn_limit_is_refused_with_quota_exceeded(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({"host-a": [tiny_pool("solo", tiny_model)]})
    body = {
        "model": "default",
        "session_id": "short",
        "prompt": "x",
        "max_tokens": 2,
        "session": {"max_turns": 2},
    }
    for _ in range(2):
        cluster.events(cluster.submit(body).json()["task_id"])
    refused = cluster.submit(body)
    assert refused.status_code == 429 and refused.json()["code"] == "QUOTA_EXCEEDED"
    assert "2 turns" in refused.json()["message"]
