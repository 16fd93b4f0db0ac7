"""A job belongs to the key that submitted it (SEC-05), over real processes: another
client key reads, streams and cancels it as an unknown id (404 NOT_FOUND; cancel the 204
of an unknown id, and the job runs on); its owner and an admin key reach it; after the
orchestrator restarts, the journal's record keeps the owner."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from ci_harness import secret_scan
from ci_harness.cluster import Cluster, tiny_pool, wait_for

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _alice_and_bob(
    cluster_factory: Factory, tiny_model: Path
) -> tuple[Cluster, dict[str, dict[str, str]]]:
    """A cluster with two client keys, alice and bob; each one's auth header."""
    alice, bob = (secret_scan.new_api_key(name) for name in ("alice", "bob"))
    keys = [
        {"name": "alice", "key_sha256": _digest(alice), "role": "client"},
        {"name": "bob", "key_sha256": _digest(bob), "role": "client"},
    ]
    auth = {"alice": {"Authorization": f"Bearer {alice}"},
            "bob": {"Authorization": f"Bearer {bob}"}}  # fmt: skip
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, headers=auth["alice"], api_keys=keys
    )
    return cluster, auth


def _answers_as_unknown(http: httpx.Client, task_id: str, auth: dict[str, str]) -> None:
    """GET and events of `task_id` are what an id that never existed gets."""
    unknown = http.get("/v2/tasks/no-such-task", headers=auth).json()
    for path in (f"/v2/tasks/{task_id}", f"/v2/tasks/{task_id}/events"):
        answer = http.get(path, headers=auth)
        assert answer.status_code == 404, (path, answer.text)
        body = answer.json()
        assert body["code"] == "NOT_FOUND" == unknown["code"]
        assert body["message"] == unknown["message"].replace("no-such-task", task_id)
        assert set(body) == set(unknown)


def _client_cancels(http: httpx.Client) -> float:
    """`llorch_tasks_canceled_total{reason="client"}`: counted when a cancel takes."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith('llorch_tasks_canceled_total{reason="client"}'):
            return float(line.split()[-1])
    raise AssertionError("no llorch_tasks_canceled_total{reason=client} series")


def _first_event(http: httpx.Client, task_id: str, auth: dict[str, str]) -> str:
    with http.stream("GET", f"/v2/tasks/{task_id}/events", headers=auth) as stream:
        assert stream.status_code == 200
        return next(line for line in stream.iter_lines() if line.startswith("event: "))


def test_another_client_key_cannot_read_stream_or_cancel_a_job_and_the_owner_survives_a_restart(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    admin, alice, bob = (secret_scan.new_api_key(name) for name in ("admin", "alice", "bob"))
    keys = [
        {"name": "operator", "key_sha256": _digest(admin), "role": "admin"},
        {"name": "alice", "key_sha256": _digest(alice), "role": "client"},
        {"name": "bob", "key_sha256": _digest(bob), "role": "client"},
    ]
    auth = {name: {"Authorization": f"Bearer {key}"} for name, key in
            (("admin", admin), ("alice", alice), ("bob", bob))}  # fmt: skip
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, headers=auth["admin"], api_keys=keys
    )
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        body = {"model": "default", "prompt": "x", "max_tokens": 16000, "seed": 1}
        job = http.post("/v2/tasks", json=body, headers=auth["alice"]).json()["task_id"]

        def status(who: str) -> dict[str, object]:
            answer = http.get(f"/v2/tasks/{job}", headers=auth[who])
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        wait_for(lambda: status("alice")["state"] == "running", "alice's job to run")
        _answers_as_unknown(http, job, auth["bob"])
        refused = http.post(f"/v2/tasks/{job}/cancel", headers=auth["bob"])
        assert refused.status_code == 204 and not refused.content
        assert _client_cancels(http) == 0  # nothing was cancelled
        assert status("alice")["state"] == status("admin")["state"] == "running"
        assert _first_event(http, job, auth["alice"]) == "event: started"
        assert _first_event(http, job, auth["admin"]) == "event: started"

        assert http.post(f"/v2/tasks/{job}/cancel", headers=auth["alice"]).status_code == 204
        assert _client_cancels(http) == 1
        wait_for(lambda: status("alice")["state"] == "cancelled", "alice's cancel to take")

    cluster.restart_orchestrator(signal.SIGTERM)
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        assert http.get(f"/v2/tasks/{job}", headers=auth["alice"]).json()["state"] == "cancelled"
        assert http.get(f"/v2/tasks/{job}", headers=auth["admin"]).json()["state"] == "cancelled"
        _answers_as_unknown(http, job, auth["bob"])
        listed = http.get("/v2/tasks?limit=1000", headers=auth["bob"]).json()["tasks"]
        assert job not in [t["task_id"] for t in listed]


def test_a_session_belongs_to_its_key_and_another_key_naming_its_id_gets_a_session_of_its_own(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster, auth = _alice_and_bob(cluster_factory, tiny_model)
    turn = {"model": "default", "prompt": "x", "max_tokens": 4, "seed": 1,
            "session_id": "shared-id", "session": {"max_turns": 1}}  # fmt: skip
    with httpx.Client(base_url=cluster.url, timeout=60) as http:

        def run(who: str) -> httpx.Response:
            accepted = http.post("/v2/tasks", json=turn, headers=auth[who])
            if accepted.status_code != 202:
                return accepted
            job = accepted.json()["task_id"]
            wait_for(
                lambda: (
                    http.get(f"/v2/tasks/{job}", headers=auth[who]).json()["state"] == "completed"
                ),
                f"{who}'s turn to complete",
            )
            return accepted

        def session(who: str) -> httpx.Response:
            return http.get("/v2/sessions/shared-id", headers=auth[who])

        assert run("alice").status_code == 202
        assert session("alice").json()["turns"] == 1
        # Alice's session took its one turn: hers refuses another ...
        refused = http.post("/v2/tasks", json=turn, headers=auth["alice"])
        assert refused.status_code == 429 and refused.json()["code"] == "QUOTA_EXCEEDED"
        # ... while Bob, naming the same id, neither sees it nor is refused by it.
        unseen = session("bob")
        assert unseen.status_code == 404 and unseen.json()["code"] == "NOT_FOUND", unseen.text
        assert run("bob").status_code == 202
        assert session("bob").json()["turns"] == 1
        # Bob forgetting "his" session leaves Alice's alone.
        assert http.delete("/v2/sessions/shared-id", headers=auth["bob"]).status_code == 204
        assert session("bob").status_code == 404
        mine = session("alice")
        assert mine.status_code == 200 and mine.json()["turns"] == 1, mine.text


def test_a_task_id_taken_by_another_key_is_the_same_409_as_ones_own_and_the_job_stays_unseen(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    """Client-chosen task ids are one namespace across keys (the OpenAPI `task_id`): Bob
    naming Alice's id, whether her job is live or has ended, gets the 409 Alice gets for
    her own, which names neither her nor her job; her job stays a 404 to him, unlisted,
    and untouched."""
    cluster, auth = _alice_and_bob(cluster_factory, tiny_model)
    hers = {"model": "default", "prompt": "alice-secret-prompt", "max_tokens": 4, "seed": 1,
            "task_id": "order-7"}  # fmt: skip
    his = {**hers, "prompt": "bob's prompt", "max_tokens": 2}
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        assert http.post("/v2/tasks", json=hers, headers=auth["alice"]).status_code == 202
        own = http.post("/v2/tasks", json=hers, headers=auth["alice"])
        taken = http.post("/v2/tasks", json=his, headers=auth["bob"])
        for answer in (own, taken):
            assert answer.status_code == 409, answer.text
            assert answer.json()["code"] == "IDEMPOTENCY_CONFLICT"
        assert set(taken.json()) == set(own.json())
        assert taken.json()["message"] == own.json()["message"]
        assert "alice" not in taken.text and "secret" not in taken.text

        _answers_as_unknown(http, "order-7", auth["bob"])

        def ended() -> dict[str, object] | None:
            status = dict(http.get("/v2/tasks/order-7", headers=auth["alice"]).json())
            return status if status["state"] in ("completed", "failed", "cancelled") else None

        done = wait_for(ended, "alice's job to end")
        assert done["state"] == "completed" and done["tokens_out"] == 4, done
        after = http.post("/v2/tasks", json=his, headers=auth["bob"])  # ended, still taken
        assert after.status_code == 409 and after.json()["message"] == own.json()["message"]
        listed = http.get("/v2/tasks?limit=1000", headers=auth["bob"]).json()["tasks"]
        assert "order-7" not in [t["task_id"] for t in listed]
