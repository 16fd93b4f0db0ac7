"""A chat with tools for an HTTP engine that llorch constrains itself (llama-server and
vLLM's server): the messages with the tools described (`tools.present_tools`) and the
GBNF grammar of the calls (`tools.tool_grammar`, made with llama.cpp's JSON-schema
converter), which the adapter sends in its engine's field for a grammar (llama-server
`grammar`, vLLM `structured_outputs.grammar`). Pure but for the converter's import."""

from __future__ import annotations

from dataclasses import dataclass

from worker_adapters.constraints import json_schema_converter
from worker_adapters.tools import present_tools, tool_grammar
from worker_adapters.types import Failed, GenerateRequest

__all__ = ["ToolChat", "tool_chat"]


@dataclass(frozen=True, slots=True)
class ToolChat:
    """The chat's messages as the engine gets them, and the grammar of its answer (None
    for `tool_choice: none` or a history with tool turns and no tools)."""

    messages: list[dict[str, str]]
    grammar: str | None


def tool_chat(request: GenerateRequest) -> ToolChat | Failed | None:
    """The chat of a request with tools or tool turns; None for one with neither (its
    messages go as they are); a `Failed` when its calls cannot be constrained here."""
    sampling = request.sampling
    turns = request.messages or ()
    if sampling.tools is None and not any(t.tool_calls or t.role == "tool" for t in turns):
        return None
    messages = present_tools(turns, sampling.tools, sampling.tool_choice)
    if sampling.tools is None or sampling.tool_choice == "none":
        return ToolChat(messages, None)
    convert = json_schema_converter()
    if convert is None:
        reason = "tools: llama.cpp's JSON-schema converter (llama-cpp-python) is not installed"
        return Failed("UNSUPPORTED_PARAM", reason, False, True)
    try:
        grammar = tool_grammar(
            sampling.tools, sampling.tool_choice, sampling.parallel_tool_calls, convert
        )
    except ValueError as exc:
        return Failed("INVALID_PARAMS", f"tools: {exc}", False, True)
    return ToolChat(messages, grammar)
