"""The `vllm` adapter against the fake vLLM server on reconstructed transcripts.

vLLM cannot run on this machine and no recording of its wire exists here: every stream
below is reconstructed from the documented wire facts (engine reference §A3) and named
`reconstructed_vllm_*`. None of them is a recording.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from worker_adapters import (
    ChatTurn,
    End,
    Endpoint,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
    create_adapter,
)
from worker_adapters.testing import vllm_transcripts as vllm
from worker_adapters.testing.fake_engines import FakeVllmServer
from worker_adapters.testing.scenarios import SAMPLE_TOKENS, Scenario
from worker_adapters.testing.targets import fast_settings
from worker_adapters.testing.transcripts import Transcript
from worker_adapters.vllm import VllmAdapter
from worker_adapters.vllm.adapter import constraint_fields

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "vllm-pool-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVllmServer]:
    async with FakeVllmServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def adapter(fake: FakeVllmServer) -> VllmAdapter:
    return VllmAdapter(Endpoint(fake.address, KEY), fast_settings())


async def replay(
    fake: FakeVllmServer,
    adapter: VllmAdapter,
    transcript: Transcript,
    sampling: Sampling | None = None,
) -> list[StreamEvent]:
    fake.script("j", transcript)
    request = GenerateRequest("j", sampling or Sampling(max_tokens=16), prompt="p")
    return [event async for event in adapter.submit(request)]


def scenario(name: Scenario) -> Transcript:
    transcript = vllm.for_scenario(name)
    assert transcript is not None
    return transcript


def test_the_kind_is_registered() -> None:
    assert isinstance(create_adapter("vllm", Endpoint("127.0.0.1:1")), VllmAdapter)


@pytest.mark.parametrize("old", [False, True], ids=["nested-error", "old-flat-object-error"])
async def test_reconstructed_vllm_error_frame_then_done_is_engine_error(
    fake: FakeVllmServer, adapter: VllmAdapter, old: bool
) -> None:
    events = await replay(fake, adapter, vllm.reconstructed_vllm_error_then_done(old=old))
    failure = events[-1]
    assert [type(e) for e in events] == [Started, Token, Token, Failed]
    assert isinstance(failure, Failed) and failure.code == "ENGINE_ERROR"
    assert failure.message == "engine step failed" and not failure.before_first_token


async def test_reconstructed_vllm_abort_finish_is_a_retriable_reset(
    fake: FakeVllmServer, adapter: VllmAdapter
) -> None:
    events = await replay(fake, adapter, vllm.reconstructed_vllm_abort())
    failure = events[-1]
    assert isinstance(failure, Failed) and failure.code == "WORKER_RESET" and failure.retriable


async def test_reconstructed_vllm_flat_error_before_stream_is_context_overflow(
    fake: FakeVllmServer, adapter: VllmAdapter
) -> None:
    (failure,) = await replay(fake, adapter, vllm.reconstructed_vllm_flat_error_before_stream())
    assert isinstance(failure, Failed) and failure.code == "CONTEXT_OVERFLOW"
    assert "maximum context length" in failure.message and not failure.retriable


async def test_reconstructed_vllm_continuous_usage_gives_tokens_in_at_start_and_totals_at_end(
    fake: FakeVllmServer, adapter: VllmAdapter
) -> None:
    events = await replay(fake, adapter, scenario(Scenario.COMPLETES))
    assert events[0] == Started(vllm.PROMPT_TOKENS)
    assert [e.text for e in events if isinstance(e, Token)] == list(SAMPLE_TOKENS)
    end = events[-1]
    assert isinstance(end, End) and (end.tokens_in, end.tokens_out) == (vllm.PROMPT_TOKENS, 4)
    assert end.finish_reason == "length"


async def test_vllm_extras_and_usage_options_are_sent(
    fake: FakeVllmServer, adapter: VllmAdapter
) -> None:
    sampling = Sampling(max_tokens=3, top_k=5, min_p=0.05, repeat_penalty=1.3, presence_penalty=0.2)
    await replay(fake, adapter, scenario(Scenario.COMPLETES), sampling)
    body = fake.seen("j").body
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (5, 0.05, 1.3)
    assert body["presence_penalty"] == 0.2 and body["model"] == "fake-model"
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert fake.seen("j").headers["Authorization"] == f"Bearer {KEY}"
    assert fake.seen("j").headers["X-Request-Id"] == "j"  # vLLM's own request id


@pytest.mark.parametrize(
    ("version", "grammar", "schema", "fields"),
    [
        ("0.12.1", 'root ::= "a"', None, {"structured_outputs": {"grammar": 'root ::= "a"'}}),
        (
            "0.13.0rc1",
            None,
            {"type": "object"},
            {"structured_outputs": {"json": {"type": "object"}}},
        ),
        ("1.0.0", None, {}, {"structured_outputs": {"json": {}}}),
        ("0.11.2", 'root ::= "a"', None, {"guided_grammar": 'root ::= "a"'}),
        ("v0.6.3.post1", None, {"type": "object"}, {"guided_json": {"type": "object"}}),
        ("", None, {}, None),
        ("dev", 'root ::= "a"', None, None),
    ],
)
def test_constraints_use_the_dialect_of_the_server_version(
    version: str, grammar: str | None, schema: Any, fields: dict[str, Any] | None
) -> None:
    assert constraint_fields(version, grammar, schema) == fields


@pytest.mark.parametrize(
    ("version", "field"), [("0.12.1", "structured_outputs"), ("0.10.0", "guided_json")]
)
async def test_a_json_schema_reaches_the_server_in_its_dialect(
    fake: FakeVllmServer, version: str, field: str
) -> None:
    fake.version = version
    adapter = VllmAdapter(Endpoint(fake.address, KEY), fast_settings())
    sampling = Sampling(max_tokens=4, json_schema=json.dumps({"type": "object"}))
    events = await replay(fake, adapter, scenario(Scenario.CHAT), sampling)
    assert isinstance(events[-1], End) and field in fake.seen("j").body


async def test_an_unknown_server_version_refuses_constraints_instead_of_ignoring_them(
    fake: FakeVllmServer,
) -> None:
    fake.version = "unknown"
    adapter = VllmAdapter(Endpoint(fake.address, KEY), fast_settings())
    request = GenerateRequest(
        "j", Sampling(4, grammar='root ::= "a"'), messages=(ChatTurn("user", "x"),)
    )
    (failure,) = [event async for event in adapter.submit(request)]
    assert isinstance(failure, Failed) and failure.code == "INVALID_PARAMS"
    assert not fake.requests_of("j")


async def test_health_is_ready_on_200_and_failed_on_503(
    fake: FakeVllmServer, adapter: VllmAdapter
) -> None:
    assert (await adapter.health()).state == "ready"
    fake.dead = True
    assert (await adapter.health()).state == "failed"


async def test_props_tokenize_and_detokenize(adapter: VllmAdapter) -> None:
    props = await adapter.props()
    assert (props.engine, props.engine_version, props.ctx) == ("vllm", "0.12.1", 8192)
    tokens = await adapter.tokenize("né")
    assert tokens.ids == tuple("né".encode())
    assert await adapter.detokenize(tokens.ids) == "né"
