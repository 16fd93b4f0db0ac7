"""Tool calling on the OpenAI facade (API-17, issue 12 item 3), with the official
`openai` client, unchanged, against real engines through orchestratord.

One cluster, two pools of the tiny fixture model: the in-process engine (alias `ip`)
and a real llama-server (alias `ls`, started by the pool manager with `--jinja`). The
tiny random-weight model never chooses a tool by chance, so the client's loop (call ->
`tool_calls` -> the client appends the assistant turn and a `tool` turn with the
result -> a second call gets the answer) runs with `tool_choice` `required` and named
(grammar-forced), streamed and not; `auto` and `none` are checked for their shape.
A tool whose `parameters` the grammar cannot enforce whole (`maximum`) shows that a
call breaking them is refused with SCHEMA_VIOLATION, never passed on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from provisioners.testing import llama_server_for_tests

pytestmark = pytest.mark.integration

CITIES = ["Paris", "Rome", "Oslo"]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": CITIES}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
# The grammar cannot keep an integer under a maximum: the tiny model writes long ones.
CLOCK: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
FORMS = ("ip", "ls")  # the model's alias on each pool
CHOICES: dict[str, Any] = {
    "required": "required",
    "named": {"type": "function", "function": {"name": "get_weather"}},
}


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = list(llama_server_for_tests().command)
    pools = [
        tiny_pool("tools-ip", tiny_model, ctx=4096, aliases=["ip"]),
        tiny_pool(
            "tools-ls",
            tiny_model,
            ctx=4096,
            aliases=["ls"],
            engine="llamacpp",
            engine_command=server,
        ),
    ]
    cluster = Cluster(tmp_path_factory.mktemp("tools"), {"host-a": pools})
    cluster.start()
    cluster.wait_ready(["tools-ip", "tools-ls"], timeout_s=120)
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


def _streamed(stream: Any) -> tuple[str, list[dict[str, Any]], list[str], list[Any]]:
    """Content, calls (by index: id, name, arguments joined) and finish reasons of a
    streamed answer, as a client reads them; and the raw tool-call deltas."""
    content, finishes, deltas = "", [], []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or ():
            deltas.append(delta)
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
    return content, [calls[i] for i in sorted(calls)], finishes, deltas


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("choice", list(CHOICES))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_clients_tool_loop_calls_the_tool_then_answers_with_its_result(
    client: openai.OpenAI, form: str, choice: str, stream: bool
) -> None:
    tools = [WEATHER] if choice == "required" else [CLOCK, WEATHER]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    request: dict[str, Any] = {
        "model": form,
        "tools": tools,
        "tool_choice": CHOICES[choice],
        "parallel_tool_calls": False,
        "max_tokens": 200,
        "seed": 3,
    }
    whole = client.chat.completions.create(messages=messages, **request)
    answer = whole.choices[0]
    assert answer.finish_reason == "tool_calls", answer
    assert answer.message.content is None and answer.message.tool_calls is not None
    [call] = answer.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in CITIES
    assert call.id.startswith("call_")
    if stream:  # the same call, streamed as OpenAI streams it
        content, calls, finishes, deltas = _streamed(
            client.chat.completions.create(messages=messages, stream=True, **request)
        )
        assert content == "" and finishes == ["tool_calls"]
        assert [(c["name"], c["arguments"]) for c in calls] == [
            ("get_weather", call.function.arguments)
        ]
        first = deltas[0]
        assert first.index == 0 and first.type == "function" and first.id == calls[0]["id"]
        assert len(deltas) > 2  # the arguments came in fragments
    messages.append(answer.message)  # the client's own loop: its message object as is
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    final = client.chat.completions.create(
        messages=messages, **{**request, "tool_choice": "none", "max_tokens": 8}
    )
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content and final.choices[0].finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens == 8


@pytest.mark.parametrize("form", FORMS)
def test_the_tool_result_reaches_the_prompt(client: openai.OpenAI, form: str) -> None:
    base: list[Any] = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
    ]
    prompts = []
    for result in ("sunny", "heavy rain with strong winds from the north"):
        messages = [*base, {"role": "tool", "tool_call_id": "call_1", "content": result}]
        reply = client.chat.completions.create(
            model=form, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=2
        )
        assert reply.usage is not None
        prompts.append(reply.usage.prompt_tokens)
    assert prompts[1] > prompts[0] + 4  # the longer result is in the prompt


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_and_none_answer_in_text_of_the_right_shape(
    client: openai.OpenAI, form: str, stream: bool
) -> None:
    messages: Any = [{"role": "user", "content": "Hello"}]
    for choice in ("auto", "none"):
        request: dict[str, Any] = {
            "model": form,
            "messages": messages,
            "tools": [WEATHER],
            "tool_choice": choice,
            "max_tokens": 12,
            "seed": 5,
        }
        if stream:
            content, calls, finishes, _ = _streamed(
                client.chat.completions.create(stream=True, **request)
            )
        else:
            answer = client.chat.completions.create(**request).choices[0]
            assert answer.message.tool_calls is None
            content, calls, finishes = answer.message.content or "", [], [answer.finish_reason]
        # The tiny model writes text: with `auto` the grammar lets text start with
        # anything but `<` (a call's first character), `none` is not constrained.
        assert content and calls == [] and finishes == ["length"], (choice, content)
        if choice == "auto":
            assert not content.startswith("<")


@pytest.mark.parametrize("form", FORMS)
def test_a_call_that_breaks_the_tools_parameters_is_a_schema_violation(
    client: openai.OpenAI, form: str
) -> None:
    request: Any = {
        "model": form,
        "messages": [{"role": "user", "content": "What time is it?"}],
        "tools": [CLOCK],
        "tool_choice": "required",
        "max_tokens": 200,
        "seed": 1,
    }
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.code == "SCHEMA_VIOLATION"
    assert "$.zone" in caught.value.message and "maximum" in caught.value.message
    with pytest.raises(openai.APIError) as streamed:
        _streamed(client.chat.completions.create(stream=True, **request))
    assert "SCHEMA_VIOLATION" in str(streamed.value.body) or "$.zone" in streamed.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_a_tool_request_that_cannot_be_answered_is_a_bad_request_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    messages: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="ip", messages=messages, max_tokens=2, **extra)
    assert caught.value.code == "INVALID_PARAMS" and caught.value.param == param
