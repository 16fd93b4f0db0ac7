"""API key roles over a real orchestrator (SEC-05): a client key runs jobs and reads; what
changes the fleet answers it 403 `FORBIDDEN` and changes nothing; an admin key gets
past the check on every one of those routes; the CLI sends `$LLORCH_API_KEY`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness import secret_scan
from ci_harness.cluster import Cluster, tiny_pool, wait_for
from llorch.__main__ import main

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]

# Each admin route with a request that would change the fleet if it were allowed, and
# the answer an admin key gets (past the role check: the handler's own answer).
ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None, int]] = [
    ("POST", "/v2/pools/p1/drain", {"deadline_ms": 1000}, 202),
    ("POST", "/v2/pools/no-such-pool/reload", {"model": "tiny"}, 404),
    ("POST", "/v2/pools/no-such-pool/undrain", None, 404),
    ("PUT", "/v2/deployments/d1", {"model": 7}, 400),  # invalid: nothing is declared
    ("DELETE", "/v2/deployments/no-such-deployment", None, 204),
    ("POST", "/v2/hosts/host-a/cordon", {"cordoned": False}, 204),
    ("POST", "/v2/catalog/models/no-such-model/verify", None, 404),
    ("POST", "/v2/catalog/models/no-such-model/state", {"state": "retired"}, 404),
]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_a_client_key_runs_jobs_and_reads_and_is_forbidden_what_changes_the_fleet(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    admin_key, client_key = secret_scan.new_api_key("admin key"), secret_scan.new_api_key()
    keys = [
        {"name": "operator", "key_sha256": _digest(admin_key), "role": "admin"},
        {"name": "app", "key_sha256": _digest(client_key), "role": "client"},
    ]
    client_auth = {"Authorization": f"Bearer {client_key}"}
    admin_auth = {"Authorization": f"Bearer {admin_key}"}
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, headers=client_auth, api_keys=keys
    )
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        job = http.post(
            "/v2/tasks",
            json={"model": "default", "prompt": "x", "max_tokens": 4},
            headers=client_auth,
        )
        assert job.status_code == 202, job.text
        assert cluster.events(job.json()["task_id"])[-1].name == "end"
        for path in (f"/v2/tasks/{job.json()['task_id']}", "/v2/pools", "/v2/hosts"):
            assert http.get(path, headers=client_auth).status_code == 200, path
        for path in ("/v2/deployments", "/v2/catalog/models", "/v1/models"):
            assert http.get(path, headers=client_auth).status_code == 200, path

        for method, path, body, _ in ADMIN_CALLS:
            refused = http.request(method, path, json=body, headers=client_auth)
            assert refused.status_code == 403, (path, refused.text)
            error = refused.json()
            assert error["code"] == "FORBIDDEN" and "role admin" in error["message"], error
            assert client_key not in refused.text and _digest(client_key) not in refused.text
            unauthenticated = http.request(method, path, json=body)
            assert unauthenticated.status_code == 401, path
        pool = cluster.pool("p1")
        assert pool["ready"] and not pool["draining"], pool  # the refused drain did nothing
        hosts = http.get("/v2/hosts", headers=client_auth).json()["hosts"]
        assert not any(h["cordoned"] for h in hosts)

        cordon = http.post("/v2/hosts/host-a/cordon", json={"cordoned": True}, headers=admin_auth)
        assert cordon.status_code == 204, cordon.text
        hosts = http.get("/v2/hosts", headers=client_auth).json()["hosts"]
        assert [h["cordoned"] for h in hosts] == [True]
        for method, path, body, status in ADMIN_CALLS:
            allowed = http.request(method, path, json=body, headers=admin_auth)
            assert allowed.status_code == status, (path, allowed.text)
        assert cluster.pool("p1")["draining"]  # the admin's drain took


def test_the_cli_sends_llorch_api_key_and_a_client_key_cannot_cordon(
    cluster_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin_key, client_key = secret_scan.new_api_key("admin key"), secret_scan.new_api_key()
    keys = [
        {"name": "operator", "key_sha256": _digest(admin_key), "role": "admin"},
        {"name": "app", "key_sha256": _digest(client_key)},  # no role: a client key
    ]
    cluster = cluster_factory(
        {"host-a": []}, headers={"Authorization": f"Bearer {client_key}"}, api_keys=keys
    )  # a host without pools: no engine to wait for

    def joined() -> bool:
        with cluster.client() as http:
            return bool(http.get("/v2/hosts").json()["hosts"])

    wait_for(joined, "host-a to join")

    def llorch(*argv: str, key: str | None) -> tuple[int, str, str]:
        """The CLI's own entry point, in this process, against the real orchestrator."""
        if key is None:
            monkeypatch.delenv("LLORCH_API_KEY", raising=False)
        else:
            monkeypatch.setenv("LLORCH_API_KEY", key)
        code = main([*argv, "--url", cluster.url])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = llorch("hosts", "ls", key=None)
    assert code == 1 and "UNAUTHORIZED" in err, err
    code, out, err = llorch("hosts", "cordon", "host-a", key=client_key)
    assert code == 1 and "FORBIDDEN" in err and "role admin" in err, err
    assert client_key not in out + err
    code, out, err = llorch("hosts", "cordon", "host-a", key=admin_key)
    assert code == 0, err
    code, out, err = llorch("hosts", "ls", "--json", key=client_key)
    assert code == 0, err
    assert [h["cordoned"] for h in json.loads(out)] == [True]
