"""Logprobs through the HTTP adapters (`_logprobs`): what each adapter asks its engine
for, and how each engine's wire shape becomes `Token.logprobs`.

Frames are reconstructed from the engines' documented wire (llama-server's
`completion_probabilities` and OpenAI-style `logprobs.content` as its source writes them;
OpenAI's chat and legacy completions shapes; TGI's `token`/`top_tokens`); the real
llama-server is exercised in `test_llamacpp_logprobs_real.py`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from worker_adapters import (
    ChatTurn,
    End,
    Endpoint,
    Failed,
    GenerateRequest,
    Sampling,
    StreamEvent,
    Token,
    TokenLogprob,
    TopLogprob,
)
from worker_adapters._logprobs import (
    LogprobsDecoder,
    llama_native_logprobs,
    openai_logprobs,
    tgi_logprobs,
)
from worker_adapters._openai_wire import OpenAIDecoder
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.llamacpp.wire import LlamaNativeDecoder
from worker_adapters.openai_compat import OpenAIAdapter
from worker_adapters.testing.fake_engines import (
    FakeLlamaServer,
    FakeOpenAIServer,
    FakeTgiServer,
    FakeVllmServer,
)
from worker_adapters.testing.targets import fast_settings
from worker_adapters.testing.transcripts import DONE, stream
from worker_adapters.tgi import TgiAdapter
from worker_adapters.tgi.wire import TgiDecoder
from worker_adapters.vllm import VllmAdapter

pytestmark = pytest.mark.usefixtures("http_session")

SOURCE = "reconstructed: engine wire shapes (llama-server server-task.cpp, OpenAI, TGI)"


def llama_entry(text: str, logprob: float, top: Sequence[tuple[str, float]]) -> dict[str, Any]:
    def one(token: str, value: float) -> dict[str, Any]:
        return {"id": 7, "token": token, "bytes": list(token.encode()), "logprob": value}

    return {**one(text, logprob), "top_logprobs": [one(t, v) for t, v in top]}


def native_partial(text: str, probs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "index": 0,
        "content": text,
        "tokens": [],
        "stop": False,
        "id_slot": 0,
        "tokens_predicted": 1,
        "tokens_evaluated": 3,
        "completion_probabilities": probs,
    }


NATIVE_FINAL = {
    "index": 0,
    "content": "",
    "stop": True,
    "stop_type": "limit",
    "tokens_predicted": 2,
    "tokens_evaluated": 3,
}


def chat_chunk(
    text: str | None, probs: list[dict[str, Any]] | None, finish: str | None = None
) -> dict[str, Any]:
    delta = {"content": text} if text is not None else {"role": "assistant"}
    choice = {
        "index": 0,
        "delta": delta,
        "finish_reason": finish,
        "logprobs": {"content": probs} if probs is not None else None,
    }
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}


def feed_all(decoder: LogprobsDecoder, frames: Sequence[Any]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for frame in frames:
        events.extend(
            decoder.feed(frame if isinstance(frame, bytes) else json.dumps(frame).encode())
        )
    return events


def tokens_of(events: Sequence[StreamEvent]) -> list[Token]:
    return [e for e in events if isinstance(e, Token)]


# -- decoding ----------------------------------------------------------------------------


def test_llama_server_native_probabilities_become_token_logprobs() -> None:
    decoder = LogprobsDecoder(LlamaNativeDecoder(), llama_native_logprobs, 1)
    frames = [
        native_partial("Hi", [llama_entry("Hi", -0.1, [("Hi", -0.1), ("Yo", -2.5)])]),
        native_partial(" there", [llama_entry(" there", -0.7, [(" you", -0.5)])]),
        NATIVE_FINAL,
    ]
    events = feed_all(decoder, frames)
    assert isinstance(events[-1], End)
    first, second = tokens_of(events)
    assert first.logprobs == (TokenLogprob("Hi", -0.1, b"Hi", (TopLogprob("Hi", -0.1, b"Hi"),)),)
    assert second.logprobs[0].top == (TopLogprob(" you", -0.5, b" you"),)


def test_probabilities_of_held_back_text_travel_with_the_next_token() -> None:
    decoder = LogprobsDecoder(LlamaNativeDecoder(), llama_native_logprobs, 0)
    split = [llama_entry("\ufffd", -1.0, [])]
    split[0]["bytes"] = [0xC3]
    frames = [
        native_partial("", split),
        native_partial("é", [llama_entry("\ufffd", -2.0, [])]),
        NATIVE_FINAL,
    ]
    (token,) = tokens_of(feed_all(decoder, frames))
    assert token.text == "é"
    assert [lp.logprob for lp in token.logprobs] == [-1.0, -2.0]
    assert token.logprobs[0].token_bytes == b"\xc3"


def test_openai_chat_logprobs_are_read_from_content_entries() -> None:
    entry = {
        "token": "ok",
        "logprob": -0.2,
        "bytes": [111, 107],
        "top_logprobs": [{"token": "ok", "logprob": -0.2, "bytes": [111, 107]}],
    }
    decoder = LogprobsDecoder(OpenAIDecoder(chat=True), openai_logprobs, 5)
    frames = [
        chat_chunk(None, None),
        chat_chunk("ok", [entry]),
        chat_chunk(None, None, "stop"),
        DONE[6:-2],
    ]
    events = feed_all(decoder, frames)
    (token,) = tokens_of(events)
    assert token.logprobs == (TokenLogprob("ok", -0.2, b"ok", (TopLogprob("ok", -0.2, b"ok"),)),)
    assert isinstance(events[-1], End)


def test_legacy_completion_logprobs_are_ranked_and_encoded() -> None:
    legacy = {
        "tokens": ["a"],
        "token_logprobs": [-0.3],
        "text_offset": [0],
        "top_logprobs": [{"b": -3.0, "a": -0.3}],
    }
    chunk = {"choices": [{"index": 0, "text": "a", "logprobs": legacy, "finish_reason": None}]}
    decoder = LogprobsDecoder(OpenAIDecoder(chat=False), openai_logprobs, 5)
    (token,) = tokens_of(feed_all(decoder, [chunk]))
    assert token.logprobs == (
        TokenLogprob("a", -0.3, b"a", (TopLogprob("a", -0.3, b"a"), TopLogprob("b", -3.0, b"b"))),
    )


def test_tgi_token_logprob_and_top_tokens() -> None:
    event = {
        "index": 1,
        "token": {"id": 5, "text": "x", "logprob": -0.4, "special": False},
        "top_tokens": [
            {"id": 6, "text": "y", "logprob": -1.0, "special": False},
            {"id": 5, "text": "x", "logprob": -0.4, "special": False},
        ],
        "generated_text": None,
        "details": None,
    }
    decoder = LogprobsDecoder(TgiDecoder(), tgi_logprobs, 2)
    (token,) = tokens_of(feed_all(decoder, [event]))
    assert token.logprobs == (
        TokenLogprob("x", -0.4, b"x", (TopLogprob("x", -0.4, b"x"), TopLogprob("y", -1.0, b"y"))),
    )


def test_alternatives_beyond_the_asked_number_are_cut() -> None:
    decoder = LogprobsDecoder(LlamaNativeDecoder(), llama_native_logprobs, 0)
    frames = [native_partial("a", [llama_entry("a", -0.1, [("a", -0.1)])])]
    (token,) = tokens_of(feed_all(decoder, frames))
    assert token.logprobs[0].top == ()


def test_an_engine_that_ignores_the_request_fails_closed_before_the_first_token() -> None:
    decoder = LogprobsDecoder(OpenAIDecoder(chat=True), openai_logprobs, 2)
    events = feed_all(decoder, [chat_chunk(None, None), chat_chunk("hi", None)])
    failure = events[-1]
    assert isinstance(failure, Failed)
    assert failure.code == "ENGINE_ERROR" and failure.before_first_token
    assert not tokens_of(events)


def test_a_logprob_above_zero_on_the_wire_is_clamped() -> None:
    decoder = LogprobsDecoder(LlamaNativeDecoder(), llama_native_logprobs, 1)
    (token,) = tokens_of(feed_all(decoder, [native_partial("a", [llama_entry("a", 1e-7, [])])]))
    assert token.logprobs[0].logprob == 0.0


# -- what each adapter asks for ------------------------------------------------------------


@pytest.fixture
async def llama_fake() -> AsyncIterator[FakeLlamaServer]:
    async with FakeLlamaServer() as server:
        yield server


async def run(adapter: Any, request: GenerateRequest) -> list[StreamEvent]:
    return [event async for event in adapter.submit(request)]


async def test_llamacpp_asks_n_probs_and_relays_them(llama_fake: FakeLlamaServer) -> None:
    llama_fake.default = stream(
        "native_logprobs",
        SOURCE,
        [native_partial("Hi", [llama_entry("Hi", -0.1, [("Hi", -0.1)])]), NATIVE_FINAL],
    )
    adapter = LlamaServerAdapter(Endpoint(llama_fake.address), fast_settings())
    events = await run(adapter, GenerateRequest("j", Sampling(4, logprobs=0), prompt="x"))
    assert llama_fake.seen("j").body["n_probs"] == 1  # 0 would return none at all
    assert tokens_of(events)[0].logprobs == (TokenLogprob("Hi", -0.1, b"Hi", ()),)


async def test_llamacpp_chat_asks_openai_logprobs(llama_fake: FakeLlamaServer) -> None:
    entry = {"token": "ok", "logprob": -0.2, "bytes": [111, 107], "top_logprobs": []}
    llama_fake.default = stream(
        "chat_logprobs",
        SOURCE,
        [chat_chunk(None, None), chat_chunk("ok", [entry]), chat_chunk(None, None, "stop"), DONE],
    )
    adapter = LlamaServerAdapter(Endpoint(llama_fake.address), fast_settings())
    request = GenerateRequest("c", Sampling(4, logprobs=3), messages=(ChatTurn("user", "x"),))
    events = await run(adapter, request)
    body = llama_fake.seen("c").body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert tokens_of(events)[0].logprobs[0].logprob == -0.2


async def test_requests_without_logprobs_ask_for_none(llama_fake: FakeLlamaServer) -> None:
    llama_fake.default = stream("plain", SOURCE, [native_partial("Hi", []), NATIVE_FINAL])
    adapter = LlamaServerAdapter(Endpoint(llama_fake.address), fast_settings())
    events = await run(adapter, GenerateRequest("p", Sampling(4), prompt="x"))
    assert "n_probs" not in llama_fake.seen("p").body
    assert tokens_of(events)[0].logprobs == ()


async def test_openai_and_vllm_ask_openai_fields() -> None:
    legacy = {"tokens": ["a"], "token_logprobs": [-0.3], "top_logprobs": [{"a": -0.3}]}
    chunk = {"choices": [{"index": 0, "text": "a", "logprobs": legacy, "finish_reason": "length"}]}
    transcript = stream("legacy", SOURCE, [chunk, DONE])
    async with FakeOpenAIServer() as openai_fake, FakeVllmServer() as vllm_fake:
        for fake, adapter in (
            (openai_fake, OpenAIAdapter(Endpoint(openai_fake.address), fast_settings())),
            (vllm_fake, VllmAdapter(Endpoint(vllm_fake.address), fast_settings())),
        ):
            fake.default = transcript
            events = await run(adapter, GenerateRequest("o", Sampling(4, logprobs=2), prompt="x"))
            assert fake.seen("o").body["logprobs"] == 2
            assert tokens_of(events)[0].logprobs[0].top == (TopLogprob("a", -0.3, b"a"),)


async def test_tgi_asks_top_n_tokens() -> None:
    event = {
        "index": 1,
        "token": {"id": 5, "text": "x", "logprob": -0.4, "special": False},
        "top_tokens": [],
        "generated_text": "x",
        "details": {"finish_reason": "length", "generated_tokens": 1, "input_length": 2},
    }
    async with FakeTgiServer() as fake:
        fake.default = stream("tgi", SOURCE, [event])
        adapter = TgiAdapter(Endpoint(fake.address), fast_settings())
        events = await run(adapter, GenerateRequest("t", Sampling(4, logprobs=3), prompt="x"))
        assert fake.seen("t").body["parameters"]["top_n_tokens"] == 3
        assert tokens_of(events)[0].logprobs == (TokenLogprob("x", -0.4, b"x", ()),)
