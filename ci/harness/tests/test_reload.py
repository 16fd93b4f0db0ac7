"""Reload (POOL-05, API-11) through real processes: `POST /v2/pools/{id}/reload`.

One orchestrator and one pool manager for the module, with two pools of the in-process
llama.cpp engine on the tiny model: `rl` on the CPU (room for the new model beside the
old: side-by-side) and `sw` on a simulated 1 MiB device (no room: drain-then-swap).
The second model is the same shape with another seed and name, so its digest differs;
the "bad" models are a file that is not GGUF (refused by the model check) and a GGUF of
an architecture no engine knows (it passes the check; the engine fails to load it).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from ci_harness.bad_models import write_not_a_model, write_unloadable_model
from ci_harness.cluster import Cluster, Event, tiny_pool, wait_for
from ci_harness.streams import BackgroundStream

pytestmark = pytest.mark.integration
LONG = 4000  # tokens: a stream that outlives a reload of the tiny model


@dataclass(frozen=True)
class Models:
    first: Path
    second: Path
    not_gguf: Path
    unloadable: Path

    def digest(self, path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("reload-models")
    first = write_tiny_model(root / "tiny.gguf", TinyModelSpec(context_length=32768))
    second = write_tiny_model(
        root / "tiny-b.gguf", TinyModelSpec(context_length=32768, seed=4321, name="tiny-b")
    )
    not_gguf = write_not_a_model(root / "notes.gguf")
    unloadable = write_unloadable_model(root / "nosuch.gguf")
    return Models(first, second, not_gguf, unloadable)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, models: Models) -> Iterator[Cluster]:
    pools = {
        "host-a": [
            tiny_pool("rl", models.first, aliases=["side"]),
            tiny_pool("sw", models.first, aliases=["swap"], device="sim0"),
        ]
    }
    small = {"id": "sim0", "kind": "gpu", "name": "1 MiB GPU", "memory_total_bytes": 1 << 20}
    hosts = {"host-a": {"devices": [small], "reload_timeout_s": 60}}
    cluster = Cluster(tmp_path_factory.mktemp("reload"), pools, {}, hosts).start()
    try:
        yield cluster
    finally:
        codes = cluster.stop()
        orphans = [p for pool in ("rl", "sw") for p in cluster.worker_pids("host-a", pool)]
        if orphans or any(codes.values()):
            print(cluster.logs())
        assert not orphans, f"workers survived their pool manager: {orphans}"
        assert all(code == 0 for code in codes.values()), codes


def reload(cluster: Cluster, pool_id: str, model: str) -> tuple[int, dict[str, Any]]:
    with cluster.client() as client:
        response = client.post(f"/v2/pools/{pool_id}/reload", json={"model": model}, timeout=180)
    return response.status_code, response.json()


def run_job(cluster: Cluster, alias: str, max_tokens: int = 4) -> list[Event]:
    task = cluster.submit({"model": alias, "prompt": "hello", "max_tokens": max_tokens})
    assert task.status_code == 202, task.text
    return cluster.events(task.json()["task_id"])


def started(events: list[Event]) -> dict[str, Any]:
    return next(e.data for e in events if e.name == "started")


def manager_lines(cluster: Cluster, action: str, pool_id: str) -> list[str]:
    found = []
    for line in (cluster.root / "pool-managerd-host-a.log").read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("action") == action and record.get("pool_id") == pool_id:
                found.append(str(record["human"]))
    return found


def workers(cluster: Cluster, pool_id: str) -> set[int]:
    return set(cluster.worker_pids("host-a", pool_id))


def test_a_reload_swaps_the_model_while_a_running_stream_completes_on_the_old_one(
    cluster: Cluster, models: Models
) -> None:
    (old_worker,) = workers(cluster, "rl")
    task = cluster.submit({"model": "side", "prompt": "a", "max_tokens": LONG}).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        # Freeze the old engine mid-stream, so the stream provably outlives the reload
        # (a slow engine, not a dead one: it resumes below and finishes its stream).
        os.kill(old_worker, signal.SIGSTOP)
        try:
            status, body = reload(cluster, "rl", str(models.second))
            assert not stream.done, "the stream ended before the new model was ready"
        finally:
            os.kill(old_worker, signal.SIGCONT)
        assert status == 200, body
        events = stream.result()
    assert events[-1].name == "end", events[-1]
    assert events[-1].data["tokens_out"] == LONG  # finished on the old model, whole
    assert started(events)["model_digest"] == models.digest(models.first)
    assert body["previous_model_id"] == "tiny" and body["model_id"] == "tiny-b"
    assert body["model_digest"] == models.digest(models.second)
    assert "side-by-side" in body["message"]

    after = run_job(cluster, "side")
    assert after[-1].name == "end"
    assert started(after)["model_digest"] == models.digest(models.second)
    pool = cluster.pool("rl")
    assert (pool["model_id"], pool["ready"], pool["last_error"]) == ("tiny-b", True, "")
    wait_for(lambda: old_worker not in workers(cluster, "rl"), "the old engine to stop")
    assert any("side-by-side" in line for line in manager_lines(cluster, "reload", "rl"))


def test_a_reload_to_a_file_that_is_not_a_model_is_rolled_back_with_the_reason(
    cluster: Cluster, models: Models
) -> None:
    before = cluster.pool("rl")
    status, body = reload(cluster, "rl", str(models.not_gguf))
    assert status == 422 and body["code"] == "RELOAD_FAILED", body
    assert "not a readable GGUF" in body["message"] and body["pool_id"] == "rl"
    pool = cluster.pool("rl")
    assert pool["ready"] and pool["model_digest"] == before["model_digest"]
    assert "not a readable GGUF" in pool["last_error"]
    assert f"serving {before['model_id']}" in pool["last_error"]
    events = run_job(cluster, "side")
    assert events[-1].name == "end"
    assert started(events)["model_digest"] == before["model_digest"]


def test_a_drain_then_swap_reload_finishes_running_work_then_serves_the_new_model(
    cluster: Cluster, models: Models
) -> None:
    task = cluster.submit({"model": "swap", "prompt": "b", "max_tokens": 300}).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        status, body = reload(cluster, "sw", str(models.second))
        events = stream.result()
    assert status == 200 and "drain-then-swap" in body["message"], body
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 300
    after = run_job(cluster, "swap")
    assert started(after)["model_digest"] == models.digest(models.second)


def test_a_model_the_engine_cannot_load_is_rolled_back_to_the_previous_model(
    cluster: Cluster, models: Models
) -> None:
    before = cluster.pool("sw")
    status, body = reload(cluster, "sw", str(models.unloadable))
    assert status == 422 and body["code"] == "RELOAD_FAILED", body
    assert "the previous model is back" in body["message"]
    assert "engine exited" in body["message"]
    assert "model load failed" in body["message"]  # the engine's own last log lines
    pool = cluster.pool("sw")
    assert pool["ready"] and pool["model_id"] == before["model_id"]
    events = run_job(cluster, "swap")
    assert started(events)["model_digest"] == before["model_digest"]


@pytest.mark.parametrize(
    ("pool_id", "model", "status", "code"),
    [
        ("nope", "tiny", 404, "NOT_FOUND"),
        ("rl", "no-such-model", 404, "MODEL_NOT_FOUND"),
        ("rl", "/etc/hostname", 403, "FORBIDDEN"),
    ],
)
def test_a_reload_that_cannot_start_is_refused_with_a_typed_error(
    cluster: Cluster, pool_id: str, model: str, status: int, code: str
) -> None:
    got_status, body = reload(cluster, pool_id, model)
    assert (got_status, body["code"]) == (status, code), body
    assert cluster.pool("rl")["ready"]


def test_llorch_pools_reload_prints_the_pool_serving_the_new_model(
    cluster: Cluster, models: Models
) -> None:
    command = [sys.executable, "-m", "llorch", "pools", "reload", "rl", str(models.first)]
    done = subprocess.run(
        [*command, "--url", cluster.url, "--json"], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    (pool,) = json.loads(done.stdout)
    assert (pool["pool_id"], pool["model_id"]) == ("rl", "tiny")
    assert "reloaded" in done.stderr
    refused = subprocess.run(
        [*command[:-1], str(models.not_gguf), "--url", cluster.url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert refused.returncode == 1 and "RELOAD_FAILED" in refused.stderr


def test_no_engine_process_of_a_replaced_generation_is_left_running(cluster: Cluster) -> None:
    def one_worker_per_pool() -> set[int]:
        running = {p for pool in ("rl", "sw") for p in workers(cluster, pool)}
        return running if len(running) == 2 else set()

    running = wait_for(one_worker_per_pool, "retired generations to stop")
    assert all(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in running)
