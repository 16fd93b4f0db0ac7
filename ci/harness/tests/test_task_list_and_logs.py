"""`GET /v2/tasks` (`llorch ps`) and `GET /v2/pools/{id}/logs` (`llorch logs`) on a real
orchestrator and pool manager: a client key lists only its own jobs, an admin key all,
`state=`/`limit=` filter and bad values are 400 `INVALID_PARAMS`; a pool's engine log is
read on its host over the control link, and followed from `next_offset`."""

from __future__ import annotations

import hashlib
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


def test_the_task_list_shows_a_client_its_own_jobs_and_an_admin_all_with_filters(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    admin, alice, bob = (secret_scan.new_api_key(name) for name in ("admin", "alice", "bob"))
    keys = [
        {"name": "operator", "key_sha256": _digest(admin), "role": "admin"},
        {"name": "alice", "key_sha256": _digest(alice), "role": "client"},
        {"name": "bob", "key_sha256": _digest(bob), "role": "client"},
    ]
    admin_auth = {"Authorization": f"Bearer {admin}"}
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, headers=admin_auth, api_keys=keys
    )
    auth = {name: {"Authorization": f"Bearer {key}"} for name, key in
            (("admin", admin), ("alice", alice), ("bob", bob))}  # fmt: skip
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        body = {"model": "default", "prompt": "x", "max_tokens": 16000, "seed": 1}
        long_job = http.post("/v2/tasks", json=body, headers=auth["alice"]).json()["task_id"]
        queued = http.post("/v2/tasks", json=body, headers=auth["bob"]).json()["task_id"]

        def listed(who: str, query: str = "") -> list[dict[str, object]]:
            answer = http.get(f"/v2/tasks{query}", headers=auth[who])
            assert answer.status_code == 200, answer.text
            return list(answer.json()["tasks"])

        running = wait_for(
            lambda: [t for t in listed("admin", "?state=running") if t["task_id"] == long_job],
            "the first job to run",
        )
        assert running[0]["owner"] == "alice" and running[0]["pool_id"] == "p1"
        assert {t["task_id"]: t["state"] for t in listed("admin")} == {
            long_job: "running",
            queued: "queued",
        }
        assert [t["task_id"] for t in listed("alice")] == [long_job]
        assert [t["task_id"] for t in listed("bob")] == [queued]
        assert [t["task_id"] for t in listed("admin", "?state=queued")] == [queued]
        assert len(listed("admin", "?limit=1")) == 1
        assert "prompt" not in listed("admin")[0]
        for query, field in (("?limit=0", "limit"), ("?state=sleeping", "state"),
                             ("?limit=x", "limit"), ("?colour=red", "colour")):  # fmt: skip
            bad = http.get(f"/v2/tasks{query}", headers=auth["admin"])
            assert bad.status_code == 400, (query, bad.text)
            assert bad.json()["code"] == "INVALID_PARAMS" and field in bad.json()["message"]
        assert http.get("/v2/tasks").status_code == 401

        for task_id, who in ((long_job, "alice"), (queued, "bob")):
            http.post(f"/v2/tasks/{task_id}/cancel", headers=auth[who])
        ended = wait_for(
            lambda: (found := listed("admin", "?state=cancelled")) and len(found) == 2 and found,
            "both jobs to be listed as cancelled",
        )
        assert {t["error_code"] for t in ended} == {"CANCELLED"}


def test_a_pools_engine_log_is_read_on_its_host_and_followed_from_next_offset(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    admin, client = secret_scan.new_api_key("admin"), secret_scan.new_api_key("client")
    keys = [
        {"name": "operator", "key_sha256": _digest(admin), "role": "admin"},
        {"name": "app", "key_sha256": _digest(client), "role": "client"},
    ]
    admin_auth = {"Authorization": f"Bearer {admin}"}
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, headers=admin_auth, api_keys=keys
    )
    with httpx.Client(base_url=cluster.url, timeout=30, headers=admin_auth) as http:
        first = http.get("/v2/pools/p1/logs").json()
        assert first["pool_id"] == "p1" and first["host_id"] == "host-a"
        assert first["file"] == "p1-r0.log" and first["text"].strip()
        assert first["next_offset"] == first["size"] > 0
        on_disk = (cluster.root / "host-a" / "logs" / "p1-r0.log").read_bytes()
        assert on_disk.decode(errors="replace").endswith(first["text"])
        nothing_new = http.get("/v2/pools/p1/logs", params={"offset": first["next_offset"]})
        assert nothing_new.json()["text"] == ""
        whole = http.get("/v2/pools/p1/logs", params={"offset": 0, "max_bytes": 64}).json()
        assert len(whole["text"].encode()) <= 64 and whole["next_offset"] <= 64
        for params in ({"max_bytes": 0}, {"offset": "x"}, {"replica": -1}):
            bad = http.get("/v2/pools/p1/logs", params=params)
            assert bad.status_code == 400 and bad.json()["code"] == "INVALID_PARAMS", params
        missing = http.get("/v2/pools/p1/logs", params={"replica": 3})
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        assert http.get("/v2/pools/nope/logs").json()["code"] == "NOT_FOUND"
    refused = httpx.get(
        f"{cluster.url}/v2/pools/p1/logs", headers={"Authorization": f"Bearer {client}"}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
