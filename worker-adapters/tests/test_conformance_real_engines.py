"""The conformance suite (ADP-07) against real llama.cpp servers, when they are here.

- llama-server: set `LLORCH_TEST_LLAMA_SERVER` to the binary (built from source by the
  engine provisioner). Cancel is checked against its own `llamacpp:requests_processing`
  gauge (`--metrics`).
- llama_cpp.server: set `LLORCH_TEST_LLAMA_CPP_PYTHON` to a Python that has
  `llama-cpp-python[server]` installed. It has no gauge: a cancel is seen as released
  when a new request is served at once (the server runs one request at a time, with
  `--interrupt_requests False` so it never cuts a stream short itself).

Both serve the tiny llama model (`catalog_core.write_tiny_model`) on loopback with a
per-pool API key. Without the variables these tests skip and say why.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from worker_adapters import Adapter, Endpoint, GenerateRequest, Sampling
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.openai_compat import OpenAIAdapter
from worker_adapters.testing.conformance import AdapterConformance
from worker_adapters.testing.processes import EngineProcess, free_port
from worker_adapters.testing.scenarios import ConformanceTarget
from worker_adapters.testing.targets import TinyModelTarget, fast_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("http_session")]

LLAMA_SERVER = os.environ.get("LLORCH_TEST_LLAMA_SERVER", "")
LLAMA_CPP_PYTHON = os.environ.get("LLORCH_TEST_LLAMA_CPP_PYTHON", "")
KEY = "real-engine-key"


def start_llama_server(model: Path, root: Path, *, api_key: str = "") -> EngineProcess:
    port = free_port()
    argv = [LLAMA_SERVER, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-c", "8192", "-np", "2", "-t", "1", "--metrics"]
    argv += ["--api-key", api_key] if api_key else []
    return EngineProcess.start_http(argv, port, root)


def start_llama_cpp_server(model: Path, root: Path, *, api_key: str = "") -> EngineProcess:
    port = free_port()
    argv = [LLAMA_CPP_PYTHON, "-m", "llama_cpp.server", "--model", str(model)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    argv += ["--n_threads", "1", "--interrupt_requests", "False"]
    argv += ["--api_key", api_key] if api_key else []
    return EngineProcess.start_http(argv, port, root)


async def gauge_released(adapter: Adapter, job_id: str) -> None:
    assert isinstance(adapter, LlamaServerAdapter)
    while (await adapter.metrics()).get("requests_processing", 0.0) > 0:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def next_request_served(adapter: Adapter, job_id: str) -> None:
    probe = GenerateRequest(f"{job_id}-probe", Sampling(max_tokens=1), prompt="x")
    _ = [event async for event in adapter.submit(probe)]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("real-engines") / "tiny.gguf")


@pytest.mark.skipif(not LLAMA_SERVER, reason="LLORCH_TEST_LLAMA_SERVER is not set")
class TestLlamaServerAdapterOnRealLlamaServer(AdapterConformance):
    @pytest.fixture
    async def target(self, model: Path, tmp_path: Path) -> AsyncIterator[ConformanceTarget]:
        shared = await asyncio.to_thread(
            start_llama_server, model, tmp_path / "shared", api_key=KEY
        )
        adapter = LlamaServerAdapter(Endpoint(shared.address, KEY), fast_settings())
        target = TinyModelTarget(
            adapter,
            lambda endpoint: LlamaServerAdapter(endpoint, fast_settings()),
            functools.partial(start_llama_server, model),
            tmp_path,
            released=gauge_released,
        )
        yield target
        await target.close()
        await asyncio.to_thread(shared.stop)


@pytest.mark.skipif(not LLAMA_CPP_PYTHON, reason="LLORCH_TEST_LLAMA_CPP_PYTHON is not set")
class TestOpenAIAdapterOnRealLlamaCppPythonServer(AdapterConformance):
    @pytest.fixture
    async def target(self, model: Path, tmp_path: Path) -> AsyncIterator[ConformanceTarget]:
        root = tmp_path / "shared"
        shared = await asyncio.to_thread(start_llama_cpp_server, model, root, api_key=KEY)
        adapter = OpenAIAdapter(Endpoint(shared.address, KEY), fast_settings())
        target = TinyModelTarget(
            adapter,
            lambda endpoint: OpenAIAdapter(endpoint, fast_settings()),
            functools.partial(start_llama_cpp_server, model),
            tmp_path,
            released=next_request_served,
            grammar=False,
            typed_overflow=False,
        )
        yield target
        await target.close()
        await asyncio.to_thread(shared.stop)
