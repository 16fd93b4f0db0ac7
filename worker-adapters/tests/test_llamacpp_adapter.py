"""The `llamacpp` adapter against the fake llama-server: request fields, native chunks,
the chat route, and the control routes (health while loading, slots, props, tokenize
offsets, detokenize, embeddings, metrics)."""

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
    Started,
    StreamEvent,
    Token,
    create_adapter,
)
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.llamacpp.adapter import parse_metrics
from worker_adapters.testing import llamacpp_transcripts as llama
from worker_adapters.testing.fake_engines import FakeLlamaServer
from worker_adapters.testing.targets import fast_settings

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "pool-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlamaServer]:
    async with FakeLlamaServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def adapter(fake: FakeLlamaServer) -> LlamaServerAdapter:
    return LlamaServerAdapter(Endpoint(fake.address, KEY), fast_settings())


async def run(adapter: LlamaServerAdapter, request: GenerateRequest) -> list[StreamEvent]:
    return [event async for event in adapter.submit(request)]


def test_the_kind_is_registered() -> None:
    assert isinstance(create_adapter("llamacpp", Endpoint("127.0.0.1:1")), LlamaServerAdapter)


async def test_a_completion_maps_sampling_to_llama_cpp_fields(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.default = llama.completion("ok", ["x"])
    schema = {"type": "object"}
    sampling = Sampling(
        max_tokens=12,
        temperature=0.5,
        top_k=7,
        top_p=0.9,
        min_p=0.1,
        repeat_penalty=1.2,
        presence_penalty=0.3,
        frequency_penalty=0.4,
        seed=42,
        stop=("\n",),
        json_schema=json.dumps(schema),
    )
    await run(adapter, GenerateRequest("j", sampling, prompt="Say"))
    seen = fake.seen("j")
    assert seen.path == "/completion" and seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.body == {
        "prompt": "Say",
        "stream": True,
        "cache_prompt": True,
        "n_predict": 12,
        "temperature": 0.5,
        "top_k": 7,
        "top_p": 0.9,
        "min_p": 0.1,
        "repeat_penalty": 1.2,
        "presence_penalty": 0.3,
        "frequency_penalty": 0.4,
        "seed": 42,
        "stop": ["\n"],
        "json_schema": schema,
    }


async def test_a_grammar_is_sent_as_gbnf(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.default = llama.completion("ok", ["yes"])
    await run(adapter, GenerateRequest("j", Sampling(4, grammar='root ::= "yes"'), prompt="?"))
    assert fake.seen("j").body["grammar"] == 'root ::= "yes"'


async def test_native_chunks_give_prompt_tokens_counts_and_the_finish_reason(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.default = llama.completion("eos", ["a", "b", "c"], stop_type="eos")
    events = await run(adapter, GenerateRequest("j", Sampling(8), prompt="p"))
    assert events[0] == Started(llama.PROMPT_TOKENS, 0)
    assert [e.text for e in events if isinstance(e, Token)] == ["a", "b", "c"]
    end = events[-1]
    assert isinstance(end, End) and (end.tokens_in, end.tokens_out) == (llama.PROMPT_TOKENS, 3)
    assert end.finish_reason == "stop"


@pytest.mark.parametrize(
    ("stop_type", "finish"),
    [("eos", "stop"), ("word", "stop"), ("limit", "length"), ("none", "stop")],
)
async def test_stop_types_map_to_finish_reasons(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter, stop_type: str, finish: str
) -> None:
    fake.default = llama.completion("s", ["a"], stop_type=stop_type)
    events = await run(adapter, GenerateRequest("j", Sampling(8), prompt="p"))
    assert isinstance(events[-1], End) and events[-1].finish_reason == finish


async def test_chat_goes_to_the_openai_route_with_llama_cpp_extras(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.default = llama.chat("chat", ["Hi", "!"])
    sampling = Sampling(max_tokens=5, top_k=3, min_p=0.2, grammar="root ::= x")
    events = await run(adapter, GenerateRequest("j", sampling, messages=(ChatTurn("user", "yo"),)))
    body = fake.seen("j").body
    assert fake.seen("j").path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "yo"}] and body["max_tokens"] == 5
    assert (body["top_k"], body["min_p"], body["grammar"]) == (3, 0.2, "root ::= x")
    assert body["model"] == "fake-model" and "n_predict" not in body
    end = events[-1]
    assert isinstance(end, End) and end.tokens_in == llama.PROMPT_TOKENS and end.tokens_out == 2


async def test_an_invalid_json_schema_fails_closed_without_a_request(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    (failure,) = await run(adapter, GenerateRequest("j", Sampling(4, json_schema="{"), prompt="x"))
    assert isinstance(failure, Failed) and failure.code == "INVALID_PARAMS"
    assert not fake.requests


async def test_health_says_loading_on_503_and_counts_busy_slots_when_ready(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.loading = True
    assert (await adapter.health()).state == "loading"
    fake.loading = False
    fake.script("busy", llama.completion("long", ["t"] * 100, pace_s=0.01))
    stream = adapter.submit(GenerateRequest("busy", Sampling(100), prompt="x"))
    await anext(stream)
    health = await adapter.health()
    assert (health.state, health.slots_total, health.slots_busy) == ("ready", 2, 1)
    assert (await adapter.metrics())["requests_processing"] == 1.0
    await stream.aclose()  # type: ignore[attr-defined]


async def test_props_come_from_the_props_route(adapter: LlamaServerAdapter) -> None:
    props = await adapter.props()
    assert (props.engine, props.engine_version, props.ctx, props.slots_total) == (
        "llamacpp",
        "b0000-fake",
        4096,
        2,
    )
    assert props.chat_template and {"grammar", "json_schema"} <= props.features


async def test_tokenize_gives_byte_offsets_from_pieces(adapter: LlamaServerAdapter) -> None:
    text = "a€b"
    tokenized = await adapter.tokenize(text, with_offsets=True)
    assert tokenized.ids == tuple(text.encode())
    assert tokenized.byte_offsets == (0, 1, 2, 3, 4)
    assert (await adapter.tokenize(text)).byte_offsets == ()
    assert await adapter.detokenize(tokenized.ids) == text


async def test_embeddings_are_one_vector_per_input(adapter: LlamaServerAdapter) -> None:
    vectors = await adapter.embed(("ab", "cd"))
    assert len(vectors) == 2 and all(len(v) == 4 for v in vectors)


def test_metrics_text_is_read_by_name_without_prefix() -> None:
    text = '# HELP x\nllamacpp:requests_processing 3\nllamacpp:n_decode_total{a="b"} 7.5\nother 1\n'
    assert parse_metrics(text) == {"requests_processing": 3.0, "n_decode_total": 7.5}
