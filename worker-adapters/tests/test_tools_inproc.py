"""The in-process engine calls tools (API-17) on real models: the tiny fixture model,
once with its own template (no tool section: llorch describes the tools in a system
message) and once with a Qwen 2.5-style template whose tool section writes calls in
llorch's `<tool_call>` form (the template renders the tools and the history itself).
Either way the answer is grammar-forced into calls that the orchestrator's check
accepts, and the tool turns of a history reach the prompt."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from catalog_core.fixtures import TinyModelSpec, write_tiny_model
from worker_adapters.llamacpp_inproc.backend import LlamaBackend, LlamaSettings
from worker_adapters.tools import (
    TOOLS_PREAMBLE,
    call_text,
    parse_output,
    renders_calls_in_text_form,
    tool_call_violation,
)
from worker_adapters.types import ChatTurn, End, GenerateRequest, Sampling, Token, ToolCall

pytestmark = pytest.mark.integration

# Qwen2.5-Instruct's published template, its tool section and tool turns as written,
# the rest shortened.
QWEN_STYLE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user "
    "query.\\n\\nYou are provided with function signatures within <tools></tools> XML "
    "tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function "
    "name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n'
    "</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}"
    "{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' }}{{- tool_call.name }}'
    '{{- \'", "arguments": \' }}{{- tool_call.arguments | tojson }}'
    "{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != 'tool') %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TOOLS = json.dumps([WEATHER])
ROME = ToolCall("get_weather", '{"city": "Rome"}', "call_1")
HISTORY = (
    ChatTurn("user", "Weather in Rome?"),
    ChatTurn("assistant", "", (ROME,)),
    ChatTurn("tool", "heavy rain", tool_call_id="call_1"),
)


@pytest.fixture(scope="module", params=["fixture-template", "qwen-style-template"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinyModelSpec()
    if request.param == "qwen-style-template":
        spec = TinyModelSpec(chat_template=QWEN_STYLE)
    return write_tiny_model(tmp_path_factory.mktemp("tools") / "tiny.gguf", spec)


@pytest.fixture
async def backend(model: Path) -> AsyncIterator[LlamaBackend]:
    engine = LlamaBackend(LlamaSettings(model, ctx=4096))
    await engine.start()
    yield engine
    await engine.close()


async def _prompt(backend: LlamaBackend, request: GenerateRequest) -> str:
    tokens, _ = backend._checked_input(request)  # what the engine tokenizes for it
    return await backend.detokenize(tuple(tokens))


def test_only_a_template_that_writes_calls_in_llorchs_form_renders_tools_itself() -> None:
    assert renders_calls_in_text_form(QWEN_STYLE)
    assert not renders_calls_in_text_form(TinyModelSpec().chat_template)


async def test_the_tools_and_the_history_reach_the_prompt(backend: LlamaBackend) -> None:
    sampling = Sampling(8, tools=TOOLS, tool_choice="auto")
    prompt = await _prompt(backend, GenerateRequest("p", sampling, messages=HISTORY))
    assert json.dumps(WEATHER) in prompt
    # the earlier call, in llorch's form (the template's own writes it without the id)
    assert call_text(ROME) in prompt or call_text(ToolCall(ROME.name, ROME.arguments)) in prompt
    assert "<tool_response>\nheavy rain\n</tool_response>" in prompt
    own_section = "<tools>" in prompt
    assert own_section is renders_calls_in_text_form(backend._template.template)  # type: ignore[union-attr]
    assert (TOOLS_PREAMBLE in prompt) is not own_section
    none = await _prompt(
        backend,
        GenerateRequest("n", Sampling(8, tools=TOOLS, tool_choice="none"), messages=HISTORY),
    )
    assert json.dumps(WEATHER) not in none and '"arguments": {"city": "Rome"}' in none


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_required_call_is_generated_and_passes_the_check(
    backend: LlamaBackend, seed: int
) -> None:
    sampling = Sampling(200, seed=seed, tools=TOOLS, tool_choice="required")
    request = GenerateRequest(f"r{seed}", sampling, messages=HISTORY[:1])
    events = [event async for event in backend.generate(request)]
    assert isinstance(events[-1], End), events[-1]
    output = "".join(event.text for event in events if isinstance(event, Token))
    assert tool_call_violation(TOOLS, "required", None, output) is None, output
    [call] = parse_output(output).calls
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Rome")
