"""A `tgi` pool in container mode, run for real through pool-managerd and orchestratord
(issue 13 item 2; POOL-02/04/09).

TGI itself cannot run on the project's machines (no registry to pull its image from, no
GPU), so its place is taken by `llorch/fake-tgi:test`, an image built here of the
project's FAKE TGI server (`FakeTgiServer`, replaying the recorded TGI transcripts of
`worker_adapters/testing/recordings/tgi`). Everything else is real: Docker (installed and
started by `ci/containers/ensure-docker`, and a dockerd started here is stopped at the
end), `docker run` as pool-managerd builds it (labels, published port, the model folder
mounted read-only, the key passed by name), readiness through the published port (TGI's
`/health` plus a one-token warm-up), a `/v2/tasks` SSE job, and the lifecycle:

- `docker kill` of the container is a crash: restarted after back-off, exactly one
  container of the pool after;
- SIGKILL of pool-managerd leaves the container and its `docker run` client running; the
  restarted pool manager removes that orphan and starts one fresh: exactly one after;
- a leftover container holding the replica's name (unlabelled) is removed before the
  replica starts;
- a clean stop of the pool manager leaves no container of it.

Only a machine where Docker cannot run at all (not Linux, or neither root nor sudo)
skips, saying why.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from catalog_core import write_tiny_hf_model
from ci_harness.cluster import Cluster, Event, wait_for
from ci_harness.containers import (
    FAKE_TGI_IMAGE,
    build_fake_tgi_image,
    docker_unavailable_reason,
    ensure_docker,
    stop_docker,
)
from pool_managerd.config import ManagerConfig
from pool_managerd.container_launch import MANAGER_LABEL, manager_id
from worker_adapters.testing.tgi_transcripts import SIMPLE_TEXT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900, func_only=True)]

REPO = Path(__file__).resolve().parents[3]
HOST = "host-tgi"
POOL = f"tgi-{secrets.token_hex(3)}"  # unique: other runs may share this dockerd
ALIAS = "m-tgi"
MANAGER = f"pool-managerd-{HOST}"
READY_S = 120.0


@pytest.fixture(scope="module")
def fake_tgi_image() -> Iterator[str]:
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    started = ensure_docker(REPO)
    try:
        yield build_fake_tgi_image(REPO)
    finally:
        if started:
            stop_docker(REPO)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fake_tgi_image: str) -> Iterator[Cluster]:
    model = write_tiny_hf_model(tmp_path_factory.mktemp("tgi-model") / "tiny-hf")
    pool = {
        "id": POOL,
        "engine": "tgi",
        "model": str(model),
        "ctx": 512,
        "slots": 2,
        "aliases": [ALIAS],
        "container": {"image": fake_tgi_image, "runtime": "docker"},
    }
    cluster = Cluster(tmp_path_factory.mktemp("tgi-pool"), {HOST: [pool]})
    try:
        cluster.start_orchestrator()
        cluster.start_manager(HOST)
        cluster.wait_ready([POOL], timeout_s=READY_S)
        yield cluster
    finally:
        codes = cluster.stop()
        left = containers(cluster)
        for container_id in left:  # never leave one behind, even when a test failed
            subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)
        if left or any(codes.values()):
            print(cluster.logs())
        assert not left, f"containers of the pool manager outlived it: {left}"


# -- helpers --------------------------------------------------------------------------


def label(cluster: Cluster) -> str:
    config = ManagerConfig("unused:1", host_id=HOST, state_dir=cluster.root / HOST)
    return f"{MANAGER_LABEL}={manager_id(config)}"


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def containers(cluster: Cluster) -> list[str]:
    """Ids of every container, running or not, labelled with the pool manager's id."""
    return docker(
        "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={label(cluster)}"
    ).split()


def inspect(container_id: str) -> dict[str, object]:
    return dict(json.loads(docker("inspect", container_id))[0])


def run_clients(name: str) -> list[psutil.Process]:
    """The `docker run` client processes of the container `name`, wherever they are."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[:2] == ["docker", "run"] and name in cmdline:
            found.append(process)
    return found


def one_container(cluster: Cluster) -> str:
    (container_id,) = containers(cluster)
    return container_id


def back_with_a_new_container(cluster: Cluster, old: str, restarts: int) -> str:
    """Wait until the pool is ready again, on exactly one container that is not `old`."""

    def back() -> str:
        pool = cluster.pool(POOL)
        found = containers(cluster)
        if pool.get("ready") and pool["restarts"] >= restarts and found and old not in found:
            return found[0] if len(found) == 1 else ""
        return ""

    new: str = wait_for(back, "the tgi pool to be ready on a new container", timeout_s=READY_S)
    assert containers(cluster) == [new]
    return new


def run_job(cluster: Cluster) -> list[Event]:
    task = cluster.submit({"model": ALIAS, "prompt": "Hello", "max_tokens": 32})
    assert task.status_code == 202, task.text
    return cluster.events(task.json()["task_id"])


def manager_log(cluster: Cluster) -> list[dict[str, object]]:
    path = cluster.root / f"{MANAGER}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# -- the tests, in order --------------------------------------------------------------


def test_the_tgi_pool_is_ready_in_one_labelled_container_of_its_image_port_and_model(
    cluster: Cluster,
) -> None:
    pool = cluster.pool(POOL)
    assert pool["ready"] and pool["engine"] == "tgi", pool
    details = inspect(one_container(cluster))
    config = details["Config"]
    assert isinstance(config, dict)
    assert config["Image"] == FAKE_TGI_IMAGE
    assert config["Labels"]["llorch.pool"] == POOL
    (replica,) = pool["replicas"]
    port = str(replica["endpoint"]).rsplit(":", 1)[1]
    ports = details["NetworkSettings"]["Ports"]  # type: ignore[index]
    assert ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": port}]
    mounts = {m["Destination"]: m for m in details["Mounts"]}  # type: ignore[attr-defined]
    assert mounts["/model"]["RW"] is False
    assert config["Cmd"][:2] == ["--model-id", "/model"]
    # The engine's key reached the container by name; no command line carries its value.
    (key,) = [e.split("=", 1)[1] for e in config["Env"] if e.startswith("API_KEY=")]
    assert len(key) >= 16
    (client,) = run_clients(str(details["Name"]).lstrip("/"))
    assert "API_KEY" in client.cmdline() and not any(key in p for p in client.cmdline())
    assert key not in " ".join(config["Cmd"])
    warmups = [
        str(line["human"])
        for line in manager_log(cluster)
        if line.get("pool_id") == POOL and line.get("action") == "warmup"
    ]
    assert any("finishes its warm-up" in w for w in warmups), warmups


def test_a_v2_task_streams_the_recorded_tgi_tokens_through_the_container(
    cluster: Cluster,
) -> None:
    events = run_job(cluster)
    names = [e.name for e in events]
    assert names[0] == "started" and names[-1] == "end" and "token" in names, names
    assert "".join(e.data["t"] for e in events if e.name == "token") == SIMPLE_TEXT


def test_docker_kill_of_the_container_is_a_crash_restarted_with_exactly_one_container(
    cluster: Cluster,
) -> None:
    old = one_container(cluster)
    restarts = cluster.pool(POOL)["restarts"]
    docker("kill", old)
    back_with_a_new_container(cluster, old, restarts + 1)
    backoffs = [
        str(line["human"])
        for line in manager_log(cluster)
        if line.get("pool_id") == POOL and line.get("action") == "backoff"
    ]
    assert backoffs and "restart in" in backoffs[-1], backoffs
    assert run_job(cluster)[-1].name == "end"


def test_after_sigkill_of_the_pool_manager_its_restart_leaves_exactly_one_container(
    cluster: Cluster,
) -> None:
    old = one_container(cluster)
    name = str(inspect(old)["Name"]).lstrip("/")
    cluster.kill(MANAGER)
    # The crash left the container and its `docker run` client running.
    assert containers(cluster) == [old]
    assert inspect(old)["State"]["Running"] is True  # type: ignore[index]
    assert len(run_clients(name)) == 1
    cluster.restart_manager(HOST)
    new = back_with_a_new_container(cluster, old, 0)
    assert new != old  # the orphan was removed, not adopted: never a second set
    assert len(run_clients(name)) == 1  # the old client was stopped too
    assert run_job(cluster)[-1].name == "end"


def test_a_leftover_container_of_the_replicas_name_is_removed_before_its_start(
    cluster: Cluster,
) -> None:
    """An unlabelled container holding the replica's name (which recovery by label does
    not see) is removed by the replica's own start, which would otherwise fail."""
    old = one_container(cluster)
    details = inspect(old)
    name = str(details["Name"]).lstrip("/")
    model = next(m["Source"] for m in details["Mounts"] if m["Destination"] == "/model")  # type: ignore[attr-defined]
    cluster.kill(MANAGER)
    docker("rm", "-f", old)
    wait_for(lambda: not run_clients(name), "the old docker run client to exit", timeout_s=30)
    stray = docker(
        "run", "-d", "--name", name, "-v", f"{model}:/model:ro", FAKE_TGI_IMAGE,
        "--model-id", "/model", "--port", "80",
    ).strip()  # fmt: skip
    cluster.restart_manager(HOST)
    new = back_with_a_new_container(cluster, old, 0)
    assert new != stray
    assert inspect(new)["Config"]["Labels"]["llorch.pool"] == POOL  # type: ignore[index]
    gone = subprocess.run(["docker", "inspect", stray], capture_output=True, check=False)
    assert gone.returncode != 0, "the stray container still exists"
    assert run_job(cluster)[-1].name == "end"


def test_a_clean_stop_of_the_pool_manager_leaves_no_container(cluster: Cluster) -> None:
    assert len(containers(cluster)) == 1
    assert cluster.stop_process(MANAGER) == 0
    assert containers(cluster) == []
