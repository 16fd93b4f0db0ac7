"""The facade's side of tool calling (API-17): requests become the task's tool values
(or a typed refusal), and outputs in the tool-call text form become OpenAI's calls,
whole or streamed in pieces however the engine's text was split."""

from __future__ import annotations

import json
from typing import Any

import pytest
from orchestratord.errors import ApiError
from orchestratord.http.openai import facade_spec
from orchestratord.http.openai_tools import (
    ArgumentsDelta,
    CallStart,
    ContentDelta,
    StreamPiece,
    ToolStream,
    message_of,
)
from worker_adapters import ToolCall
from worker_adapters.tools import call_text

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
CLOCK: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
CALLS = (
    ToolCall("get_weather", '{"city": "Pa}ris \\"x\\"", "n": [1, {"a": []}]}', "call_x"),
    ToolCall("get_time", "{ }"),
)
OUTPUT = "\n".join(call_text(call) for call in CALLS)


def _spec(**fields: Any) -> Any:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return facade_spec("chat", json.dumps(body).encode())


def test_tools_go_into_the_tasks_sampling_and_its_needs() -> None:
    spec = _spec(tools=[WEATHER, CLOCK], parallel_tool_calls=False)
    sampling = spec.request.sampling
    assert json.loads(sampling.tools) == [
        {"name": "get_weather", "parameters": WEATHER["function"]["parameters"]},
        {"name": "get_time"},
    ]
    assert sampling.tool_choice == "auto" and sampling.parallel_tool_calls is False
    assert "tools" in spec.needs.params
    # the tools' description is in the prompt: the job's bound on tokens counts it
    assert spec.needs.tokens >= _spec().needs.tokens + len(sampling.tools)


def test_a_named_choice_is_required_with_that_tool_alone() -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    sampling = _spec(tools=[WEATHER, CLOCK], tool_choice=named).request.sampling
    assert sampling.tool_choice == "required"
    assert [f["name"] for f in json.loads(sampling.tools)] == ["get_time"]


def test_tool_turns_of_the_history_reach_the_task_and_need_tools() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    spec = facade_spec("chat", json.dumps({"model": "m", "messages": messages}).encode())
    turns = spec.request.messages
    assert turns is not None
    assert turns[1].tool_calls == (ToolCall("f", "{}", "c1"),)
    assert (turns[2].role, turns[2].content, turns[2].tool_call_id) == ("tool", "42", "c1")
    assert "tools" in spec.needs.params


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools.0.function.parameters",
        ),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [WEATHER], "logprobs": True}, "logprobs"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "content": "42"},
                ]
            },
            "messages.1.tool_call_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[1]"},
                            }
                        ],
                    }
                ]
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
    ],
)
def test_a_tool_request_that_cannot_be_answered_is_refused_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiError) as refused:
        _spec(**fields)
    assert refused.value.code == "INVALID_PARAMS" and refused.value.details[0].field == field


def test_with_tool_choice_none_the_response_format_may_stay() -> None:
    spec = _spec(tools=[WEATHER], tool_choice="none", response_format={"type": "json_object"})
    assert spec.request.sampling.tool_choice == "none"


def test_a_whole_output_of_calls_becomes_the_messages_tool_calls() -> None:
    message, called = message_of(OUTPUT, "T", "auto")
    assert called and message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_x",
            "type": "function",
            "function": {"name": "get_weather", "arguments": CALLS[0].arguments},
        },
        {
            "id": "call_T_1",
            "type": "function",
            "function": {"name": "get_time", "arguments": "{ }"},
        },
    ]
    assert message_of("hello", "T", "auto") == ({"role": "assistant", "content": "hello"}, False)


def _streamed(text: str, size: int) -> list[StreamPiece]:
    stream = ToolStream("T")
    pieces: list[StreamPiece] = []
    for start in range(0, len(text), size):
        pieces += stream.feed(text[start : start + size])
    return pieces + stream.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 1000])
def test_streamed_calls_are_the_whole_calls_however_the_text_is_split(size: int) -> None:
    pieces = _streamed(OUTPUT, size)
    starts = [p for p in pieces if isinstance(p, CallStart)]
    assert starts == [CallStart(0, "call_x", "get_weather"), CallStart(1, "call_T_1", "get_time")]
    for index, call in enumerate(CALLS):
        fragments = [
            p.fragment for p in pieces if isinstance(p, ArgumentsDelta) and p.index == index
        ]
        assert "".join(fragments) == call.arguments
    assert not any(isinstance(p, ContentDelta) for p in pieces)
    first = pieces.index(starts[1])
    assert all(p.index == 0 for p in pieces[:first] if isinstance(p, ArgumentsDelta))


@pytest.mark.parametrize("text", ["Hello there", "<tab>", "<tool", "<", "  <tool_call>"])
@pytest.mark.parametrize("size", [1, 4, 1000])
def test_streamed_text_passes_unchanged(text: str, size: int) -> None:
    pieces = _streamed(text, size)
    assert all(isinstance(p, ContentDelta) for p in pieces)
    assert "".join(p.text for p in pieces if isinstance(p, ContentDelta)) == text


def test_a_broken_call_stops_the_deltas() -> None:
    pieces = _streamed('<tool_call>\n{"name": "f", "arguments": 7, "x": 1}</tool_call>', 3)
    assert pieces == [CallStart(0, "call_T_0", "f")]  # the end brings SCHEMA_VIOLATION
