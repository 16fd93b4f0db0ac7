"""The repository's compose.yaml, run for real: images built here, three containers.

`docker-compose up --build` starts the orchestrator and two pool managers (`pool-a`,
`pool-b`, each its own container with its own address on the compose network), each
serving the tiny fixture model with llama.cpp in-process; one job pinned to each pool
streams through that pool manager's container; `down -v` leaves nothing of the project.

What Docker needs is installed and started by the project's own scripts
(`ci/containers/ensure-docker`, `stop-docker`): a dockerd this session started is
stopped at its end, one that was running is left alone. Only a machine where Docker
cannot run at all (not Linux, or neither root nor sudo) skips, saying why.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from catalog_core import write_tiny_model
from ci_harness import secret_scan
from ci_harness.cluster import Event, parse_events
from ci_harness.containers import (
    Compose,
    docker_unavailable_reason,
    ensure_docker,
    stage,
    stop_docker,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[3]
POOLS = ("pool-a", "pool-b")
READY_S = 180.0  # images built, containers up, two workers loaded and warmed up


def _took(what: str, since: float) -> float:
    now = time.monotonic()
    print(f"compose test: {what} took {now - since:.1f} s")
    return now


@pytest.fixture(scope="session")
def docker() -> Iterator[None]:
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    start = time.monotonic()
    started = ensure_docker(REPO)
    _took(f"ensure-docker ({'started dockerd' if started else 'dockerd was running'})", start)
    yield
    if started:
        stop_docker(REPO)


@pytest.fixture
def compose(docker: None, tmp_path: Path) -> Iterator[tuple[Compose, str]]:
    """A fresh project of compose.yaml with its own model folder, API key and join
    token; (compose, client key). Brought down (`down -v`) when the test ends."""
    models, keys = tmp_path / "models", tmp_path / "secrets"
    models.mkdir()
    keys.mkdir()
    write_tiny_model(models / "model.gguf")
    key = secret_scan.new_api_key()
    digest = hashlib.sha256(key.encode()).hexdigest()
    (keys / "api-keys.yaml").write_text(yaml.safe_dump([{"name": "test", "key_sha256": digest}]))
    project = Compose(
        REPO / "compose.yaml",
        f"llorchtest{secrets.token_hex(4)}",
        {
            "LLORCH_JOIN_TOKEN": secret_scan.register(secrets.token_urlsafe(16), "join token"),
            "LLORCH_MODELS": str(models),
            "LLORCH_SECRETS": str(keys),
            "LLORCH_HTTP_PORT": "",  # any free host port
        },
    )
    try:
        yield project, key
    finally:
        project("down", "--volumes", "--remove-orphans", "--timeout", "10")


def _pools(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/v2/pools")
    response.raise_for_status()
    return {pool["pool_id"]: pool for pool in response.json()["pools"]}


def _wait_ready(client: httpx.Client, project: Compose) -> None:
    deadline = time.monotonic() + READY_S
    pools: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        try:
            pools = _pools(client)
        except httpx.TransportError:
            pools = {}
        if all(pools.get(p, {}).get("ready") for p in POOLS):
            return
        time.sleep(0.2)
    states = {p: (pools.get(p, {}).get("state"), pools.get(p, {}).get("last_error")) for p in POOLS}
    pytest.fail(
        f"pools not ready within {READY_S:.0f} s: {states}\n{project('logs', '--tail', '80')}"
    )


def _stream(client: httpx.Client, pool_id: str) -> list[Event]:
    body = {
        "model": "default",
        "prompt": "Once upon a time",
        "max_tokens": 16,
        "seed": 7,
        "placement": {"pin_pool_id": pool_id},
    }
    with client.stream(
        "POST", "/v2/tasks", json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200, response.read()
        return list(parse_events(response.iter_lines()))


def test_compose_up_streams_a_job_through_each_pool_manager_container_and_down_leaves_nothing(
    compose: tuple[Compose, str],
) -> None:
    project, key = compose
    start = time.monotonic()
    stage(REPO)
    mark = _took("staging the build context", start)
    try:
        project("up", "--detach", "--build", "orchestrator", *POOLS, timeout_s=600.0)
        mark = _took("up --build", mark)
        host, _, port = project("port", "orchestrator", "8080").strip().rpartition(":")
        url = f"http://{host}:{port}"
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0
        ) as client:
            _wait_ready(client, project)
            mark = _took("both pools ready", mark)
            assert httpx.get(f"{url}/v2/pools").status_code == 401  # the API needs the key
            pools = _pools(client)
            assert {pools[p]["host_id"] for p in POOLS} == set(POOLS)
            # each pool manager advertises its engine at its own container's address
            engines = {pools[p]["replicas"][0]["endpoint"].rpartition(":")[0] for p in POOLS}
            assert len(engines) == 2 and not engines & {"127.0.0.1", "localhost"}, engines
            for pool_id in POOLS:
                events = _stream(client, pool_id)
                names = [e.name for e in events]
                assert names[0] == "started" and events[0].data["pool_id"] == pool_id, events[:2]
                assert "token" in names and names[-1] == "end", names
            mark = _took("one stream from each pool", mark)
    except BaseException:
        print(project("logs", "--tail", "200"))
        raise
    project("down", "--volumes", "--remove-orphans", "--timeout", "10")
    _took("down", mark)
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
