"""Tool calling on the OpenAI facade (API-17): the request's `tools`, `tool_choice`,
`parallel_tool_calls` and the tool turns of its history become the task's domain values,
and the engine's output (tool calls in `worker_adapters.tools`' text form) becomes
OpenAI's `message.tool_calls` or, streamed, `delta.tool_calls` chunks.

Requests: a named `tool_choice` becomes `required` with that function alone (the
function must be one of `tools`); `tool_choice` or `parallel_tool_calls` without `tools`
is refused (INVALID_PARAMS), as are `response_format` beside tools the model may call,
`logprobs` beside them, and a `parameters` that is no JSON Schema. History with
`tool_calls` or `tool` turns needs the engine's `tools` as tools do (placement's
`params` check).

Answers: a call's id is the engine's when it named one, else
`call_<task id>_<index>`. `ToolStream` splits a streamed output as it comes: text
before it can tell (the first characters of `<tool_call>`) is held back; a call's
name goes out in its first chunk, its arguments in fragments as the engine writes
them. A malformed call stops the deltas; the task's end then brings the
SCHEMA_VIOLATION that the orchestrator found checking the whole output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from specs.api.models import OpenAIChatMessage, OpenAIChatRequest
from worker_adapters import ChatTurn, ToolCall
from worker_adapters.tools import CALL_CLOSE, CALL_HEADER, CALL_OPEN, ParsedOutput, parse_output

from orchestratord.errors import ApiError, Detail
from orchestratord.tasks import TaskSpec

__all__ = [
    "ArgumentsDelta",
    "CallStart",
    "ContentDelta",
    "StreamPiece",
    "ToolStream",
    "call_id",
    "message_of",
    "needs_tools",
    "tool_sampling",
    "with_tools",
]


# An upper bound on the tokens of the tools' presentation beyond the tools' own JSON.
_PRESENTATION_TOKENS = 512


def _invalid(field: str, reason: str) -> ApiError:
    return ApiError("INVALID_PARAMS", f"{field}: {reason}", details=[Detail(reason, field=field)])


def tool_sampling(body: OpenAIChatRequest) -> dict[str, Any]:
    """The `Sampling` fields of the request's tools (empty without tools); ApiError
    INVALID_PARAMS for a choice or a schema the request cannot have."""
    choice = body.tool_choice
    if not body.tools:
        if choice is not None or body.parallel_tool_calls is not None:
            field = "tool_choice" if choice is not None else "parallel_tool_calls"
            raise _invalid(field, "needs tools")
        return {}
    functions = [tool.function.model_dump(exclude_none=True) for tool in body.tools]
    for index, function in enumerate(functions):
        function.pop("strict", None)
        _check_schema(index, function.get("parameters"))
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise _invalid("tools", "two tools have the same name")
    mode = "auto" if choice is None else choice if isinstance(choice, str) else "required"
    if not isinstance(choice, str | None):
        wanted = choice.function.name
        functions = [f for f in functions if f["name"] == wanted]
        if not functions:
            raise _invalid("tool_choice", f"{wanted!r} is not one of the tools")
    if body.response_format is not None and mode != "none":
        raise _invalid("response_format", "give response_format or tools the model may call")
    if body.logprobs and mode != "none":
        raise _invalid("logprobs", "logprobs are not offered with tools the model may call")
    return {
        "tools": json.dumps(functions, ensure_ascii=False),
        "tool_choice": mode,
        "parallel_tool_calls": body.parallel_tool_calls,
    }


def _check_schema(index: int, schema: Any) -> None:
    if schema is None:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise _invalid(
            f"tools.{index}.function.parameters", f"not a JSON Schema: {exc.message}"
        ) from None


def needs_tools(body: OpenAIChatRequest) -> bool:
    """The history holds tool calls or results: only an engine with tools can render it."""
    return any(m.role == "tool" or m.tool_calls for m in body.messages)


def _turn(message: OpenAIChatMessage, content: str) -> ChatTurn:
    role = "system" if message.role == "developer" else message.role
    calls = tuple(
        ToolCall(c.function.name, c.function.arguments, c.id) for c in message.tool_calls or ()
    )
    return ChatTurn(role, content, calls, message.tool_call_id)


def with_tools(spec: TaskSpec, body: OpenAIChatRequest, contents: Sequence[str]) -> TaskSpec:
    """`spec` with the request's tools in its sampling and its messages' tool calls and
    results (`contents`: each message's text as the task has it)."""
    sampling = tool_sampling(body)
    if not sampling and not needs_tools(body):
        return spec
    for index, message in enumerate(body.messages):
        _check_turn(index, message)
    turns = tuple(_turn(m, c) for m, c in zip(body.messages, contents, strict=True))
    request = replace(
        spec.request, sampling=replace(spec.request.sampling, **sampling), messages=turns
    )
    # The prompt grows by the tools' description and the calls of the history: at most
    # a token per byte (as `prompt_token_bound`), plus the instructions' own text.
    described = len(sampling.get("tools", "").encode()) + _PRESENTATION_TOKENS
    history = sum(len(c.arguments.encode()) + len(c.name) + 64 for t in turns for c in t.tool_calls)
    needs = replace(spec.needs, tokens=spec.needs.tokens + described + history)
    return replace(spec, request=request, needs=needs)


def _check_turn(index: int, message: OpenAIChatMessage) -> None:
    if message.tool_calls and message.role != "assistant":
        raise _invalid(f"messages.{index}.tool_calls", "only an assistant turn makes calls")
    if (message.role == "tool") != (message.tool_call_id is not None):
        raise _invalid(f"messages.{index}.tool_call_id", "a tool turn, and only one, needs it")
    for number, call in enumerate(message.tool_calls or ()):
        try:
            arguments = json.loads(call.function.arguments)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            field = f"messages.{index}.tool_calls.{number}.function.arguments"
            raise _invalid(field, "not JSON text of an object")


def call_id(task_id: str, index: int, engine_id: str = "") -> str:
    return engine_id or f"call_{task_id}_{index}"


def message_of(output: str, task_id: str, choice: str | None) -> tuple[dict[str, Any], bool]:
    """The non-streamed `message` of an output and whether it holds calls (the output
    was checked by the orchestrator: it parses)."""
    parsed = ParsedOutput(output) if (choice or "auto") == "none" else _parsed_or_text(output)
    if not parsed.calls:
        return {"role": "assistant", "content": parsed.content}, False
    calls = [
        {
            "id": call_id(task_id, index, call.id),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(parsed.calls)
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}, True


def _parsed_or_text(output: str) -> ParsedOutput:
    try:
        return parse_output(output)
    except ValueError:  # not reached: the orchestrator refused such an output
        return ParsedOutput(output)


# -- streaming -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    index: int
    fragment: str


StreamPiece = ContentDelta | CallStart | ArgumentsDelta


class ToolStream:
    """Splits one streamed output into text and call pieces (module docstring)."""

    def __init__(self, task_id: str) -> None:
        self._task_id = task_id
        self._buffer = ""
        self._mode = "undecided"  # | text | open | header | arguments | tail | broken
        self._calls = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False

    @property
    def calls(self) -> int:
        return self._calls

    def finish(self) -> list[StreamPiece]:
        """At the end: text still held back (a short output that began like a call)."""
        if self._mode == "undecided" and self._buffer:
            return [ContentDelta(self._buffer)]
        return []

    def feed(self, text: str) -> list[StreamPiece]:
        self._buffer += text
        pieces: list[StreamPiece] = []
        while self._step(pieces):
            pass
        return pieces

    def _step(self, pieces: list[StreamPiece]) -> bool:
        """One move of the state machine; False when it needs more text."""
        buffer, mode = self._buffer, self._mode
        if mode == "undecided":
            if CALL_OPEN.startswith(buffer) and len(buffer) < len(CALL_OPEN):
                return False
            self._mode = "open" if buffer.startswith(CALL_OPEN) else "text"
            return True
        if mode == "text":
            if buffer:
                pieces.append(ContentDelta(buffer))
            self._buffer = ""
            return False
        if mode == "open":
            return self._open()
        if mode == "header":
            return self._header(pieces)
        if mode == "arguments":
            return self._arguments(pieces)
        if mode == "tail":
            return self._tail()
        self._buffer = ""  # broken: the end brings the error
        return False

    def _open(self) -> bool:
        stripped = self._buffer.lstrip()
        if len(stripped) < len(CALL_OPEN):
            return self._still(CALL_OPEN.startswith(stripped))
        if not stripped.startswith(CALL_OPEN):
            self._mode = "broken"
            return True
        self._buffer, self._mode = stripped[len(CALL_OPEN) :].lstrip(), "header"
        return True

    def _header(self, pieces: list[StreamPiece]) -> bool:
        self._buffer = self._buffer.lstrip()
        match = CALL_HEADER.match(self._buffer)
        if match is None:
            return self._still(len(self._buffer) < 512 and not self._buffer.startswith("{}"))
        engine_id = json.loads(f'"{match.group(1)}"') if match.group(1) is not None else ""
        index = self._calls
        pieces.append(CallStart(index, call_id(self._task_id, index, engine_id), match.group(2)))
        self._buffer, self._mode = self._buffer[match.end() :], "arguments"
        self._depth, self._in_string, self._escaped = 0, False, False
        return True

    def _still(self, possible: bool) -> bool:
        if not possible:
            self._mode = "broken"
            return True
        return False

    def _arguments(self, pieces: list[StreamPiece]) -> bool:
        """Scans the arguments object to its closing brace, passing its text on."""
        if self._depth == 0:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
        end = None
        for position, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = position + 1
                    break
            elif self._depth == 0 and not char.isspace():
                self._mode = "broken"
                return True
        fragment = self._buffer if end is None else self._buffer[:end]
        pieces.append(ArgumentsDelta(self._calls, fragment))
        if end is None:
            self._buffer = ""
            return False
        self._buffer, self._mode = self._buffer[end:], "tail"
        return True

    def _tail(self) -> bool:
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        if stripped[0] != "}":
            self._mode = "broken"
            return True
        rest = stripped[1:].lstrip()
        if len(rest) < len(CALL_CLOSE):
            return self._still(CALL_CLOSE.startswith(rest))
        if not rest.startswith(CALL_CLOSE):
            self._mode = "broken"
            return True
        self._calls += 1
        self._buffer, self._mode = rest[len(CALL_CLOSE) :], "open"
        return True
