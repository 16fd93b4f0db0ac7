"""The official `openai` client, unchanged, against llorch's facade (API-13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from ci_harness.cluster import Cluster, tiny_pool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(
        tmp_path_factory.mktemp("openai"),
        {"host-a": [tiny_pool("tiny-a", tiny_model, embeddings=True, slots=2)]},
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


def test_models_lists_the_catalog_id_and_aliases(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["tiny", "default"]


def test_chat_completion_streams_with_real_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=24,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finishes == ["length"]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 24
    assert usage.prompt_tokens > 3 and usage.total_tokens == usage.prompt_tokens + 24


def test_chat_completion_without_streaming_matches_the_stream(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "yo"}],
        "max_tokens": 20,
        "seed": 9,
        "temperature": 1.0,
    }
    whole = client.chat.completions.create(**request)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**request, stream=True)
        if c.choices
    )
    assert whole.choices[0].message.content == streamed
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage is not None and whole.usage.completion_tokens == 20


def test_completions_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="default", prompt="Once", max_tokens=12, seed=4)
    parts = [
        c.choices[0].text
        for c in client.completions.create(
            model="default", prompt="Once", max_tokens=12, seed=4, stream=True
        )
        if c.choices
    ]
    assert whole.choices[0].text == "".join(parts)
    assert whole.usage is not None and whole.usage.completion_tokens == 12
    assert whole.choices[0].finish_reason == "length"


def test_stop_sequences_finish_with_stop(client: openai.OpenAI) -> None:
    text = (
        client.completions.create(model="default", prompt="x", max_tokens=60, seed=2)
        .choices[0]
        .text
    )
    stop = text[10:12]
    stopped = client.completions.create(
        model="default", prompt="x", max_tokens=60, seed=2, stop=stop
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[: text.index(stop)]


def test_embeddings_return_one_vector_per_input_with_usage(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="default", input=["hello world", "goodbye"], encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1]
    first, second = (d.embedding for d in result.data)
    assert len(first) == len(second) == 64
    assert first != second
    assert result.usage.prompt_tokens >= 3


def test_json_schema_response_format_gives_json_that_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "a city?"}],
        max_tokens=64,
        seed=5,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    value = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"city"} and isinstance(value["city"], str)


def test_an_unknown_model_is_a_not_found_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="nope", prompt="x")
    assert caught.value.code == "MODEL_NOT_FOUND"


def test_invalid_parameters_are_bad_requests_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="default", prompt="x", temperature=7)
    assert caught.value.code == "INVALID_PARAMS" and "temperature" in str(caught.value)
