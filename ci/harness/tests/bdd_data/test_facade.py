"""The scenarios of `specs/features/openai/facade.feature`,
on the shared cluster (see conftest), with the steps only they use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from ci_harness.bdd import World
from ci_harness.tool_loop import CITIES, WEATHER
from pytest_bdd import given, parsers, scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(str(Path(__file__).resolve().parents[4] / "specs/features/openai/facade.feature"))


@given("the official OpenAI client with the client key")
def _(world: World, client_key: str) -> None:
    world.openai_client = openai.OpenAI(
        base_url=f"{world.cluster.url}/v1", api_key=client_key, max_retries=0
    )


def the_client(world: World) -> openai.OpenAI:
    assert isinstance(world.openai_client, openai.OpenAI), world.openai_client
    return world.openai_client


@when("I list the models with the OpenAI client")
def _(world: World) -> None:
    world.values["models"] = [model.id for model in the_client(world).models.list()]


@then(parsers.parse('the models include "{first}" and "{second}"'))
def _(world: World, first: str, second: str) -> None:
    assert {first, second} <= set(world.values["models"]), world.values["models"]


@when(parsers.parse("I stream a chat completion of {count:d} tokens with the OpenAI client"))
def _(world: World, count: int) -> None:
    stream = the_client(world).chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=count,
        stream=True,
        stream_options={"include_usage": True},
    )
    world.values["chunks"] = list(stream)


@then(parsers.parse('the chunks carry text and finish with reason "{reason}"'))
def _(world: World, reason: str) -> None:
    chunks = world.values["chunks"]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finishes == [reason], (text, finishes)
    world.values["usage"] = chunks[-1].usage


@when(parsers.parse("I ask for a completion of {count:d} tokens with the OpenAI client"))
def _(world: World, count: int) -> None:
    done = the_client(world).completions.create(model="default", prompt="Once", max_tokens=count)
    world.values["completion"], world.values["usage"] = done, done.usage


@then(parsers.parse('the completion has text and finish reason "{reason}"'))
def _(world: World, reason: str) -> None:
    choice = world.values["completion"].choices[0]
    assert choice.text and choice.finish_reason == reason, choice


@then(parsers.parse("the usage counts {count:d} completion tokens and the prompt's tokens"))
def _(world: World, count: int) -> None:
    usage = world.values["usage"]
    assert usage is not None and usage.completion_tokens == count, usage
    assert usage.prompt_tokens >= 1 and usage.total_tokens == usage.prompt_tokens + count


@when(parsers.parse('I ask model "{model}" for a chat in JSON mode with the OpenAI client'))
def _(world: World, model: str) -> None:
    try:
        the_client(world).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "x"}],
            max_tokens=4,
            response_format={"type": "json_object"},
        )
    except openai.APIStatusError as error:
        world.error = error


@when(parsers.parse('I ask model "{model}" for a chat with the OpenAI client'))
def _(world: World, model: str) -> None:
    try:
        the_client(world).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], max_tokens=4
        )
    except openai.APIStatusError as error:
        world.error = error


@then(
    parsers.parse(
        'the client raises a bad request error with code "{code}" for parameter "{param}"'
    )
)
def _(world: World, code: str, param: str) -> None:
    assert isinstance(world.error, openai.BadRequestError), world.error
    assert world.error.code == code and world.error.param == param, world.error.body
    assert world.error.type == "invalid_request_error"


@then(parsers.parse('the client raises a not found error with code "{code}"'))
def _(world: World, code: str) -> None:
    assert isinstance(world.error, openai.NotFoundError), world.error
    assert world.error.code == code, world.error.body


@when(
    parsers.parse('I ask twice for a completion of {count:d} tokens with Idempotency-Key "{key}"')
)
def _(world: World, count: int, key: str) -> None:
    client = the_client(world)
    world.values["answers"] = [
        client.completions.with_raw_response.create(
            model="default",
            prompt=key,
            max_tokens=count,
            temperature=0.9,
            extra_headers={"Idempotency-Key": key},
        )
        for _ in range(2)
    ]


@then("both answers are the same task with the same text")
def _(world: World) -> None:
    first, second = world.values["answers"]
    assert first.headers["x-llorch-task-id"] == second.headers["x-llorch-task-id"]
    assert first.parse().choices[0].text == second.parse().choices[0].text


@when(parsers.parse('I ask for the weather in Paris with a "{name}" tool the model must call'))
def _(world: World, name: str) -> None:
    assert name == WEATHER["function"]["name"]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    # The tiny random model never picks a tool by chance: `required` makes it call one.
    request: dict[str, Any] = {"model": "default", "tools": [WEATHER], "max_tokens": 200,
                               "seed": 3, "parallel_tool_calls": False}  # fmt: skip
    answer = the_client(world).chat.completions.create(
        messages=messages, tool_choice="required", **request
    )
    world.values.update(messages=messages, request=request, answer=answer.choices[0])


@then(parsers.parse('the answer is one call of "{name}" whose arguments satisfy its parameters'))
def _(world: World, name: str) -> None:
    message = world.values["answer"].message
    assert message.content is None and message.tool_calls is not None, message
    [call] = message.tool_calls
    assert call.type == "function" and call.function.name == name
    assert json.loads(call.function.arguments)["city"] in CITIES, call.function.arguments


@then(parsers.parse('the finish reason is "{reason}"'))
def _(world: World, reason: str) -> None:
    assert world.values["answer"].finish_reason == reason, world.values["answer"]


@when("I send the call and the tool's result back, asking for no more calls")
def _(world: World) -> None:
    answer = world.values["answer"]
    messages = world.values["messages"]
    messages.append(answer.message)  # the client's loop: its own message object as is
    call = answer.message.tool_calls[0]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    final = the_client(world).chat.completions.create(
        messages=messages, **{**world.values["request"], "max_tokens": 8}, tool_choice="none"
    )
    world.values["final"] = final.choices[0]


@then("the answer is text with no tool call")
def _(world: World) -> None:
    final = world.values["final"]
    assert final.message.tool_calls is None and final.message.content, final
    assert final.finish_reason == "length", final


@when(parsers.parse('I ask model "{model}" for a chat with a "{name}" tool with the OpenAI client'))
def _(world: World, model: str, name: str) -> None:
    assert name == WEATHER["function"]["name"]
    try:
        the_client(world).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], max_tokens=4, tools=[WEATHER]
        )
    except openai.APIStatusError as error:
        world.error = error
