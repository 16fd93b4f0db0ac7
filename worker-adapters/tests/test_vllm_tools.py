"""Tool calling on vLLM (API-17), the request side: what the `vllm` server adapter sends
and the `SamplingParams` keywords the in-process vLLM worker builds. Both present the
tools as llorch does everywhere (a system message) and constrain the answer with the
grammar of the calls through vLLM's structured outputs. The real engines run the
official client's loop in ci/harness/tests/test_vllm_engine_pool.py and
test_vllm_inproc_pool.py."""

from __future__ import annotations

import json

import pytest
from worker_adapters import ChatTurn, Endpoint, Failed, GenerateRequest, Sampling, ToolCall
from worker_adapters._http_adapter import StreamPlan
from worker_adapters.constraints import json_schema_grammar
from worker_adapters.tools import CALL_OPEN, MUST_CALL
from worker_adapters.vllm import VllmAdapter
from worker_adapters.vllm_inproc.plan import sampling_args

WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
    },
}
TOOLS = json.dumps([WEATHER])
ASK = (ChatTurn("user", "Weather in Paris?"),)
ENDPOINT = Endpoint("127.0.0.1:9", "k")  # never called: model and version are given


def _chat(choice: str | None, *, messages: tuple[ChatTurn, ...] = ASK) -> GenerateRequest:
    sampling = Sampling(max_tokens=64, tools=TOOLS, tool_choice=choice)
    return GenerateRequest("j", sampling, messages=messages)


async def _plan(request: GenerateRequest, version: str = "0.32.0") -> StreamPlan | Failed:
    adapter = VllmAdapter(ENDPOINT, model="m", version=version)
    try:
        return await adapter.plan(request)
    finally:
        await adapter.close()


async def test_the_server_gets_the_tools_described_and_the_grammar_of_their_calls() -> None:
    plan = await _plan(_chat("required"))
    assert isinstance(plan, StreamPlan), plan
    system, user = plan.body["messages"]
    assert system["role"] == "system" and '"get_weather"' in system["content"]
    assert MUST_CALL in system["content"] and user == {"role": "user", "content": ASK[0].content}
    grammar = plan.body["structured_outputs"]["grammar"]
    assert CALL_OPEN in grammar and '\\"get_weather\\"' in grammar
    assert "tool-plain-text" not in grammar  # required: calls only
    assert "tools" not in plan.body and "tool_choice" not in plan.body  # not vLLM's own


async def test_auto_lets_text_through_and_an_old_server_gets_its_legacy_grammar_field() -> None:
    plan = await _plan(_chat("auto"), version="0.11.0")
    assert isinstance(plan, StreamPlan), plan
    assert "tool-plain-text" in plan.body["guided_grammar"]
    assert "structured_outputs" not in plan.body


async def test_tool_choice_none_sends_no_tools_and_no_grammar_but_renders_the_history() -> None:
    call = ToolCall("get_weather", '{"city": "Rome"}', "call_1")
    history = (
        *ASK,
        ChatTurn("assistant", "", (call,)),
        ChatTurn("tool", "sunny", tool_call_id="call_1"),
    )
    plan = await _plan(_chat("none", messages=history))
    assert isinstance(plan, StreamPlan), plan
    body = plan.body
    assert "structured_outputs" not in body and "guided_grammar" not in body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"], body["messages"]  # no tools described
    assert CALL_OPEN in body["messages"][1]["content"]
    assert body["messages"][2]["content"] == "<tool_response>\nsunny\n</tool_response>"


async def test_tools_on_a_completion_are_refused_naming_them() -> None:
    request = GenerateRequest("j", Sampling(max_tokens=4, tools=TOOLS), prompt="p")
    plan = await _plan(request)
    assert isinstance(plan, Failed) and plan.code == "UNSUPPORTED_PARAM"
    assert plan.message.startswith("tools:")


@pytest.mark.parametrize(("choice", "text_allowed"), [("required", False), (None, True)])
def test_the_in_process_worker_constrains_the_calls_with_the_grammar_of_the_tools(
    choice: str | None, text_allowed: bool
) -> None:
    sampling = Sampling(max_tokens=64, tools=TOOLS, tool_choice=choice)
    grammar = sampling_args(sampling, json_schema_grammar)["structured"]["grammar"]
    assert CALL_OPEN in grammar and '\\"get_weather\\"' in grammar
    assert ("tool-plain-text" in grammar) == text_allowed


def test_the_in_process_worker_leaves_tool_choice_none_unconstrained() -> None:
    sampling = Sampling(max_tokens=64, tools=TOOLS, tool_choice="none")
    assert "structured" not in sampling_args(sampling, json_schema_grammar)


def test_the_in_process_worker_refuses_tools_it_has_no_converter_for() -> None:
    with pytest.raises(ValueError, match="tools: no JSON-schema converter"):
        sampling_args(Sampling(max_tokens=64, tools=TOOLS, tool_choice="required"))
