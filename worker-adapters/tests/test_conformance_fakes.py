"""The conformance suite (ADP-07) for each HTTP adapter against its fake engine.

llama-server and OpenAI-compatible transcripts are reconstructed from the engine
reference (the real servers can run here and get their own run of the suite in
`test_conformance_real_engines`); vLLM's are reconstructed (`reconstructed_vllm_*`: vLLM
cannot run here and no recording exists); TGI's are built from real recorded TGI
responses (`recorded_tgi_*`) wherever a recording covers the scenario.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from worker_adapters.testing.conformance import AdapterConformance
from worker_adapters.testing.scenarios import ConformanceTarget
from worker_adapters.testing.targets import fake_http_target

pytestmark = pytest.mark.usefixtures("http_session")


class TestLlamaServerAdapterOnReconstructedTranscripts(AdapterConformance):
    @pytest.fixture
    async def target(self) -> AsyncIterator[ConformanceTarget]:
        async with fake_http_target("llamacpp") as target:
            yield target


class TestOpenAIAdapterOnReconstructedTranscripts(AdapterConformance):
    @pytest.fixture
    async def target(self) -> AsyncIterator[ConformanceTarget]:
        async with fake_http_target("openai") as target:
            yield target


class TestVllmAdapterOnReconstructedVllmTranscripts(AdapterConformance):
    @pytest.fixture
    async def target(self) -> AsyncIterator[ConformanceTarget]:
        async with fake_http_target("vllm") as target:
            yield target


class TestTgiAdapterOnRecordedTgiTranscripts(AdapterConformance):
    @pytest.fixture
    async def target(self) -> AsyncIterator[ConformanceTarget]:
        async with fake_http_target("tgi") as target:
            yield target
