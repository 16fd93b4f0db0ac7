"""Tool calling (API-17): the tool-call text form every engine's calls travel in, its
parser, the check of finished calls against the tools' schemas, and how the in-process
engine presents tools to a model and constrains its answer. Pure: no model, no I/O.

**The text form.** Between the engines and the facade, tool calls are text in the token
stream (the event log, the worker link and the journal carry text only). One block per
call, blocks separated by a newline:

    <tool_call>
    {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`id` is optional (an engine that names its calls may say it; else the facade names
them); keys in this order; whitespace inside the JSON is free. An output that starts
with `<tool_call>` is tool calls and nothing else; any other output is the message's
text. The in-process engine and llama-server generate this form, constrained by
`tool_grammar`.

**The check.** `tool_call_violation` parses a finished output and checks it against the
request: calls where `required` asks for them, at most one unless parallel calls are
allowed, every name one of the tools and every `arguments` object valid against that
tool's `parameters` (jsonschema, 2020-12). A violation is an error
(`SCHEMA_VIOLATION`), never a silently wrong call.

**Presentation.** The in-process engine lets a model's template render the tools and
the history's calls and results itself (`template_inputs`, Hugging Face's shapes) when
its tool section writes calls in this very form (Hermes and Qwen templates:
`renders_calls_in_text_form`). Otherwise, and always on llama-server
(`present_tools`), the tools are described in a system message in the same words for
every chat template (the fixture's and Gemma 3's templates have no tool section): the
list of functions as JSON, then how to call (`TOOLS_PREAMBLE`, `TOOLS_HOW_TO_CALL`),
then "You must call a function." for `required` or "Otherwise answer in plain text."
for `auto`; nothing for `none`. Earlier assistant calls are rendered in the
text form, and `tool` results as a user turn `<tool_response>` block
(joined with a user turn beside it, as templates that need alternating roles require).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from worker_adapters.types import ChatTurn, ToolCall

__all__ = [
    "CALL_CLOSE",
    "CALL_HEADER",
    "CALL_OPEN",
    "CHOICES",
    "MUST_CALL",
    "ParsedOutput",
    "call_text",
    "function_list",
    "parse_output",
    "present_tools",
    "renders_calls_in_text_form",
    "template_inputs",
    "tool_call_violation",
    "tool_grammar",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
CHOICES = ("auto", "none", "required")
# The start of one call's JSON up to its arguments' value: (id), name.
CALL_HEADER = re.compile(
    r'\{\s*(?:"id"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*)?'
    r'"name"\s*:\s*"([^"\\]*)"\s*,\s*"arguments"\s*:\s*'
)
TOOLS_PREAMBLE = (
    "You can call functions. These are the functions, one JSON object each "
    "(name, description, parameters as a JSON schema):"
)
TOOLS_HOW_TO_CALL = (
    "To call functions, answer with nothing but one block per call:\n"
    f'{CALL_OPEN}\n{{"name": "<function name>", "arguments": <the arguments as a JSON '
    f"object>}}\n{CALL_CLOSE}"
)
MUST_CALL = "You must call a function."
_MAY_ANSWER = "Otherwise answer in plain text."
_MAX_SHOWN = 200
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """A finished output: its text (None when it is tool calls) and its calls."""

    content: str | None
    calls: tuple[ToolCall, ...] = ()


def function_list(tools: str) -> list[dict[str, Any]]:
    """The functions of `Sampling.tools` (JSON text), each with name and parameters."""
    functions: list[dict[str, Any]] = json.loads(tools)
    return functions


def call_text(call: ToolCall) -> str:
    """One call in the text form (`arguments` as they are: JSON text of an object)."""
    head = {"id": call.id} if call.id else {}
    header = json.dumps({**head, "name": call.name})[:-1]
    return f'{CALL_OPEN}\n{header}, "arguments": {call.arguments or "{}"}}}\n{CALL_CLOSE}'


def parse_output(text: str) -> ParsedOutput:
    """The calls of an output in the text form, or its text; ValueError saying where an
    output that starts as a call breaks the form."""
    if not text.startswith(CALL_OPEN):
        return ParsedOutput(text)
    calls: list[ToolCall] = []
    position = 0
    while position < len(text):
        if not text.startswith(CALL_OPEN, position):
            raise ValueError(f"expected {CALL_OPEN} at character {position}")
        call, position = _parse_call(text, _skip(text, position + len(CALL_OPEN)))
        calls.append(call)
        position = _skip(text, position)
    return ParsedOutput(None, tuple(calls))


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _parse_call(text: str, position: int) -> tuple[ToolCall, int]:
    header = CALL_HEADER.match(text, position)
    if header is None:
        raise ValueError(
            f'expected {{"name": ..., "arguments": ...}} at character {position} of a tool call'
        )
    start = header.end()
    try:
        arguments, arguments_end = _DECODER.raw_decode(text, start)
    except ValueError:
        raise ValueError(f"the arguments at character {start} are not JSON") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"the arguments at character {start} are not a JSON object")
    end = _skip(text, arguments_end)
    if not text.startswith("}", end):
        raise ValueError(f"expected }} after the arguments at character {end}")
    end = _skip(text, end + 1)
    if not text.startswith(CALL_CLOSE, end):
        raise ValueError(f"expected {CALL_CLOSE} at character {end}")
    call_id = json.loads(f'"{header.group(1)}"') if header.group(1) is not None else ""
    call = ToolCall(header.group(2), text[start:arguments_end], call_id)
    return call, end + len(CALL_CLOSE)


def tool_call_violation(
    tools: str,
    choice: str | None,
    parallel: bool | None,
    output: str,
    *,
    finish_reason: str = "stop",
) -> str | None:
    """Why `output` is not an answer the request allows (see the module docstring), or
    None. With `tool_choice: none` every output is text."""
    if (choice or "auto") == "none":
        return None
    cut = " (cut at max_tokens: raise max_tokens)" if finish_reason == "length" else ""
    try:
        parsed = parse_output(output)
    except ValueError as exc:
        return f"the output is not a well-formed tool call{cut}: {exc}"
    if choice == "required" and not parsed.calls:
        return f"tool_choice asks for a tool call and the output is text{cut}"
    if parallel is False and len(parsed.calls) > 1:
        return f"parallel_tool_calls is false and the output has {len(parsed.calls)} calls"
    by_name = {f["name"]: f for f in function_list(tools)}
    for index, call in enumerate(parsed.calls):
        reason = _call_violation(by_name, call)
        if reason is not None:
            return f"tool call {index} ({call.name}): {reason}"
    return None


def _call_violation(by_name: Mapping[str, Mapping[str, Any]], call: ToolCall) -> str | None:
    function = by_name.get(call.name)
    if function is None:
        return f"no tool of this request is named {call.name!r}"
    instance = json.loads(call.arguments)
    try:
        validator = Draft202012Validator(function.get("parameters") or {"type": "object"})
        error = best_match(validator.iter_errors(instance))
    except (SchemaError, RecursionError) as exc:
        return f"its parameters schema cannot be checked: {_shorten(str(exc))}"
    if error is None:
        return None
    return (
        f"the arguments do not satisfy the tool's parameters at {error.json_path}: "
        f"{_shorten(error.message)} ({error.validator})"
    )


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


# -- the in-process engine ---------------------------------------------------------------


def tool_grammar(
    tools: str, choice: str | None, parallel: bool | None, convert: Callable[[str], str]
) -> str | None:
    """The GBNF an in-process generation runs under: tool calls in the text form whose
    JSON `convert` (llama.cpp's JSON-schema converter) makes from one schema over the
    tools (each call: that tool's name and its parameters), one call or several
    (`parallel` not False); for `auto` that or plain text not starting with `<` (so it
    cannot be mistaken for a call). None for `none`: unconstrained text."""
    choice = choice or "auto"
    if choice == "none":
        return None
    alternatives = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in function_list(tools)
    ]
    schema = alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}
    calls = re.sub(r"^root ::=", "tool-call-object ::=", convert(json.dumps(schema)), flags=re.M)
    block = f'"{CALL_OPEN}\\n" tool-call-object "\\n{CALL_CLOSE}"'
    rules = [calls, f"tool-call-block ::= {block}"]
    more = ' ("\\n" tool-call-block)*' if parallel is not False else ""
    rules.append(f"tool-calls ::= tool-call-block{more}")
    if choice == "auto":
        rules += ["root ::= tool-calls | tool-plain-text", "tool-plain-text ::= ([^<] [^\\x00]*)?"]
    else:
        rules.append("root ::= tool-calls")
    return "\n".join(rules) + "\n"


def present_tools(
    messages: Sequence[ChatTurn], tools: str | None, choice: str | None
) -> list[dict[str, str]]:
    """The messages a chat template renders for a request with tools (see the module
    docstring): a system message describing the tools (unless `choice` is `none`),
    earlier calls in the text form, tool results as user turns."""
    rendered: list[dict[str, str]] = []
    for turn in messages:
        if turn.role == "tool":
            _append_user(rendered, f"<tool_response>\n{turn.content}\n</tool_response>")
        elif turn.tool_calls:
            blocks = "\n".join(call_text(call) for call in turn.tool_calls)
            content = f"{turn.content}\n{blocks}" if turn.content else blocks
            rendered.append({"role": turn.role, "content": content})
        elif turn.role == "user" and rendered and rendered[-1].get("from_tool"):
            _append_user(rendered, turn.content)
        else:
            rendered.append({"role": turn.role, "content": turn.content})
    for message in rendered:
        message.pop("from_tool", None)
    if tools is None or (choice or "auto") == "none":
        return rendered
    return _with_instructions(rendered, tools, choice or "auto")


def _append_user(rendered: list[dict[str, str]], content: str) -> None:
    """A tool result joins the user turn before it when that one came from a tool too
    (templates that need alternating roles refuse two user turns in a row)."""
    last = rendered[-1] if rendered else None
    if last is not None and last["role"] == "user" and last.get("from_tool"):
        last["content"] += "\n" + content
        return
    rendered.append({"role": "user", "content": content, "from_tool": "1"})


def _with_instructions(
    rendered: list[dict[str, str]], tools: str, choice: str
) -> list[dict[str, str]]:
    listing = "\n".join(json.dumps(f, ensure_ascii=False) for f in function_list(tools))
    closing = MUST_CALL if choice == "required" else _MAY_ANSWER
    text = f"{TOOLS_PREAMBLE}\n{listing}\n{TOOLS_HOW_TO_CALL}\n{closing}"
    if rendered and rendered[0]["role"] == "system":
        first = {"role": "system", "content": f"{rendered[0]['content']}\n\n{text}"}
        return [first, *rendered[1:]]
    return [{"role": "system", "content": text}, *rendered]


def renders_calls_in_text_form(template: str) -> bool:
    """A chat template with a tool section that writes calls in the text form (the
    Hermes and Qwen templates: `<tool_call>` blocks of a name and an arguments
    object): it presents the tools itself."""
    return "tools" in template and CALL_OPEN in template and CALL_CLOSE in template


def template_inputs(
    messages: Sequence[ChatTurn], tools: str | None, choice: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools a template with a tool section renders, in Hugging Face's
    shapes: calls with their arguments as objects, tool turns as `tool` messages; no
    tools for `tool_choice: none`."""
    rendered: list[dict[str, Any]] = []
    for turn in messages:
        message: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.loads(call.arguments)},
                }
                for call in turn.tool_calls
            ]
        if turn.tool_call_id is not None:
            message["tool_call_id"] = turn.tool_call_id
        rendered.append(message)
    if tools is None or (choice or "auto") == "none":
        return rendered, None
    return rendered, [{"type": "function", "function": f} for f in function_list(tools)]
