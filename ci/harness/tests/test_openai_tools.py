"""Tool calling on the OpenAI facade (API-17, issue 12 item 3), with the official
`openai` client, unchanged, against real engines through orchestratord (the loop and
its tools: `ci_harness.tool_loop`, shared with the vLLM pools' modules).

One cluster, two pools of the tiny fixture model: the in-process engine (alias `ip`)
and a real llama-server (alias `ls`, started by the pool manager with `--jinja`). The
tiny random-weight model never chooses a tool by chance, so the client's loop (call ->
`tool_calls` -> the client appends the assistant turn and a `tool` turn with the
result -> a second call gets the answer) runs with `tool_choice` `required` and named
(grammar-forced), streamed and not; `auto` and `none` are checked for their shape.
A tool whose `parameters` the grammar cannot enforce whole (`maximum`) shows that a
call breaking them is refused with SCHEMA_VIOLATION, never passed on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from ci_harness.tool_loop import (
    CHOICES,
    CLOCK,
    WEATHER,
    check_auto_and_none_answer_in_text,
    check_tool_result_reaches_the_prompt,
    run_tool_loop,
    streamed,
)
from provisioners.testing import llama_server_for_tests

pytestmark = pytest.mark.integration

FORMS = ("ip", "ls")  # the model's alias on each pool


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = list(llama_server_for_tests().command)
    pools = [
        tiny_pool("tools-ip", tiny_model, ctx=4096, aliases=["ip"]),
        tiny_pool(
            "tools-ls",
            tiny_model,
            ctx=4096,
            aliases=["ls"],
            engine="llamacpp",
            engine_command=server,
        ),
    ]
    cluster = Cluster(tmp_path_factory.mktemp("tools"), {"host-a": pools})
    cluster.start()
    cluster.wait_ready(["tools-ip", "tools-ls"], timeout_s=120)
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("choice", list(CHOICES))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_clients_tool_loop_calls_the_tool_then_answers_with_its_result(
    client: openai.OpenAI, form: str, choice: str, stream: bool
) -> None:
    run_tool_loop(client, form, choice, stream)


@pytest.mark.parametrize("form", FORMS)
def test_the_tool_result_reaches_the_prompt(client: openai.OpenAI, form: str) -> None:
    check_tool_result_reaches_the_prompt(client, form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_and_none_answer_in_text_of_the_right_shape(
    client: openai.OpenAI, form: str, stream: bool
) -> None:
    check_auto_and_none_answer_in_text(client, form, stream)


@pytest.mark.parametrize("form", FORMS)
def test_a_call_that_breaks_the_tools_parameters_is_a_schema_violation(
    client: openai.OpenAI, form: str
) -> None:
    request: Any = {
        "model": form,
        "messages": [{"role": "user", "content": "What time is it?"}],
        "tools": [CLOCK],
        "tool_choice": "required",
        "max_tokens": 200,
        "seed": 1,
    }
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.code == "SCHEMA_VIOLATION"
    assert "$.zone" in caught.value.message and "maximum" in caught.value.message
    with pytest.raises(openai.APIError) as in_stream:
        streamed(client.chat.completions.create(stream=True, **request))
    assert "SCHEMA_VIOLATION" in str(in_stream.value.body) or "$.zone" in in_stream.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_a_tool_request_that_cannot_be_answered_is_a_bad_request_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    messages: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="ip", messages=messages, max_tokens=2, **extra)
    assert caught.value.code == "INVALID_PARAMS" and caught.value.param == param
