"""The conformance suite (ADP-07) for the `triton` adapter against real Triton (PyTriton
0.7.0's bundled `tritonserver`) serving the tiny llama model through our engine program.

Arranged on the real engine: completions and chat; a long stream to cancel (released
= the engine's own `generations_active` gauge back at 0); a refusal (a negative
temperature, refused by the model as an error frame under HTTP 200); truncation and a
stall from SIGKILL and SIGSTOP of a private engine's process group after the first
token; an unreachable address. A real model cannot be made to fail on demand, and
without grammars it cannot be made to emit known multi-byte text, so those scenarios
are skipped by the suite with that reason (the wire tests cover error frames on
recorded Triton frames).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from provisioners.engines import PreparedEngine, prepare_triton_engine, triton_engine_argv
from worker_adapters.protocol import Adapter, Endpoint
from worker_adapters.testing.conformance import STREAM_BOUND_S, AdapterConformance
from worker_adapters.testing.processes import free_port
from worker_adapters.testing.scenarios import Arranged, ConformanceTarget, Scenario
from worker_adapters.testing.targets import fast_settings
from worker_adapters.triton import TritonAdapter
from worker_adapters.triton.testing import TritonProcess, health_until_ready
from worker_adapters.types import ChatTurn, GenerateRequest, Sampling

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("http_session"),
    # The first run of a machine builds the venv in the (unbounded) fixtures; the tests
    # themselves must not hang: a stream that outlives this has found a bug.
    pytest.mark.timeout(STREAM_BOUND_S * 2, func_only=True),
]


def start_engine(prepared: PreparedEngine, model: Path, root: Path) -> TritonProcess:
    http_port = free_port()
    argv = triton_engine_argv(
        prepared,
        model=model,
        http_port=http_port,
        grpc_port=free_port(),
        metrics_port=free_port(),
        ctx=4096,
        threads=1,
    )
    return TritonProcess(argv, http_port, root / f"triton-{http_port}.log")


def triton(address: str) -> TritonAdapter:
    return TritonAdapter(Endpoint(address), fast_settings())


class TritonTarget:
    def __init__(self, shared: TritonProcess, prepared: PreparedEngine, model: Path, root: Path):
        self._adapter = triton(shared.address)
        self._prepared = prepared
        self._model = model
        self._root = root
        self._private: list[TritonProcess] = []

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    async def arrange(self, scenario: Scenario, job_id: str) -> Arranged | str:
        def request(max_tokens: int = 16, temperature: float | None = None) -> GenerateRequest:
            sampling = Sampling(max_tokens, temperature=temperature, seed=1)
            return GenerateRequest(job_id, sampling, "Hello")

        match scenario:
            case Scenario.COMPLETES:
                return Arranged(request())
            case Scenario.CHAT:
                turns = (ChatTurn("user", "hi"),)
                return Arranged(GenerateRequest(job_id, Sampling(16, seed=1), messages=turns))
            case Scenario.LONG:
                return Arranged(request(3000))
            case Scenario.REJECTED:
                return Arranged(request(temperature=-1.0))
            case Scenario.ENGINE_DOWN:
                return Arranged(request(), adapter=triton(f"127.0.0.1:{free_port()}"))
            case Scenario.TRUNCATED | Scenario.STALL:
                return await self._disrupted(scenario, request(3000))
        return f"a real model cannot be made to behave as {scenario.value!r} on demand"

    async def _disrupted(self, scenario: Scenario, request: GenerateRequest) -> Arranged:
        process = await asyncio.to_thread(start_engine, self._prepared, self._model, self._root)
        self._private.append(process)
        adapter = triton(process.address)
        await health_until_ready(adapter)
        act = process.kill if scenario is Scenario.TRUNCATED else process.pause
        return Arranged(request, adapter=adapter, disrupt=lambda: asyncio.to_thread(act))

    async def engine_released(self, job_id: str) -> None:
        while (await self._adapter.stats())["generations_active"]:  # noqa: ASYNC110 - a gauge
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self._adapter.close()
        for process in self._private:
            # Disrupted on purpose (killed or paused mid-answer): nothing to shut down
            # gracefully, and a paused Triton takes many seconds to stop politely.
            await asyncio.to_thread(process.kill)


@pytest.fixture(scope="module")
def prepared() -> PreparedEngine:
    return prepare_triton_engine()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("triton-conformance") / "tiny.gguf")


@pytest.fixture(scope="module")
def shared_engine(
    prepared: PreparedEngine, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonProcess]:
    process = start_engine(prepared, model, tmp_path_factory.mktemp("shared"))
    try:
        process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0, process.output()[-3000:]


class TestTritonAdapterOnRealTriton(AdapterConformance):
    @pytest.fixture
    async def target(
        self, shared_engine: TritonProcess, prepared: PreparedEngine, model: Path, tmp_path: Path
    ) -> AsyncIterator[ConformanceTarget]:
        target = TritonTarget(shared_engine, prepared, model, tmp_path)
        yield target
        await target.close()
