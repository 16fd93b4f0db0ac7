"""The `openai` adapter against a fake OpenAI-compatible server shaped like
llama_cpp.server: standard fields only, constraints fail closed, `[DONE]` without a
finish reason is no success, CRLF framing, and the `/v1/models` and `/extras` routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from worker_adapters import (
    ChatTurn,
    End,
    Endpoint,
    Failed,
    GenerateRequest,
    Sampling,
    StreamEvent,
    create_adapter,
)
from worker_adapters.errors import EngineUnavailable
from worker_adapters.openai_compat import OpenAIAdapter
from worker_adapters.testing.conformance import text_of
from worker_adapters.testing.fake_engines import FakeOpenAIServer
from worker_adapters.testing.openai_transcripts import PROVENANCE, chunks
from worker_adapters.testing.processes import free_port
from worker_adapters.testing.targets import fast_settings
from worker_adapters.testing.transcripts import DONE, crlf, stream

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "openai-pool-key"
CHAT = (ChatTurn("user", "hi"),)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def adapter(fake: FakeOpenAIServer) -> OpenAIAdapter:
    return OpenAIAdapter(Endpoint(fake.address, KEY), fast_settings())


async def run(adapter: OpenAIAdapter, request: GenerateRequest) -> list[StreamEvent]:
    return [event async for event in adapter.submit(request)]


def test_the_kind_is_registered() -> None:
    assert isinstance(create_adapter("openai", Endpoint("127.0.0.1:1")), OpenAIAdapter)


async def test_a_completion_sends_only_standard_openai_fields(
    fake: FakeOpenAIServer, adapter: OpenAIAdapter
) -> None:
    fake.default = stream("ok", PROVENANCE, [*chunks(["x"], chat=False), DONE])
    sampling = Sampling(max_tokens=9, temperature=0.1, top_p=0.5, seed=3)
    await run(adapter, GenerateRequest("j", sampling, prompt="p"))
    assert fake.seen("j").path == "/v1/completions"
    # llama_cpp.server refuses an X-Request-Id that is not a UUID: the job goes elsewhere.
    assert "X-Request-Id" not in fake.seen("j").headers
    assert fake.seen("j").body == {
        "model": "fake-model",
        "stream": True,
        "max_tokens": 9,
        "temperature": 0.1,
        "top_p": 0.5,
        "seed": 3,
        "prompt": "p",
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("sampling", "messages", "code"),
    [
        (Sampling(4, grammar='root ::= "a"'), None, "UNSUPPORTED_PARAM"),
        (Sampling(4, grammar='root ::= "a"'), CHAT, "UNSUPPORTED_PARAM"),
        (Sampling(4, json_schema="{}"), None, "UNSUPPORTED_PARAM"),
        (Sampling(4, top_k=5), CHAT, "UNSUPPORTED_PARAM"),
        (Sampling(4, json_schema="{not json"), CHAT, "INVALID_PARAMS"),
    ],
    ids=["grammar", "grammar-chat", "schema-on-completion", "top-k", "schema-not-json"],
)
async def test_constraints_it_cannot_honour_fail_closed_before_any_request(
    fake: FakeOpenAIServer,
    adapter: OpenAIAdapter,
    sampling: Sampling,
    messages: tuple[ChatTurn, ...] | None,
    code: str,
) -> None:
    request = GenerateRequest("j", sampling, None if messages else "p", messages)
    (failure,) = await run(adapter, request)
    assert isinstance(failure, Failed) and failure.code == code
    assert not failure.retriable and not fake.requests_of("j")


async def test_a_json_schema_on_chat_is_a_response_format_and_the_output_is_checked(
    fake: FakeOpenAIServer, adapter: OpenAIAdapter
) -> None:
    schema = {"type": "object"}
    request = GenerateRequest("j", Sampling(8, json_schema=json.dumps(schema)), messages=CHAT)
    fake.script("j", stream("json", PROVENANCE, [*chunks(['{"a"', ": 1}"], chat=True), DONE]))
    events = await run(adapter, request)
    assert isinstance(events[-1], End) and json.loads(text_of(events)) == {"a": 1}
    assert fake.seen("j").body["response_format"]["json_schema"]["schema"] == schema
    fake.script("k", stream("ignored", PROVENANCE, [*chunks(["not json"], chat=True), DONE]))
    events = await run(adapter, GenerateRequest("k", request.sampling, messages=CHAT))
    failure = events[-1]
    assert isinstance(failure, Failed) and failure.code == "SCHEMA_VIOLATION"
    assert not failure.retriable and failure.message.startswith("the output is not JSON")


async def test_done_without_a_finish_reason_is_a_cut_stream_not_a_success(
    fake: FakeOpenAIServer, adapter: OpenAIAdapter
) -> None:
    # llama_cpp.server with interrupt_requests ends an interrupted stream this way.
    fake.default = stream(
        "interrupted", PROVENANCE, [*chunks(["a"], chat=False, finish=None), DONE]
    )
    events = await run(adapter, GenerateRequest("j", Sampling(8), prompt="p"))
    assert isinstance(events[-1], Failed) and events[-1].code == "WORKER_RESET"


async def test_crlf_framed_streams_read_the_same(
    fake: FakeOpenAIServer, adapter: OpenAIAdapter
) -> None:
    frames = [*chunks(["Hé", "llo"], chat=True, finish="stop"), DONE]
    fake.default = crlf(stream("crlf", PROVENANCE, frames))
    events = await run(adapter, GenerateRequest("j", Sampling(8), messages=CHAT))
    assert text_of(events) == "Héllo" and isinstance(events[-1], End)
    assert events[-1].finish_reason == "stop" and events[-1].tokens_out == 2


async def test_a_wrong_key_is_a_typed_non_retriable_error(fake: FakeOpenAIServer) -> None:
    stranger = OpenAIAdapter(Endpoint(fake.address, "wrong"), fast_settings(), model="m")
    (failure,) = await run(stranger, GenerateRequest("j", Sampling(4), prompt="p"))
    assert isinstance(failure, Failed) and failure.code == "ENGINE_ERROR"
    assert not failure.retriable and "wrong" not in failure.message


async def test_health_props_and_tokens_use_the_models_and_extras_routes(
    adapter: OpenAIAdapter,
) -> None:
    health = await adapter.health()
    assert (health.state, health.slots_total) == ("ready", 1)
    props = await adapter.props()
    assert (props.engine, props.model_path) == ("openai", "fake-model")
    tokens = await adapter.tokenize("hé")
    assert tokens.ids == tuple("hé".encode()) and tokens.byte_offsets == ()
    assert await adapter.detokenize(tokens.ids) == "hé"
    assert len(await adapter.embed(("a", "b"))) == 2


async def test_an_engine_that_is_not_listening_raises_unavailable_for_control_calls() -> None:
    dead = OpenAIAdapter(Endpoint(f"127.0.0.1:{free_port()}"), fast_settings())
    with pytest.raises(EngineUnavailable):
        await dead.health()
