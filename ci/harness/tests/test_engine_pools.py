"""Provisioned engine pools end to end (issue 3 acceptance; POOL-02/04/06, ADP-04).

One orchestrator and one pool manager for the module, running three pools of real,
provisioned engines on the tiny fixture model:

| pool | engine               | provisioned as                               | adapter            |
|------|----------------------|----------------------------------------------|--------------------|
| ls   | `llamacpp`           | llama-server built from source (`--metrics`) | llamacpp           |
| lp   | `llamacpp-server-py` | `python -m llama_cpp.server` in a venv       | llamacpp-server-py |
| tr   | `triton`             | PyTriton + llama.cpp engine script, own venv | triton             |

Each is ready only after its health check and a one-token warm-up, serves a job through
the orchestrator, and comes back (restart with back-off) after its engine process is
SIGKILLed mid-stream. Cancelling a long generation on llama-server brings its own
`llamacpp:requests_processing` back to 0 within 2 s. A second host, started beside,
holds pools whose engine cannot start: their `last_error` carries the engine's last
log lines (POOL-06).

The engine host runs in its own network namespace (FLT-01/04): every engine binds and
advertises that host's address, and the orchestrator and these tests reach them across
the fleet's bridge, as they would on a second machine.

The engines come from the shared engine cache: the first run on a machine builds
llama-server and the two venvs (minutes); later runs find them in about a second.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from ci_harness.bad_models import write_not_a_model, write_unloadable_model
from ci_harness.cluster import Cluster, Event, wait_for
from ci_harness.fleet import Fleet, unavailable
from ci_harness.streams import BackgroundStream
from provisioners.engines import prepare_triton_engine
from provisioners.testing import llama_cpp_server_for_tests, llama_server_for_tests

# The first run of a machine builds the engines in the (unbounded) fixtures; every test
# itself is bounded.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, func_only=True)]
HOST = "host-e"
BAD_HOST = "host-bad"
START_S = 300.0  # three engines start together on two shared cores; Triton is the slowest
ENGINES = {"ls": "llamacpp", "lp": "llamacpp-server-py", "tr": "triton"}


@dataclass(frozen=True)
class Setup:
    cluster: Cluster
    model_dir: Path


@pytest.fixture(scope="module")
def engine_commands() -> dict[str, list[str]]:
    """Each engine's command prefix, as the engine provisioner prepared it."""
    return {
        "llamacpp": list(llama_server_for_tests().command),
        "llamacpp-server-py": list(llama_cpp_server_for_tests().command),
        "triton": list(prepare_triton_engine().command),
    }


def engine_pool(pool_id: str, command: list[str], model: Path, ctx: int) -> dict[str, Any]:
    return {
        "id": pool_id,
        "model": str(model),
        "engine": ENGINES.get(pool_id, "llamacpp"),
        "engine_command": command,
        "ctx": ctx,
        "slots": 1,
        "replicas": 1,
        "threads": 1,
        "aliases": [f"m-{pool_id}"],
    }


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, engine_commands: dict[str, list[str]]
) -> Iterator[Setup]:
    model_dir = tmp_path_factory.mktemp("engine-models")
    model = write_tiny_model(model_dir / "tiny.gguf", TinyModelSpec(context_length=32768))
    pools = [
        engine_pool("ls", engine_commands["llamacpp"], model, ctx=16384),
        engine_pool("lp", engine_commands["llamacpp-server-py"], model, ctx=4096),
        engine_pool("tr", engine_commands["triton"], model, ctx=4096),
    ]
    reason = unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    cluster = Cluster(tmp_path_factory.mktemp("engine-pools"), {})
    fleet = cluster.fleet = Fleet().start()
    try:
        cluster.start()  # the orchestrator alone: the engines get a longer wait below
        cluster.pools[HOST] = pools
        cluster.start_manager(HOST)
        cluster.wait_ready(list(ENGINES), timeout_s=START_S)
        yield Setup(cluster, model_dir)
    finally:
        codes = cluster.stop()
        survivors = [
            p.info["pid"]
            for p in psutil.process_iter(["pid", "cmdline"])
            if str(model_dir) in " ".join(p.info["cmdline"] or ())
        ]
        if survivors or any(codes.values()):
            print(cluster.logs())
        fleet.close()
        assert not survivors, f"engine processes survived their pool manager: {survivors}"
        assert all(code == 0 for code in codes.values()), codes


# -- helpers --------------------------------------------------------------------------


def manager_log(cluster: Cluster, host: str = HOST) -> list[dict[str, Any]]:
    path = cluster.root / f"pool-managerd-{host}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def endpoint(cluster: Cluster, pool_id: str) -> str:
    (replica,) = cluster.pool(pool_id)["replicas"]
    return str(replica["endpoint"])


def engine_process(cluster: Cluster, pool_id: str) -> psutil.Process:
    """The engine process the pool manager started for the pool (its process group
    leader), found by the port of the pool's endpoint on its command line."""
    port = endpoint(cluster, pool_id).rsplit(":", 1)[1]
    manager = psutil.Process(cluster.processes[f"pool-managerd-{HOST}"].pid)
    found = [child for child in manager.children() if port in child.cmdline()]
    assert len(found) == 1, found
    return found[0]


def engine_key(process: psutil.Process, variable: str) -> str:
    return str(process.environ()[variable])


def llama_server_gauge(cluster: Cluster, name: str) -> float:
    """One of llama-server's own `/metrics` values (`llamacpp:<name>`)."""
    key = engine_key(engine_process(cluster, "ls"), "LLAMA_API_KEY")
    response = httpx.get(
        f"http://{endpoint(cluster, 'ls')}/metrics",
        headers={"Authorization": f"Bearer {key}"},
        timeout=5.0,
    )
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith(f"llamacpp:{name} "):
            return float(line.split()[1])
    raise AssertionError(f"llamacpp:{name} is not in llama-server's /metrics")


def triton_stats(cluster: Cluster) -> dict[str, Any]:
    response = httpx.post(
        f"http://{endpoint(cluster, 'tr')}/v2/models/llm_stats/generate", json={}, timeout=5.0
    )
    response.raise_for_status()
    return dict(response.json())


def run_job(cluster: Cluster, pool_id: str, max_tokens: int = 8) -> list[Event]:
    task = cluster.submit({"model": f"m-{pool_id}", "prompt": "Hello", "max_tokens": max_tokens})
    assert task.status_code == 202, task.text
    return cluster.events(task.json()["task_id"])


# -- readiness and serving ------------------------------------------------------------------


@pytest.mark.parametrize("pool_id", list(ENGINES))
def test_a_pool_is_ready_only_after_its_health_check_and_a_one_token_warm_up(
    setup: Setup, pool_id: str
) -> None:
    story = [
        (line["action"], str(line["human"]))
        for line in manager_log(setup.cluster)
        if line.get("pool_id") == pool_id and line.get("action") in ("lifecycle", "warmup")
    ]
    steps = [human for _, human in story]

    def first(fragment: str) -> int:
        return next(i for i, human in enumerate(steps) if fragment in human)

    # starting -> loading is the health probe answering; the warm-up follows it and the
    # replica becomes ready only once the warm-up generation has produced its token.
    assert first("-> loading") < first("warms up") < first("finishes its warm-up: 1 token")
    assert first("finishes its warm-up: 1 token") < first("loading -> ready"), steps
    pool = setup.cluster.pool(pool_id)
    assert pool["ready"] and pool["engine"] == ENGINES[pool_id] and pool["engine_version"]


def test_the_warm_up_generation_is_counted_by_the_engines_own_counters(setup: Setup) -> None:
    # Before any job of this module reached them (the serving tests run after this one).
    assert llama_server_gauge(setup.cluster, "tokens_predicted_total") >= 1
    assert triton_stats(setup.cluster)["generations_total"] >= 1


@pytest.mark.parametrize("pool_id", list(ENGINES))
def test_a_pool_serves_a_job_through_the_orchestrator_with_tokens_and_an_end(
    setup: Setup, pool_id: str
) -> None:
    address = setup.cluster.host_address(HOST)  # the engine host's namespace address
    assert endpoint(setup.cluster, pool_id).startswith(f"{address}:")
    events = run_job(setup.cluster, pool_id, max_tokens=8)
    names = [e.name for e in events]
    assert names[0] == "started" and names[-1] == "end" and "token" in names, names
    started = events[0].data
    assert (started["pool_id"], started["engine"]) == (pool_id, ENGINES[pool_id])
    assert started["engine_version"] and started["model_digest"]
    assert events[-1].data["finish_reason"] == "length"
    if pool_id == "lp":  # llama_cpp.server streams no usage: text pieces are counted
        assert 1 <= events[-1].data["tokens_out"] <= 8
    else:
        assert events[-1].data["tokens_out"] == 8
    assert "".join(e.data["t"] for e in events if e.name == "token")
    assert [e.id for e in events] == sorted({e.id for e in events})


# -- crash and restart ----------------------------------------------------------------------


def backoffs(cluster: Cluster, pool_id: str) -> list[str]:
    return [
        str(line["human"])
        for line in manager_log(cluster)
        if line.get("pool_id") == pool_id and line.get("action") == "backoff"
    ]


def process_group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


@pytest.mark.parametrize("pool_id", list(ENGINES))
def test_killing_the_engine_mid_stream_resets_the_job_and_the_pool_restarts_after_backoff(
    setup: Setup, pool_id: str
) -> None:
    cluster = setup.cluster
    restarts = cluster.pool(pool_id)["restarts"]
    backoffs_before = len(backoffs(cluster, pool_id))
    engine = engine_process(cluster, pool_id)
    group = os.getpgid(engine.pid)
    long = 15000 if pool_id == "ls" else 3500  # outlives the kill; within the pool's ctx
    task = cluster.submit({"model": f"m-{pool_id}", "prompt": "go", "max_tokens": long}).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        engine.send_signal(signal.SIGKILL)
        events = stream.result()
    assert events[-1].name == "error", events[-1]
    assert events[-1].data["code"] == "WORKER_RESET" and events[-1].data["retriable"]

    def back() -> bool:
        pool = cluster.pool(pool_id)
        return bool(pool["ready"] and pool["restarts"] > restarts)

    wait_for(back, f"pool {pool_id} to restart and be ready", timeout_s=START_S)
    new_backoffs = backoffs(cluster, pool_id)[backoffs_before:]
    assert new_backoffs and "restart in" in new_backoffs[0], new_backoffs
    leftovers = [p.pid for p in psutil.process_iter() if process_group(p) == group]
    assert not leftovers, f"the killed engine's process group lives on: {leftovers}"
    assert engine_process(cluster, pool_id).pid != engine.pid
    assert run_job(cluster, pool_id)[-1].name == "end"


# -- cancel reaches the engine (ADP-04) --------------------------------------------------


def test_cancelling_a_long_generation_stops_llama_server_decoding_within_two_seconds(
    setup: Setup,
) -> None:
    cluster = setup.cluster
    task = cluster.submit({"model": "m-ls", "prompt": "x", "max_tokens": 16000}).json()
    with BackgroundStream(cluster, task["task_id"]) as stream:
        stream.wait_tokens(1)
        assert llama_server_gauge(cluster, "requests_processing") == 1
        assert cluster.cancel(task["task_id"]) == 204
        wait_for(
            lambda: llama_server_gauge(cluster, "requests_processing") == 0,
            "llama-server to stop decoding the cancelled generation",
            timeout_s=2.0,
        )
        events = stream.result()
    assert events[-1].name == "error" and events[-1].data["code"] == "CANCELLED"
    assert sum(1 for e in events if e.name == "token") < 16000


# -- engines that cannot start (POOL-06) ---------------------------------------------------


@pytest.fixture(scope="module")
def failing(setup: Setup, engine_commands: dict[str, list[str]]) -> Cluster:
    """A second host whose pools cannot start: a model llama-server cannot load, and a
    file that is not a model at all."""
    cluster = setup.cluster
    unloadable = write_unloadable_model(setup.model_dir / "nosuch.gguf")
    not_gguf = write_not_a_model(setup.model_dir / "notes.gguf")
    cluster.pools[BAD_HOST] = [
        engine_pool("unloadable", engine_commands["llamacpp"], unloadable, ctx=512),
        engine_pool("notgguf", engine_commands["llamacpp"], not_gguf, ctx=512),
    ]
    cluster.hosts[BAD_HOST] = {"restart": {"initial_backoff_s": 0.2, "max_crashes": 2}}
    cluster.start_manager(BAD_HOST)
    return cluster


def test_an_engine_that_fails_to_start_reports_its_last_log_lines_in_last_error(
    failing: Cluster,
) -> None:
    pool = wait_for(
        lambda: (p := failing.pool("unloadable")).get("state") == "failed" and p,
        "the unloadable pool to give up after its crashes",
    )
    assert not pool["ready"] and pool["restarts"] == 2
    assert "crash loop" in pool["last_error"]
    assert "unknown model architecture: 'llorch-nosuch'" in pool["last_error"]
    log = failing.root / BAD_HOST / "logs" / "unloadable-r0.log"
    assert "unknown model architecture: 'llorch-nosuch'" in log.read_text()


def test_a_model_file_that_is_not_gguf_fails_the_pool_before_any_engine_starts(
    failing: Cluster,
) -> None:
    pool = wait_for(
        lambda: (p := failing.pool("notgguf")).get("state") == "failed" and p,
        "the pool with a file that is not a model to fail",
    )
    assert "model check failed" in pool["last_error"]
    assert "not a readable GGUF" in pool["last_error"]
    assert not (failing.root / BAD_HOST / "logs" / "notgguf-r0.log").exists()
