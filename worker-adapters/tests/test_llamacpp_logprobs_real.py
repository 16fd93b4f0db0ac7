"""Logprobs from a real llama-server through the `llamacpp` adapter, checked against the
in-process worker on the same model (both run the llama.cpp vendored in
llama-cpp-python 0.3.36, so the two computations must agree).

llama-server comes from `provisioners.testing.llama_server_for_tests()`: built from
source once per machine (minutes), found in about a second afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from provisioners.testing import BUILD_TIMEOUT_S, llama_server_for_tests
from worker_adapters import (
    ChatTurn,
    Endpoint,
    GenerateRequest,
    Sampling,
    Token,
    TokenLogprob,
)
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.native import NativeAdapter
from worker_adapters.protocol import Adapter
from worker_adapters.testing.processes import EngineProcess, free_port
from worker_adapters.testing.targets import fast_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("http_session")]

KEY = "logprobs-real-key"
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("logprobs-real") / "tiny.gguf")


@pytest.fixture(scope="module")
def server(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    binary = llama_server_for_tests().command
    port = free_port()
    argv = [*binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-c", "4096", "-np", "1", "-t", "1", "--api-key", KEY]
    process = EngineProcess.start_http(argv, port, tmp_path_factory.mktemp("llama-server"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def worker(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    root = tmp_path_factory.mktemp("worker")
    args = ("--model", str(model), "--ctx", "2048", "--slots", "1", "--threads", "1")
    process = EngineProcess.start_worker(root, *args, api_key=KEY)
    yield process
    process.stop()


async def ready(adapter: Adapter) -> Adapter:
    for _ in range(600):
        if (await adapter.health()).state == "ready":
            return adapter
        await asyncio.sleep(0.05)
    raise AssertionError("engine did not become ready")


@pytest.fixture
async def llama(server: EngineProcess) -> AsyncIterator[Adapter]:
    adapter = LlamaServerAdapter(Endpoint(server.address, KEY), fast_settings())
    yield await ready(adapter)
    await adapter.close()


@pytest.fixture
async def native(worker: EngineProcess) -> AsyncIterator[Adapter]:
    adapter = NativeAdapter(Endpoint(worker.address, KEY))
    yield await ready(adapter)
    await adapter.close()


async def entries(adapter: Adapter, request: GenerateRequest) -> list[TokenLogprob]:
    events = [event async for event in adapter.submit(request)]
    tokens = [event for event in events if isinstance(event, Token)]
    assert tokens, events
    return [entry for token in tokens for entry in token.logprobs]


def greedy(job: str, top_n: int, **fields: object) -> GenerateRequest:
    sampling = Sampling(max_tokens=8, temperature=0.0, seed=1, logprobs=top_n)
    return GenerateRequest(job, sampling, prompt=PROMPT, **fields)  # type: ignore[arg-type]


@pytest.mark.timeout(BUILD_TIMEOUT_S)
async def test_llama_server_logprobs_are_sorted_and_greedy_picks_the_top(
    llama: Adapter,
) -> None:
    found = await entries(llama, greedy("native", 3))
    assert len(found) == 8
    for entry in found:
        values = [top.logprob for top in entry.top]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.logprob <= 0.0 and entry.logprob == pytest.approx(values[0], abs=1e-5)
        assert entry.token_bytes == entry.top[0].token_bytes


@pytest.mark.timeout(BUILD_TIMEOUT_S)
async def test_llama_server_and_the_in_process_worker_agree(
    llama: Adapter, native: Adapter
) -> None:
    served = await entries(llama, greedy("agree-server", 2))
    local = await entries(native, greedy("agree-worker", 2))
    assert [e.token_bytes for e in served] == [e.token_bytes for e in local]
    # Two builds of the same llama.cpp (CPU kernels, attention path) differ in the third
    # decimal (measured: <= 0.0023); unrelated distributions differ by far more.
    assert [e.logprob for e in served] == pytest.approx([e.logprob for e in local], abs=1e-2)
    served_top = [t.logprob for e in served for t in e.top]
    assert served_top == pytest.approx([t.logprob for e in local for t in e.top], abs=1e-2)


@pytest.mark.timeout(BUILD_TIMEOUT_S)
async def test_the_chat_route_relays_logprobs_too(llama: Adapter) -> None:
    request = GenerateRequest(
        "chat",
        Sampling(max_tokens=6, temperature=0.0, logprobs=0),
        messages=(ChatTurn("user", "hi"),),
    )
    found = await entries(llama, request)
    assert found and all(entry.top == () and entry.logprob <= 0.0 for entry in found)
