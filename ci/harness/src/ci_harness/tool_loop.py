"""The official `openai` client's tool-call loop (API-17), as the tests of every engine
that honours tools run it against a real pool through the facade (llama-server and the
in-process engine in `test_openai_tools.py`, vLLM's server and in-process pools in
their own modules, which start vLLM once each).

The tiny random-weight models never choose a tool by chance, so the loop (call ->
`tool_calls` -> the client appends its assistant message and a `tool` turn with the
result -> a second call, `tool_choice: none`, gets text) runs with `tool_choice`
`required` and named (grammar-forced), streamed and whole; `auto` and `none` are
checked for their shape only. The client is the caller's `openai.OpenAI` (duck-typed
here: the harness does not depend on `openai`).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "CHOICES",
    "CITIES",
    "CLOCK",
    "WEATHER",
    "check_auto_and_none_answer_in_text",
    "check_tool_result_reaches_the_prompt",
    "run_tool_loop",
    "streamed",
]

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
# A grammar made by llama.cpp's converter cannot keep an integer under a maximum: the
# tiny model writes long ones.
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
CHOICES: dict[str, Any] = {
    "required": "required",
    "named": {"type": "function", "function": {"name": "get_weather"}},
}


def streamed(stream: Any) -> tuple[str, list[dict[str, Any]], list[str], list[Any]]:
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


def run_tool_loop(client: Any, model: str, choice: str, stream: bool) -> None:
    """The client's loop with `tool_choice` `choice` (a key of `CHOICES`): a forced call
    of get_weather with a city of its enum (also streamed, as OpenAI streams calls, when
    `stream`), its result sent back, then a text answer with `tool_choice: none`.
    AssertionError saying what differs."""
    tools = [WEATHER] if choice == "required" else [CLOCK, WEATHER]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    request: dict[str, Any] = {
        "model": model,
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
        content, calls, finishes, deltas = streamed(
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


def check_auto_and_none_answer_in_text(client: Any, model: str, stream: bool) -> None:
    """With tools and `tool_choice` `auto` then `none`, the tiny model answers in text
    of the right shape: content, no calls, cut at max_tokens; with `auto` the grammar
    lets text start with anything but `<` (a call's first character), `none` is not
    constrained."""
    messages: Any = [{"role": "user", "content": "Hello"}]
    for choice in ("auto", "none"):
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "tools": [WEATHER],
            "tool_choice": choice,
            "max_tokens": 12,
            "seed": 5,
        }
        if stream:
            content, calls, finishes, _ = streamed(
                client.chat.completions.create(stream=True, **request)
            )
        else:
            answer = client.chat.completions.create(**request).choices[0]
            assert answer.message.tool_calls is None
            content, calls, finishes = answer.message.content or "", [], [answer.finish_reason]
        assert content and calls == [] and finishes == ["length"], (choice, content)
        if choice == "auto":
            assert not content.startswith("<")


def check_tool_result_reaches_the_prompt(client: Any, model: str) -> None:
    """A history with an assistant call and its `tool` result: a longer result makes a
    longer prompt (the engine's own count of prompt tokens)."""
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
            model=model, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=2
        )
        assert reply.usage is not None
        prompts.append(reply.usage.prompt_tokens)
    assert prompts[1] > prompts[0] + 4, prompts  # the longer result is in the prompt
