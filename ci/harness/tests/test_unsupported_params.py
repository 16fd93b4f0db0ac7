"""No request field is silently ignored, end to end (API-16, API-09, API-13; issue 12).

One orchestrator and one pool manager with three pools: the in-process engine
(`llamacpp-inproc`, alias `default`), the mock engine (alias `default` too, and `m`:
it honours only `max_tokens` and `seed`), and a real llama-server started as an
`openai-compatible` engine (alias `oc`). A parameter no pool of the model honours is
refused before the stream starts with 400 UNSUPPORTED_PARAM naming it, on `/v2` in
llorch's envelope and on `/v1` in OpenAI's error body (`param`); when only some pools
honour it the job runs on those; the capabilities endpoint lists the honoured
parameters from the same matrix; the facade's usage is the engine's own count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from provisioners.testing import llama_server_for_tests
from worker_adapters.capabilities import honoured

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = str(llama_server_for_tests().command[0])
    command = [server, "-m", "{model}", "--host", "{host}", "--port", "{port}"]
    command += ["-c", "{ctx}", "-np", "{slots}", "-t", "1"]
    openai_compatible = {
        "id": "oc-1",
        "engine": "openai-compatible",
        "engine_command": command,
        "model": str(tiny_model),
        "ctx": 1024,
        "slots": 1,
        "aliases": ["oc"],
    }
    mock = {"id": "mock-1", "engine": "mock", "ctx": 4096, "slots": 1}
    cluster = Cluster(
        tmp_path_factory.mktemp("params"),
        {
            "host-a": [
                tiny_pool("tiny-a", tiny_model),
                {**mock, "aliases": ["m", "default"]},
                openai_compatible,
            ]
        },
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)


def test_a_parameter_no_pool_honours_is_refused_naming_it_before_the_stream(
    cluster: Cluster,
) -> None:
    body = {"model": "m", "prompt": "x", "max_tokens": 2, "top_k": 5}
    refused = cluster.submit(body)
    assert refused.status_code == 400, refused.text
    error = refused.json()
    assert error["code"] == "UNSUPPORTED_PARAM" and error["details"][0]["field"] == "top_k"
    assert any(
        d.get("check") == "params" and d.get("pool_id") == "mock-1" for d in error["details"]
    )
    streamed = cluster.submit(body, Accept="text/event-stream")
    assert streamed.status_code == 400 and streamed.json()["code"] == "UNSUPPORTED_PARAM"
    assert streamed.headers["content-type"].startswith("application/json")  # no stream began


def test_a_job_runs_only_on_the_pools_that_honour_its_parameters(cluster: Cluster) -> None:
    for attempt in range(3):
        task = cluster.submit(
            {"model": "default", "prompt": f"go {attempt}", "max_tokens": 2, "top_k": 5}
        )
        assert task.status_code == 202, task.text
        events = cluster.events(task.json()["task_id"])
        assert events[0].data["pool_id"] == "tiny-a" and events[-1].name == "end"


def test_the_facade_refuses_tools_and_unknown_fields_in_openais_shape(
    client: openai.OpenAI,
) -> None:
    messages: Any = [{"role": "user", "content": "x"}]
    tool: Any = {"type": "function", "function": {"name": "f", "parameters": {}}}
    for model in ("m", "oc"):  # the mock and an openai-compatible engine refuse tools
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=model, messages=messages, tools=[tool])
        assert caught.value.code == "UNSUPPORTED_PARAM" and caught.value.param == "tools"
    history: Any = [
        *messages,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:  # tool turns need tools too
        client.chat.completions.create(model="oc", messages=history)
    assert caught.value.code == "UNSUPPORTED_PARAM" and caught.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="default", messages=messages, logit_bias={"1": 5})
    assert caught.value.code == "UNSUPPORTED_PARAM" and caught.value.param == "logit_bias"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="default", prompt="x", extra_body={"suffix": "y"})
    assert caught.value.code == "UNSUPPORTED_PARAM" and caught.value.param == "suffix"


def test_the_facade_names_its_own_field_for_a_refused_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_object"},
        )
    assert caught.value.code == "UNSUPPORTED_PARAM" and caught.value.param == "response_format"


def test_capabilities_list_the_parameters_each_pool_honours(cluster: Cluster) -> None:
    with cluster.client() as client:
        capabilities = client.get("/v2/meta/capabilities").json()
    pools = {pool["pool_id"]: pool for pool in capabilities["pools"]}
    for pool_id, engine in (
        ("tiny-a", "llamacpp-inproc"),
        ("mock-1", "mock"),
        ("oc-1", "openai-compatible"),
    ):
        for workload in ("completion", "chat"):
            assert pools[pool_id]["params"][workload] == sorted(honoured(engine, workload))
    assert "top_k" not in pools["oc-1"]["params"]["chat"]
    engines = {engine["engine"]: engine for engine in capabilities["engines"]}
    assert engines["mock"]["params"]["completion"] == ["max_tokens", "seed"]


def test_usage_through_an_openai_compatible_pool_is_the_engines_own(
    client: openai.OpenAI, cluster: Cluster
) -> None:
    messages: Any = [{"role": "user", "content": "Hello there, how are you?"}]
    reply = client.chat.completions.create(model="oc", messages=messages, max_tokens=4, seed=1)
    endpoint = cluster.pool("oc-1")["replicas"][0]["endpoint"]
    direct = httpx.post(
        f"http://{endpoint}/v1/chat/completions",
        json={"messages": messages, "max_tokens": 4, "seed": 1},
        timeout=60,
    ).json()
    assert reply.usage is not None and direct["usage"]["prompt_tokens"] > 0
    assert reply.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert reply.usage.completion_tokens == direct["usage"]["completion_tokens"]
    streamed = list(
        client.chat.completions.create(
            model="oc",
            messages=messages,
            max_tokens=4,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = streamed[-1].usage
    assert usage is not None and usage.prompt_tokens == direct["usage"]["prompt_tokens"]
