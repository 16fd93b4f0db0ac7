"""The `tgi` adapter against the fake TGI router replaying recorded TGI responses.

`recorded_tgi_*` streams replay tokens and chunks recorded from real TGI servers
(`worker_adapters/testing/recordings/tgi/`, TGI's own integration-test snapshots),
framed as TGI frames them; where a test adds an error frame or cuts a stream, its name
says so. `reconstructed_tgi_*` streams have no recording behind them.
"""

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
from worker_adapters.errors import RequestRejected
from worker_adapters.testing import tgi_transcripts as tgi
from worker_adapters.testing.conformance import text_of
from worker_adapters.testing.fake_engines import FakeTgiServer
from worker_adapters.testing.targets import fast_settings
from worker_adapters.testing.transcripts import Transcript, stream
from worker_adapters.tgi import TgiAdapter
from worker_adapters.tgi.wire import generate_parameters

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "tgi-pool-key"
CHAT = (ChatTurn("user", "hi"),)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTgiServer]:
    async with FakeTgiServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def adapter(fake: FakeTgiServer) -> TgiAdapter:
    return TgiAdapter(Endpoint(fake.address, KEY), fast_settings())


async def replay(
    fake: FakeTgiServer,
    adapter: TgiAdapter,
    transcript: Transcript,
    request: GenerateRequest | None = None,
) -> list[StreamEvent]:
    request = request or GenerateRequest("j", Sampling(max_tokens=10), prompt="Test request")
    fake.script(request.job_id, transcript)
    return [event async for event in adapter.submit(request)]


def recorded_chat_text(file: str) -> str:
    chunks = tgi.chat_recording(file)
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_the_kind_is_registered() -> None:
    assert isinstance(create_adapter("tgi", Endpoint("127.0.0.1:1")), TgiAdapter)


@pytest.mark.parametrize(
    ("file", "text", "finish", "tokens_out"),
    [
        (tgi.SIMPLE, " for /api/v1/projects/1", "length", 10),
        (tgi.ALL_PARAMS, " failed: Error in test", "stop", 5),  # recorded stop_sequence
    ],
    ids=["simple", "all-params"],
)
async def test_tgi_recorded_generate_stream_replays_the_recorded_tokens(
    fake: FakeTgiServer, adapter: TgiAdapter, file: str, text: str, finish: str, tokens_out: int
) -> None:
    events = await replay(fake, adapter, tgi.recorded_tgi_generate("recorded_tgi_generate", file))
    assert events[0] == Started(0)  # TGI tells the prompt size only at the end, if at all
    assert text_of(events) == text and sum(isinstance(e, Token) for e in events) == tokens_out
    end = events[-1]
    assert isinstance(end, End) and (end.finish_reason, end.tokens_out) == (finish, tokens_out)
    assert fake.seen("j").path == "/generate_stream"
    assert fake.seen("j").body == {
        "inputs": "Test request",
        "parameters": {"max_new_tokens": 10, "details": True},
    }


async def test_tgi_recorded_error_frame_under_200_is_engine_error(
    fake: FakeTgiServer, adapter: TgiAdapter
) -> None:
    error = tgi.tgi_error("Request failed during generation: Server error: OOM", "generation")
    transcript = tgi.recorded_tgi_generate(
        "recorded_tgi_simple_cut_by_error_frame", keep=3, tail=[error]
    )
    events = await replay(fake, adapter, transcript)
    assert [type(e) for e in events] == [Started, Token, Token, Token, Failed]
    failure = events[-1]
    assert isinstance(failure, Failed) and failure.code == "ENGINE_ERROR"
    assert "generation" in failure.message and not failure.before_first_token


@pytest.mark.parametrize(
    ("error", "code", "retriable"),
    [
        (
            tgi.tgi_error(
                "Input validation error: `temperature` must be strictly positive", "validation"
            ),
            "INVALID_PARAMS",
            False,
        ),
        (
            tgi.tgi_error(
                "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
                "Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
                "validation",
            ),
            "CONTEXT_OVERFLOW",
            False,
        ),
        (tgi.tgi_error("Model is overloaded", "overloaded"), "NO_CAPACITY", True),
        (
            tgi.tgi_error("Incomplete generation stream", "incomplete_generation_stream"),
            "ENGINE_ERROR",
            True,
        ),
    ],
    ids=["validation", "too-long", "overloaded", "incomplete"],
)
async def test_reconstructed_tgi_typed_error_frames_before_any_token(
    fake: FakeTgiServer, adapter: TgiAdapter, error: dict[str, str], code: str, retriable: bool
) -> None:
    (failure,) = await replay(
        fake, adapter, stream("reconstructed_tgi_error", "reconstructed", [error])
    )
    assert isinstance(failure, Failed) and (failure.code, failure.retriable) == (code, retriable)
    assert failure.before_first_token


async def test_tgi_recorded_stream_cut_before_its_final_event_is_worker_reset(
    fake: FakeTgiServer, adapter: TgiAdapter
) -> None:
    events = await replay(fake, adapter, tgi.recorded_tgi_generate("recorded_tgi_cut", keep=9))
    failure = events[-1]
    assert isinstance(failure, Failed) and failure.code == "WORKER_RESET" and failure.retriable
    assert text_of(events) == " for /api/v1/projects/"


@pytest.mark.parametrize(
    ("file", "usage"),
    [(tgi.CHAT_USAGE, (40, 10)), (tgi.CHAT_OK, (39, 3)), (tgi.JSON_SCHEMA, (0, 38))],
    ids=["stream-usage", "chat-usage", "json-schema-no-usage"],
)
async def test_tgi_recorded_chat_streams_give_the_recorded_text_and_usage(
    fake: FakeTgiServer, adapter: TgiAdapter, file: str, usage: tuple[int, int]
) -> None:
    request = GenerateRequest("c", Sampling(max_tokens=10), messages=CHAT)
    events = await replay(fake, adapter, tgi.recorded_tgi_chat("recorded_tgi_chat", file), request)
    assert text_of(events) == recorded_chat_text(file)
    end = events[-1]
    assert isinstance(end, End) and (end.tokens_in, end.tokens_out) == usage
    assert fake.seen("c").path == "/v1/chat/completions"


async def test_tgi_recorded_json_schema_stream_is_json_and_the_schema_is_sent_as_tgi_grammar(
    fake: FakeTgiServer, adapter: TgiAdapter
) -> None:
    schema = {"type": "object", "properties": {"firstName": {"type": "string"}}}
    request = GenerateRequest(
        "c", Sampling(max_tokens=64, json_schema=json.dumps(schema)), messages=CHAT
    )
    events = await replay(
        fake, adapter, tgi.recorded_tgi_chat("recorded_tgi_json", tgi.JSON_SCHEMA), request
    )
    assert isinstance(json.loads(text_of(events)), dict)
    assert fake.seen("c").body["response_format"] == {"type": "json", "value": schema}


async def test_a_gbnf_grammar_fails_closed_on_tgi(fake: FakeTgiServer, adapter: TgiAdapter) -> None:
    request = GenerateRequest("j", Sampling(4, grammar='root ::= "a"'), prompt="p")
    (failure,) = [event async for event in adapter.submit(request)]
    assert isinstance(failure, Failed) and failure.code == "UNSUPPORTED_PARAM"
    assert failure.message.startswith("grammar:") and not failure.retriable
    assert not fake.requests_of("j")


@pytest.mark.parametrize(
    ("sampling", "parameters"),
    [
        (Sampling(5, temperature=0.0), {"do_sample": False}),
        (Sampling(5, temperature=0.7, top_p=1.0), {"temperature": 0.7, "do_sample": True}),
        (
            Sampling(5, top_p=0.9, top_k=3, repeat_penalty=1.1, seed=2),
            {"top_p": 0.9, "top_k": 3, "repetition_penalty": 1.1, "seed": 2},
        ),
        (Sampling(5, top_p=0.0, stop=("x",)), {"do_sample": False, "stop": ["x"]}),
    ],
    ids=["greedy", "top-p-off", "extras", "top-p-zero-is-greedy"],
)
def test_sampling_maps_to_parameters_tgi_accepts(
    sampling: Sampling, parameters: dict[str, object]
) -> None:
    assert generate_parameters(sampling) == {"max_new_tokens": 5, "details": True, **parameters}


async def test_health_props_and_tokenize(fake: FakeTgiServer, adapter: TgiAdapter) -> None:
    assert (await adapter.health()).state == "ready"
    fake.unhealthy = True
    assert (await adapter.health()).state == "failed"
    props = await adapter.props()
    assert (props.engine, props.ctx, props.slots_total) == ("tgi", 4096, 128)
    tokens = await adapter.tokenize("aé", with_offsets=True)
    assert tokens.byte_offsets == (0, 1, 2)
    with pytest.raises(RequestRejected):
        await adapter.detokenize((1, 2))
