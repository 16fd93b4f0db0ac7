"""Logprobs end to end (API-02, API-13): the official `openai` client, unchanged, gets
OpenAI-shaped logprobs from chat and completions, streaming and not; `/v2` token events
carry them; a model whose engines do not honour `logprobs` refuses it (UNSUPPORTED_PARAM)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import openai
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from specs.api.models import TokenEvent

pytestmark = pytest.mark.integration

GREEDY: dict[str, Any] = {"temperature": 0.0, "seed": 1}


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    mock = {"id": "mock-1", "engine": "mock", "ctx": 4096, "slots": 1, "aliases": ["m"]}
    cluster = Cluster(
        tmp_path_factory.mktemp("logprobs"),
        {"host-a": [tiny_pool("tiny-a", tiny_model, slots=2), mock]},
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


def check_greedy_entry(entry: Any, top_n: int) -> None:
    """A greedy token is its position's most likely one; alternatives are sorted."""
    values = [top.logprob for top in entry.top_logprobs]
    assert len(values) == top_n
    assert values == sorted(values, reverse=True) and all(v <= 0.0 for v in values)
    assert entry.logprob <= 0.0
    assert entry.logprob == pytest.approx(values[0], abs=1e-5)
    assert entry.bytes == entry.top_logprobs[0].bytes


def test_chat_returns_logprobs_of_every_token(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
        logprobs=True,
        top_logprobs=3,
        **GREEDY,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert reply.usage is not None and len(entries) == reply.usage.completion_tokens == 10
    for entry in entries:
        check_greedy_entry(entry, 3)
    text = bytes(b for entry in entries for b in entry.bytes or ()).decode(errors="replace")
    assert text == choice.message.content


def test_streamed_chat_logprobs_equal_the_whole_answers(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": "yo"}],
        "max_tokens": 8,
        "logprobs": True,
        "top_logprobs": 2,
        **GREEDY,
    }
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True))
    streamed = [
        entry
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content or ()
    ]
    assert whole.choices[0].logprobs is not None
    expected = whole.choices[0].logprobs.content or []
    assert [e.token for e in streamed] == [e.token for e in expected]
    # The two runs may reuse a cached prompt or not: equal up to float rounding.
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in expected], abs=1e-4)


def test_chat_without_logprobs_has_none(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}], max_tokens=4
    )
    assert reply.choices[0].logprobs is None
    chunks = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True
    )
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices)


def test_completions_return_the_legacy_logprobs_shape(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="default", prompt="Once", max_tokens=9, logprobs=2, **GREEDY
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    tokens, values = logprobs.tokens or [], logprobs.token_logprobs or []
    tops, offsets = logprobs.top_logprobs or [], logprobs.text_offset or []
    assert len(tokens) == len(values) == len(tops) == len(offsets) == 9
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(9)]
    for value, top in zip(values, tops, strict=True):
        assert 1 <= len(top) <= 2 and all(v <= 0.0 for v in top.values())
        assert value == pytest.approx(max(top.values()), abs=1e-5)


def test_streamed_completion_offsets_continue_across_chunks(client: openai.OpenAI) -> None:
    chunks = client.completions.create(
        model="default", prompt="Once", max_tokens=9, logprobs=0, stream=True, seed=3
    )
    tokens: list[str] = []
    offsets: list[int] = []
    for chunk in chunks:
        logprobs = chunk.choices[0].logprobs if chunk.choices else None
        if logprobs is not None:
            tokens += logprobs.tokens or []
            offsets += logprobs.text_offset or []
            assert all(top == {} for top in logprobs.top_logprobs or [])
            assert all(v is not None and v <= 0.0 for v in logprobs.token_logprobs or [])
    assert len(tokens) == 9
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(9)]


def test_v2_token_events_carry_logprobs_in_the_documented_shape(cluster: Cluster) -> None:
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 6, "logprobs": 4, **GREEDY}
    response = cluster.submit(body)
    assert response.status_code == 202, response.text
    events = [e for e in cluster.events(response.json()["task_id"]) if e.name == "token"]
    entries = []
    for event in events:
        token = TokenEvent.model_validate(event.data)
        assert token.logprobs is not None
        entries += token.logprobs
    assert len(entries) == 6
    for entry in entries:
        assert len(entry.top_logprobs) == 4
        assert math.isclose(entry.logprob, entry.top_logprobs[0].logprob, abs_tol=1e-5)


def test_logprobs_on_an_engine_without_them_fail_closed(
    client: openai.OpenAI, cluster: Cluster
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], logprobs=True, max_tokens=4
        )
    assert caught.value.code == "UNSUPPORTED_PARAM" and caught.value.param == "logprobs"
    response = cluster.submit({"model": "m", "prompt": "x", "max_tokens": 2, "logprobs": 0})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "UNSUPPORTED_PARAM" and body["details"][0]["field"] == "logprobs"
