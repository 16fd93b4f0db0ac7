"""Conformance targets: one adapter kind against one engine, arranged per scenario.

- `fake_http_target(kind)`: an HTTP adapter (`llamacpp`, `openai`, `vllm`, `tgi`)
  against its fake engine server replaying transcripts (`*_transcripts`).
- `MockTarget`: the `mock` adapter over the in-process fake engine, driven by its
  fault knobs (`[[mock ...]]` directives in the prompt).
- `NativeMockTarget`: the `native` adapter against a real `llorch worker --engine mock`
  process; the same directives travel through gRPC to the worker's fake engine.
- `TinyModelTarget`: an adapter against a real engine process serving the tiny llama
  model (`catalog_core.write_tiny_model`): `llorch worker --engine llamacpp`, and the
  hook for real llama-server and llama_cpp.server processes. A real model cannot be
  told to fail, so engine errors are skipped; truncation and stalls come from killing
  or pausing a private engine process after the first token.

Short timeouts make the timeout scenarios quick: streams stall out after
`STALL_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

from worker_adapters._http import HttpSettings
from worker_adapters.errors import AdapterError
from worker_adapters.inproc import InProcessAdapter
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.mock import MockBackend, MockKnobs
from worker_adapters.mock.backend import UTF8_WORDS, WORDS
from worker_adapters.native import NativeAdapter
from worker_adapters.openai_compat import OpenAIAdapter
from worker_adapters.protocol import Adapter, Endpoint
from worker_adapters.testing import (
    llamacpp_transcripts,
    openai_transcripts,
    tgi_transcripts,
    vllm_transcripts,
)
from worker_adapters.testing.fake_engines import (
    FakeLlamaServer,
    FakeOpenAIServer,
    FakeTgiServer,
    FakeVllmServer,
)
from worker_adapters.testing.fake_server import FakeEngine
from worker_adapters.testing.processes import EngineProcess, free_port
from worker_adapters.testing.scenarios import SAMPLE_TOKENS, UTF8_TOKENS, Arranged, Scenario
from worker_adapters.testing.transcripts import Transcript
from worker_adapters.tgi import TgiAdapter
from worker_adapters.types import ChatTurn, GenerateRequest, Sampling
from worker_adapters.vllm import VllmAdapter

__all__ = [
    "STALL_TIMEOUT_S",
    "FakeHttpTarget",
    "MockTarget",
    "NativeMockTarget",
    "TinyModelTarget",
    "fake_http_target",
    "fast_settings",
]

STALL_TIMEOUT_S = 1.0
TARGET_KEY = "conformance-secret-key"
_POLL_S = 0.01


def fast_settings() -> HttpSettings:
    """Test timings: quick stall timeouts and retries."""
    return HttpSettings(
        connect_timeout_s=2.0,
        stall_timeout_s=STALL_TIMEOUT_S,
        retry_initial_s=0.01,
        retry_max_s=0.05,
    )


def _dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


async def _idle(adapter: Adapter) -> None:
    """Until the engine reports no busy slot (its own count)."""
    while (await adapter.health()).slots_busy:  # noqa: ASYNC110 - the engine's gauge: polled
        await asyncio.sleep(_POLL_S)


# -- HTTP adapters against fake engines ----------------------------------------------------

HttpFactory = Callable[[Endpoint, HttpSettings], Adapter]


class FakeHttpTarget:
    def __init__(
        self,
        fake: FakeEngine,
        factory: HttpFactory,
        transcripts: Callable[[Scenario], Transcript | None],
        texts: Mapping[Scenario, str],
    ) -> None:
        self.fake = fake
        self._factory = factory
        self._transcripts = transcripts
        self._texts = texts
        self._adapter = factory(Endpoint(fake.address, fake.api_key), fast_settings())

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    async def arrange(self, scenario: Scenario, job_id: str) -> Arranged | str:
        chat = scenario is Scenario.CHAT
        messages = (ChatTurn("user", "hi"),) if chat else None
        request = GenerateRequest(job_id, Sampling(max_tokens=64), None if chat else "hi", messages)
        if scenario is Scenario.ENGINE_DOWN:
            dead = self._factory(Endpoint(_dead_address(), TARGET_KEY), fast_settings())
            return Arranged(request, adapter=dead)
        transcript = self._transcripts(scenario)
        if transcript is None:
            return f"no {self.fake.engine} transcript"
        self.fake.script(job_id, transcript)
        return Arranged(request, text=self._texts.get(scenario))

    async def engine_released(self, job_id: str) -> None:
        await self.fake.seen(job_id).disconnected.wait()


_SAMPLE = {
    Scenario.COMPLETES: "".join(SAMPLE_TOKENS),
    Scenario.CHAT: "".join(SAMPLE_TOKENS),
    Scenario.UTF8: "".join(UTF8_TOKENS),
}


def _tgi_texts() -> dict[Scenario, str]:
    chunks = tgi_transcripts.chat_recording(tgi_transcripts.CHAT_USAGE)
    chat = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    return {**_SAMPLE, Scenario.COMPLETES: tgi_transcripts.SIMPLE_TEXT, Scenario.CHAT: chat}


@contextlib.asynccontextmanager
async def fake_http_target(kind: str) -> AsyncIterator[FakeHttpTarget]:
    """A started fake engine of `kind` with its adapter; both stopped on exit."""
    fakes: dict[str, tuple[FakeEngine, HttpFactory, Callable[[Scenario], Transcript | None]]] = {
        "llamacpp": (
            FakeLlamaServer(api_key=TARGET_KEY),
            LlamaServerAdapter,
            llamacpp_transcripts.for_scenario,
        ),
        "openai": (
            FakeOpenAIServer(api_key=TARGET_KEY),
            OpenAIAdapter,
            openai_transcripts.for_scenario,
        ),
        "vllm": (FakeVllmServer(api_key=TARGET_KEY), VllmAdapter, vllm_transcripts.for_scenario),
        "tgi": (FakeTgiServer(api_key=TARGET_KEY), TgiAdapter, tgi_transcripts.for_scenario),
    }
    fake, factory, transcripts = fakes[kind]
    texts = _tgi_texts() if kind == "tgi" else _SAMPLE
    async with fake:
        target = FakeHttpTarget(fake, factory, transcripts, texts)
        try:
            yield target
        finally:
            await target.adapter.close()


# -- the fake engine's knobs: in process, and inside a real worker process ---------------------

_DIRECTIVES = {
    Scenario.COMPLETES: "",
    Scenario.CHAT: "",
    Scenario.UTF8: "[[mock utf8]]",
    Scenario.LONG: "[[mock token_delay_ms=5]]",
    Scenario.ERROR_BEFORE_FIRST: "[[mock fail_before_first]]",
    Scenario.ERROR_MID_STREAM: "[[mock fail_after=2]]",
    Scenario.REJECTED: "[[mock no_such_knob=1]]",
    Scenario.TRUNCATED: "[[mock malformed=no-terminal]]",
    Scenario.STALL: "[[mock hang_after=2]]",
}


def mock_arrangement(scenario: Scenario, job_id: str) -> Arranged | str:
    """A request whose directive makes the mock engine behave as `scenario` says."""
    if scenario not in _DIRECTIVES:
        return "the mock engine runs in process: it cannot be unreachable"
    prompt = f"{_DIRECTIVES[scenario]} hello"
    max_tokens = 4000 if scenario is Scenario.LONG else 4
    sampling = Sampling(max_tokens=max_tokens, seed=0)
    words = UTF8_WORDS if scenario is Scenario.UTF8 else WORDS
    text = "".join(f"{w} " for w in words[:4])
    if scenario is Scenario.CHAT:
        return Arranged(
            GenerateRequest(job_id, sampling, messages=(ChatTurn("user", prompt),)), text
        )
    return Arranged(GenerateRequest(job_id, sampling, prompt), text)


class MockTarget:
    """The `mock` adapter over the in-process fake engine."""

    def __init__(self) -> None:
        self._adapter = InProcessAdapter(MockBackend(MockKnobs()), stall_timeout_s=STALL_TIMEOUT_S)

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    async def arrange(self, scenario: Scenario, job_id: str) -> Arranged | str:
        return mock_arrangement(scenario, job_id)

    async def engine_released(self, job_id: str) -> None:
        await _idle(self._adapter)


class NativeMockTarget:
    """The `native` adapter against a running `llorch worker --engine mock` process."""

    def __init__(self, address: str, api_key: str) -> None:
        endpoint = Endpoint(address, api_key)
        self._adapter = NativeAdapter(endpoint, stall_timeout_s=STALL_TIMEOUT_S)

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    async def arrange(self, scenario: Scenario, job_id: str) -> Arranged | str:
        if scenario is Scenario.ENGINE_DOWN:
            request = GenerateRequest(job_id, Sampling(max_tokens=4), "hi")
            dead = NativeAdapter(Endpoint(_dead_address()), stall_timeout_s=STALL_TIMEOUT_S)
            return Arranged(request, adapter=dead)
        return mock_arrangement(scenario, job_id)

    async def engine_released(self, job_id: str) -> None:
        await _idle(self._adapter)


# -- real engines on the tiny llama model ---------------------------------------------------------

UTF8_GRAMMAR_TEXT = "h\u00e9llo \u20acuro \u65e5\u672c \U0001f642"
EngineStarter = Callable[[Path], EngineProcess]
AdapterFactory = Callable[[Endpoint], Adapter]


class TinyModelTarget:
    """An adapter against a real engine process serving the tiny model.

    `start_private` starts another engine process like the shared one (for scenarios
    that kill or pause it); `released` reports the engine's own view of a finished job;
    `grammar` says whether the adapter can send a grammar to this engine;
    `typed_overflow` says whether the engine refuses a too-long prompt with a typed
    error (llama_cpp.server does not: it answers 200 and ends the stream empty, so its
    refusal is shown with a parameter out of its schema's range instead).
    `start_private` None: no second engine may be started (vLLM: one at a time on the
    project's machines), so the kill and pause scenarios are left to the transcripts;
    `long_tokens` is the length of the long generation (within the engine's context)."""

    def __init__(
        self,
        adapter: Adapter,
        make_adapter: AdapterFactory,
        start_private: EngineStarter | None,
        root: Path,
        *,
        released: Callable[[Adapter, str], Awaitable[None]] | None = None,
        grammar: bool = True,
        typed_overflow: bool = True,
        dead_adapter: AdapterFactory | None = None,
        long_tokens: int = 3000,
    ) -> None:
        self._adapter = adapter
        self._make_adapter = make_adapter
        self._start_private = start_private
        self._root = root
        self._released = released or (lambda adapter, _job: _idle(adapter))
        self._grammar = grammar
        self._typed_overflow = typed_overflow
        self._dead_adapter = dead_adapter or make_adapter
        self._long_tokens = long_tokens
        self._private: list[EngineProcess] = []

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    async def arrange(self, scenario: Scenario, job_id: str) -> Arranged | str:
        await _ready(self._adapter)  # a real engine loads its model after its port opens

        def request(
            prompt: str, max_tokens: int = 16, grammar: str | None = None
        ) -> GenerateRequest:
            return GenerateRequest(job_id, Sampling(max_tokens, seed=1, grammar=grammar), prompt)

        match scenario:
            case Scenario.COMPLETES:
                return Arranged(request("Hello world"))
            case Scenario.CHAT:
                sampling = Sampling(max_tokens=16, seed=1)
                return Arranged(
                    GenerateRequest(job_id, sampling, messages=(ChatTurn("user", "hi"),))
                )
            case Scenario.UTF8 if self._grammar:
                grammar = f'root ::= "{UTF8_GRAMMAR_TEXT}"'
                return Arranged(request("x", 64, grammar), text=UTF8_GRAMMAR_TEXT)
            case Scenario.LONG:
                return Arranged(request("go", self._long_tokens))
            case Scenario.REJECTED if self._typed_overflow:
                return Arranged(request("word " * 5000))
            case Scenario.REJECTED:
                out_of_range = Sampling(max_tokens=16, top_p=1.5)
                return Arranged(GenerateRequest(job_id, out_of_range, "hi"))
            case Scenario.ENGINE_DOWN:
                return Arranged(
                    request("hi"), adapter=self._dead_adapter(Endpoint(_dead_address()))
                )
            case Scenario.TRUNCATED | Scenario.STALL if self._start_private is not None:
                return await self._disrupted(scenario, request("go", self._long_tokens))
            case Scenario.TRUNCATED | Scenario.STALL:
                return f"{scenario.value!r} needs a second engine process, not started here"
        return f"a real model cannot be made to behave as {scenario.value!r} on demand"

    async def _disrupted(self, scenario: Scenario, request: GenerateRequest) -> Arranged:
        assert self._start_private is not None
        process = await asyncio.to_thread(self._start_private, self._root)
        self._private.append(process)
        adapter = self._make_adapter(Endpoint(process.address))
        await _ready(adapter)
        act = process.kill if scenario is Scenario.TRUNCATED else process.pause
        return Arranged(request, adapter=adapter, disrupt=lambda: asyncio.to_thread(act))

    async def engine_released(self, job_id: str) -> None:
        await self._released(self._adapter, job_id)

    async def close(self) -> None:
        for process in self._private:
            await asyncio.to_thread(process.stop)


async def _ready(adapter: Adapter) -> None:
    """Until the engine answers its health probe as ready (it may still be loading)."""
    while True:
        with contextlib.suppress(AdapterError):
            if (await adapter.health()).state == "ready":
                return
        await asyncio.sleep(_POLL_S * 5)
