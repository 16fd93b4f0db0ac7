"""Tool calling's pure parts (API-17): the tool-call text form, the check of finished
calls against the request, the grammar and the presentation of tools to a model."""

from __future__ import annotations

import json
import re
from typing import Any, cast

import pytest
from catalog_core.fixtures import CHAT_TEMPLATE
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar
from worker_adapters.chat_templates import GEMMA3_TEMPLATE
from worker_adapters.constraints import json_schema_grammar
from worker_adapters.tools import (
    MUST_CALL,
    ParsedOutput,
    call_text,
    parse_output,
    present_tools,
    tool_call_violation,
    tool_grammar,
)
from worker_adapters.types import ChatTurn, ToolCall

WEATHER = {
    "name": "get_weather",
    "description": "The weather now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
        "required": ["city"],
    },
}
CLOCK = {"name": "get_time", "parameters": {"type": "object"}}
TOOLS = json.dumps([WEATHER, CLOCK])
PARIS = ToolCall("get_weather", '{"city": "Paris"}', "call_a")


def test_calls_written_in_the_text_form_parse_back_with_their_exact_arguments() -> None:
    calls = (
        PARIS,
        ToolCall("get_time", "{ }"),
        ToolCall("get_weather", '{"city":"Rome","days":2}'),
    )
    text = "\n".join(call_text(call) for call in calls)
    assert parse_output(text) == ParsedOutput(None, calls)


def test_an_output_that_does_not_start_with_a_call_is_text() -> None:
    for text in ("Hello", " <tool_call>", "", "<tool"):
        assert parse_output(text) == ParsedOutput(text)


def test_free_whitespace_inside_a_call_is_read() -> None:
    text = '<tool_call>\n{ "name" : "get_time","arguments" :{ "zone" :4 }} \n</tool_call>'
    assert parse_output(text).calls == (ToolCall("get_time", '{ "zone" :4 }'),)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}', "expected </tool_call> at character"),
        ('<tool_call>{"arguments": {}, "name": "f"}</tool_call>', 'expected {"name"'),
        ('<tool_call>{"name": "f", "arguments": [1]}}</tool_call>', "not a JSON object"),
        ('<tool_call>{"name": "f", "arguments": {"a": }}</tool_call>', "are not JSON"),
        (call_text(PARIS) + "\nand some text", "expected <tool_call> at character"),
    ],
)
def test_a_broken_call_is_refused_saying_where(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=re.escape(where)):
        parse_output(text)


@pytest.mark.parametrize(
    ("choice", "parallel", "output", "reason"),
    [
        ("auto", None, call_text(PARIS), None),
        ("auto", None, "just text", None),
        ("required", None, call_text(PARIS), None),
        ("none", None, "<tool_call> anything", None),
        ("required", None, "just text", "asks for a tool call and the output is text"),
        (
            "auto",
            False,
            call_text(PARIS) + "\n" + call_text(PARIS),
            "parallel_tool_calls is false and the output has 2 calls",
        ),
        ("auto", True, call_text(PARIS) + "\n" + call_text(PARIS), None),
        (
            "auto",
            None,
            call_text(ToolCall("rm_rf", "{}")),
            "tool call 0 (rm_rf): no tool of this request is named 'rm_rf'",
        ),
        (
            "required",
            None,
            call_text(ToolCall("get_weather", '{"city": "Oslo", "days": 30}')),
            "at $.days: 30 is greater than the maximum of 7 (maximum)",
        ),
        (
            "required",
            None,
            call_text(ToolCall("get_weather", '{"days": 3}')),
            "'city' is a required property (required)",
        ),
    ],
)
def test_finished_calls_are_checked_against_the_request(
    choice: str, parallel: bool | None, output: str, reason: str | None
) -> None:
    found = tool_call_violation(TOOLS, choice, parallel, output)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found, found


def test_a_call_cut_at_max_tokens_says_so() -> None:
    cut = call_text(PARIS)[:30]
    reason = tool_call_violation(TOOLS, "required", None, cut, finish_reason="length")
    assert reason is not None and "cut at max_tokens" in reason


@pytest.mark.parametrize("choice", ["auto", "required"])
@pytest.mark.parametrize("parallel", [None, False])
def test_the_grammar_of_the_calls_compiles_with_llama_cpps_parser(
    choice: str, parallel: bool | None
) -> None:
    grammar = tool_grammar(TOOLS, choice, parallel, json_schema_grammar)
    assert grammar is not None
    LlamaGrammar.from_string(grammar, verbose=False)  # raises on a grammar it cannot parse
    root = next(line for line in grammar.splitlines() if line.startswith("root ::="))
    assert ("tool-plain-text" in root) is (choice == "auto")
    assert ('("\\n" tool-call-block)*' in grammar) is (parallel is None)
    assert '"\\"get_weather\\""' in grammar and '"\\"get_time\\""' in grammar


def test_tool_choice_none_runs_unconstrained() -> None:
    assert tool_grammar(TOOLS, "none", None, json_schema_grammar) is None


def test_tools_are_described_in_a_system_message_joined_to_the_conversations() -> None:
    turns = (ChatTurn("system", "Be brief."), ChatTurn("user", "Weather?"))
    rendered = present_tools(turns, TOOLS, "required")
    assert [m["role"] for m in rendered] == ["system", "user"]
    system = rendered[0]["content"]
    assert system.startswith("Be brief.\n\nYou can call functions.")
    assert json.dumps(WEATHER) in system and system.endswith(MUST_CALL)
    alone = present_tools(turns[1:], TOOLS, "auto")
    assert alone[0]["role"] == "system" and alone[0]["content"].endswith("plain text.")
    assert present_tools(turns, TOOLS, "none") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
    ]


def test_history_calls_are_rendered_in_the_text_form_and_results_as_one_user_turn() -> None:
    calls = (PARIS, ToolCall("get_time", "{}", "call_b"))
    turns = (
        ChatTurn("user", "Weather and time?"),
        ChatTurn("assistant", "", calls),
        ChatTurn("tool", "sunny", tool_call_id="call_a"),
        ChatTurn("tool", "noon", tool_call_id="call_b"),
        ChatTurn("user", "Thanks. And tomorrow?"),
    )
    rendered = present_tools(turns, None, None)
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]  # roles alternate
    assert parse_output(rendered[1]["content"]).calls == calls
    assert rendered[2]["content"] == (
        "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nnoon\n</tool_response>"
        "\nThanks. And tomorrow?"
    )


@pytest.mark.parametrize(
    "template", [GEMMA3_TEMPLATE, CHAT_TEMPLATE], ids=["gemma3", "tiny-fixture"]
)
def test_a_tool_loop_renders_with_templates_that_have_no_tool_section(template: str) -> None:
    """Gemma 3's template refuses roles that do not alternate and has no tool section:
    the tool loop's history, presented, renders, with the tools before the question."""
    turns = (
        ChatTurn("system", "Be brief."),
        ChatTurn("user", "Weather in Paris?"),
        ChatTurn("assistant", "", (PARIS,)),
        ChatTurn("tool", "sunny", tool_call_id="call_a"),
    )
    formatter = Jinja2ChatFormatter(template=template, eos_token="<eos>", bos_token="<bos>")
    prompt = formatter(messages=cast(Any, present_tools(turns, TOOLS, "auto"))).prompt
    assert prompt.index(json.dumps(WEATHER)) < prompt.index("Weather in Paris?")
    assert prompt.index(call_text(PARIS)) < prompt.index("<tool_response>\nsunny")
