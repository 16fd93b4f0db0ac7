"""Constrained output for real (issue 12 item 4): a `json_schema` task ends with `end`
only when its whole output satisfies the schema, checked with jsonschema.

One orchestrator and one in-process llama.cpp pool of the tiny fixture model. The
engine is constrained by the grammar llama.cpp's converter makes of the schema, and
that grammar cannot say everything: `UNSATISFIABLE` asks for exactly two items, each
"a", all unique. The grammar forces `["a", "a"]` (it ignores `uniqueItems`), which no
output can make valid, so the violation is certain, not a matter of chance. A schema
the grammar enforces whole ends normally; an output cut by `max_tokens` is refused
too. Through `/v2/tasks` and the OpenAI facade (official client), streamed or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from openai.types.chat import ChatCompletionMessageParam

pytestmark = pytest.mark.integration
UNSATISFIABLE: dict[str, object] = {
    "type": "array",
    "items": {"enum": ["a"]},
    "minItems": 2,
    "maxItems": 2,
    "uniqueItems": True,
}
ENFORCED = {key: value for key, value in UNSATISFIABLE.items() if key != "uniqueItems"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "give two"}]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(
        tmp_path_factory.mktemp("constrained"), {"host-a": [tiny_pool("tiny-a", tiny_model)]}
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


def run_task(cluster: Cluster, **body: Any) -> tuple[str, Any, dict[str, Any]]:
    """(streamed text, terminal event, task status) of one /v2 task."""
    response = cluster.submit({"model": "default", "prompt": "[", "seed": 5, **body})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    events = cluster.events(task_id)
    text = "".join(e.data["t"] for e in events if e.name == "token")
    return text, events[-1], cluster.task(task_id)


def test_an_output_the_schema_refuses_ends_with_schema_violation_not_end(
    cluster: Cluster,
) -> None:
    text, terminal, status = run_task(cluster, json_schema=UNSATISFIABLE, max_tokens=64)
    assert [item.strip() for item in text.strip()[1:-1].split(",")] == ['"a"', '"a"'], text
    assert terminal.name == "error", terminal
    assert terminal.data["code"] == "SCHEMA_VIOLATION" and terminal.data["retriable"] is False
    message = terminal.data["message"]
    assert "at $:" in message and "non-unique elements" in message, message
    assert message.endswith("(uniqueItems)"), message
    assert status["state"] == "failed" and status["attempts"] == 1, status


def test_an_output_that_satisfies_the_schema_ends_normally(cluster: Cluster) -> None:
    text, terminal, status = run_task(cluster, json_schema=ENFORCED, max_tokens=64)
    assert terminal.name == "end" and terminal.data["finish_reason"] == "stop", terminal
    assert [item.strip() for item in text.strip()[1:-1].split(",")] == ['"a"', '"a"'], text
    assert status["state"] == "completed"


def test_an_output_cut_by_max_tokens_is_refused_saying_so(cluster: Cluster) -> None:
    text, terminal, _ = run_task(cluster, json_schema=ENFORCED, max_tokens=2)
    assert terminal.name == "error" and terminal.data["code"] == "SCHEMA_VIOLATION", terminal
    assert "cut at max_tokens" in terminal.data["message"], terminal.data
    assert text and not text.rstrip().endswith("]")


def test_the_facade_refuses_a_violating_answer_with_422_schema_violation(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(
            model="default",
            messages=MESSAGES,
            max_tokens=64,
            seed=5,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "pair", "schema": UNSATISFIABLE},
            },
        )
    error = refused.value.body
    assert isinstance(error, dict), error
    assert error["code"] == "SCHEMA_VIOLATION" and error["type"] == "invalid_request_error"
    assert "(uniqueItems)" in error["message"], error


def test_the_facade_stream_ends_with_an_error_chunk_in_place_of_the_finish(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(
        model="default",
        messages=MESSAGES,
        max_tokens=64,
        seed=5,
        stream=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "pair", "schema": UNSATISFIABLE},
        },
    )
    chunks: list[Any] = []
    with pytest.raises(openai.APIError) as failed:
        chunks.extend(stream)
    assert not any(c.choices and c.choices[0].finish_reason for c in chunks), chunks
    assert "".join(c.delta.content or "" for k in chunks for c in k.choices).count('"a"') == 2
    assert "non-unique elements" in failed.value.message, failed.value
    body = failed.value.body
    assert isinstance(body, dict) and body.get("code") == "SCHEMA_VIOLATION", body


def test_the_facade_passes_an_answer_that_satisfies_the_schema(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="default",
        messages=MESSAGES,
        max_tokens=64,
        seed=5,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "pair", "schema": ENFORCED},
        },
    )
    content = answer.choices[0].message.content
    assert content is not None and answer.choices[0].finish_reason == "stop"
    assert [item.strip() for item in content.strip()[1:-1].split(",")] == ['"a"', '"a"']
