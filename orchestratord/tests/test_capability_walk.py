"""No request field is silently ignored (API-16; issue 12): the honoured-or-refused walk.

Every field of the request schemas (`TaskRequest`, the facade's chat, completion and
embedding requests, chat messages), read from the served API document itself, has an
entry in `orchestratord.http.request_fields`: honoured by llorch, or a parameter of the
capability matrix that the job then needs. Every parameter, against every engine kind
and workload, is either honoured (the adapter's outgoing engine request carries its
value, or the in-process backend applies it) or refused with UNSUPPORTED_PARAM naming
it: by placement's `params` check and again by the adapter or backend before any
engine call. A new schema field or parameter without an entry fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

import pytest
import yaml
from orchestratord.errors import ApiError
from orchestratord.http.body import parse_body
from orchestratord.http.openai import facade_spec
from orchestratord.http.request_fields import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDING_FIELDS,
    MESSAGE_FIELDS,
    TASK_FIELDS,
    Honoured,
)
from orchestratord.http.translate import task_from_wire
from orchestratord.placement import JobNeeds, PoolView, ReplicaView, place
from orchestratord.placement.checks import params as params_check
from specs.api.models import TaskRequest
from worker_adapters import ChatTurn, Endpoint, Failed, GenerateRequest, Sampling, Token
from worker_adapters._http_adapter import HttpAdapterBase, StreamPlan
from worker_adapters.capabilities import ENGINES, PARAMS, features, honoured, refusal
from worker_adapters.constraints import json_schema_grammar
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.llamacpp_inproc.backend import generation_plan
from worker_adapters.mock.backend import WORDS, MockBackend
from worker_adapters.native.translate import request_from_wire, request_to_wire
from worker_adapters.openai_compat.adapter import LlamaCppServerAdapter, OpenAIAdapter
from worker_adapters.tgi import TgiAdapter
from worker_adapters.tools import MUST_CALL
from worker_adapters.triton import TritonAdapter
from worker_adapters.vllm import VllmAdapter
from worker_adapters.vllm_inproc.plan import sampling_args

from specs import openapi_document

# A distinctive value per parameter (none equals a default or another's value), as the
# domain `Sampling` holds it; `logit_bias` has no Sampling field (only the facade takes
# it, and no engine honours it): placement alone decides it.
SAMPLES: dict[str, Any] = {
    "max_tokens": 13,
    "temperature": 0.37,
    "top_k": 17,
    "top_p": 0.61,
    "min_p": 0.07,
    "repeat_penalty": 1.23,
    "presence_penalty": 0.41,
    "frequency_penalty": 0.53,
    "seed": 4242,
    "stop": ("zz-stop",),
    "logprobs": 7,
    "grammar": 'root ::= "qq"',
    "json_schema": '{"type": "object", "properties": {"qqkey": {"type": "string"}}}',
    "tools": '[{"name": "qqtool", "parameters": {"type": "object"}}]',
    "tool_choice": "required",
}
EXTRA_PARAMS = frozenset(PARAMS) - frozenset(SAMPLES)
# What each schema field is set to when walked (`TaskRequest` and facade JSON values).
V2_VALUES: dict[str, Any] = {
    **{
        name: value
        for name, value in SAMPLES.items()
        if name not in ("stop", "json_schema", "tools", "tool_choice")
    },
    "stop": ["zz-stop"],
    "json_schema": {"type": "object"},
}
FACADE_VALUES: dict[str, Any] = {
    "max_tokens": 13,
    "max_completion_tokens": 13,
    "temperature": 0.37,
    "top_p": 0.61,
    "stop": "zz-stop",
    "seed": 4242,
    "presence_penalty": 0.41,
    "frequency_penalty": 0.53,
    "logprobs": True,
    "top_logprobs": 3,
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "tool_choice": "required",
    "parallel_tool_calls": True,
    "logit_bias": {"1": 1.0},
}
COMPLETION_VALUES = {**FACADE_VALUES, "logprobs": 3}
BASE_MAX_TOKENS = 5
CHAT = (ChatTurn("user", "hi"),)
ENDPOINT = Endpoint("127.0.0.1:9")  # never dialled: only request mapping is exercised


def _schema_properties(name: str) -> set[str]:
    document = yaml.safe_load(openapi_document())
    return set(document["components"]["schemas"][name]["properties"])


@pytest.mark.parametrize(
    ("schema", "table"),
    [
        ("TaskRequest", TASK_FIELDS),
        ("OpenAIChatRequest", CHAT_FIELDS),
        ("OpenAICompletionRequest", COMPLETION_FIELDS),
        ("OpenAIEmbeddingRequest", EMBEDDING_FIELDS),
        ("OpenAIChatMessage", MESSAGE_FIELDS),
    ],
)
def test_every_field_of_the_request_schemas_says_how_it_is_honoured(
    schema: str, table: Mapping[str, Honoured]
) -> None:
    assert _schema_properties(schema) == set(table), f"{schema}: fields without an entry"
    for name, entry in table.items():
        assert entry.param is None or entry.param in PARAMS, f"{schema}.{name}: {entry.param}"


def test_every_parameter_has_a_sample_or_is_a_facade_only_parameter() -> None:
    assert {"logit_bias"} == EXTRA_PARAMS
    assert not EXTRA_PARAMS & set(TaskRequest.model_fields)


@pytest.mark.parametrize("field", ["tools", "tool_choice", "parallel_tool_calls", "logit_bias"])
def test_v2_tasks_offer_no_tool_calling_and_refuse_its_fields_naming_them(field: str) -> None:
    """Tools are an OpenAI-facade feature (API-17): `/v2/tasks` refuses their fields as
    fields its schema does not have (400 INVALID_PARAMS naming the field)."""
    body = json.dumps({"model": "m", "prompt": "hi", field: FACADE_VALUES[field]}).encode()
    with pytest.raises(ApiError) as refused:
        parse_body(TaskRequest, body, "task")
    assert refused.value.status == 400 and refused.value.details[0].field == field


def _v2_needs(field: str, value: Any, workload: str = "completion") -> frozenset[str]:
    body: dict[str, Any] = {"model": "m", "workload": workload, field: value}
    if workload == "chat":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    spec = task_from_wire(
        TaskRequest.model_validate(body), correlation_id="c", max_prompt_bytes=1 << 20
    )
    return spec.needs.params


@pytest.mark.parametrize(
    "field", sorted(name for name, entry in TASK_FIELDS.items() if entry.param is not None)
)
def test_each_v2_parameter_field_becomes_a_parameter_the_job_needs(field: str) -> None:
    assert TASK_FIELDS[field].param in _v2_needs(field, V2_VALUES[field])


def test_a_v2_task_without_sampling_fields_needs_max_tokens_only() -> None:
    assert _v2_needs("priority", "batch") == {"max_tokens"}


def _facade_needs(route: str, field: str, value: Any) -> frozenset[str]:
    body: dict[str, Any] = {"model": "m", field: value}
    if route == "chat":
        body["messages"] = [{"role": "user", "content": "hi"}]
        if field == "top_logprobs":
            body["logprobs"] = True
        if field in ("tool_choice", "parallel_tool_calls"):  # they need tools
            body["tools"] = FACADE_VALUES["tools"]
    else:
        body["prompt"] = "hi"
    return facade_spec(route, json.dumps(body).encode()).needs.params


@pytest.mark.parametrize(
    ("route", "field"),
    [
        *(("chat", f) for f, entry in CHAT_FIELDS.items() if entry.param is not None),
        *(("completion", f) for f, entry in COMPLETION_FIELDS.items() if entry.param is not None),
    ],
)
def test_each_facade_parameter_field_becomes_a_parameter_the_job_needs(
    route: str, field: str
) -> None:
    table = CHAT_FIELDS if route == "chat" else COMPLETION_FIELDS
    values = FACADE_VALUES if route == "chat" else COMPLETION_VALUES
    assert table[field].param in _facade_needs(route, field, values[field])


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("chat", {"functions": [{"name": "f"}]}, "functions"),
        ("completion", {"suffix": "x"}, "suffix"),
        (
            "chat",
            {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},
            "messages.0.name",
        ),
        (
            "chat",
            {"messages": [{"role": "user", "content": "hi", "function_call": {"name": "f"}}]},
            "messages.0.function_call",
        ),
    ],
)
def test_a_field_llorch_does_not_carry_is_refused_naming_it(
    route: str, body: dict[str, Any], field: str
) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    if route == "completion":
        request = {"model": "m", "prompt": "hi", **body}
    with pytest.raises(ApiError) as refused:
        facade_spec(route, json.dumps(request).encode())
    assert refused.value.code == "UNSUPPORTED_PARAM" and refused.value.status == 400
    assert refused.value.details[0].field == field


def test_top_logprobs_without_logprobs_is_refused_not_ignored() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}
    with pytest.raises(ApiError) as refused:
        facade_spec("chat", json.dumps(body).encode())
    assert refused.value.code == "INVALID_PARAMS"
    assert refused.value.details[0].field == "top_logprobs"


# -- every parameter against every engine kind --------------------------------------------


def _cases() -> Iterator[tuple[str, str, str]]:
    for engine, row in sorted(ENGINES.items()):
        for workload in ("completion", "chat"):
            if workload in row.honours:
                for param in sorted(PARAMS):
                    yield engine, workload, param


CASES = list(_cases())


def _request(workload: str, param: str | None) -> GenerateRequest:
    """A request setting `param` to its sample (`tool_choice` with tools: it chooses
    among them)."""
    fields: dict[str, Any] = {"max_tokens": BASE_MAX_TOKENS}
    if param is not None:
        fields[param] = SAMPLES[param]
    if param == "tool_choice":
        fields["tools"] = SAMPLES["tools"]
    sampling = Sampling(**fields)
    if workload == "chat":
        return GenerateRequest("walk", sampling, messages=CHAT)
    return GenerateRequest("walk", sampling, prompt="hi")


def _refused_naming(refused: object, param: str) -> None:
    """`refused` is the typed refusal of `param`: UNSUPPORTED_PARAM, its message
    starting with the parameter's name, not retriable."""
    assert isinstance(refused, Failed) and refused.code == "UNSUPPORTED_PARAM", refused
    assert refused.message.startswith(f"{param}:") and not refused.retriable, refused


def _pool(engine: str) -> PoolView:
    return PoolView(
        pool_id=f"pool-{engine}",
        host_id="h",
        engine=engine,
        model_id="m",
        model_aliases=frozenset(),
        model_digest="d",
        ctx=4096,
        features=frozenset(features(engine)),
        ready=True,
        draining=False,
        lease_fresh=True,
        replicas=(ReplicaView(0, True, 1, 1),),
    )


@pytest.mark.parametrize(("engine", "workload", "param"), CASES)
def test_placement_takes_a_pool_only_where_its_engine_honours_the_parameter(
    engine: str, workload: str, param: str
) -> None:
    needs = JobNeeds("m", 16, workload=workload, params=frozenset({"max_tokens", param}))
    outcome = params_check(needs, _pool(engine))
    if param in honoured(engine, workload):
        assert outcome is None
    else:
        assert outcome is not None and outcome[0] == param, outcome


def test_every_engine_kind_is_walked_through_its_adapter_or_its_backend() -> None:
    assert {e for e in ENGINES if _adapter(e) is None} == set(IN_PROCESS)


def _adapter(engine: str) -> HttpAdapterBase | None:
    adapters: dict[str, HttpAdapterBase] = {
        "llamacpp": LlamaServerAdapter(ENDPOINT, model="m"),
        "llamacpp-server-py": LlamaCppServerAdapter(ENDPOINT, model="m"),
        "openai-compatible": OpenAIAdapter(ENDPOINT, model="m"),
        "vllm": VllmAdapter(ENDPOINT, model="m", version="0.12.0"),
        "tgi": TgiAdapter(ENDPOINT, model="m"),
        "triton": TritonAdapter(ENDPOINT, model="m"),
    }
    return adapters.get(engine)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _carries(body: Any, param: str) -> bool:
    """The engine request holds the parameter's value (a JSON schema: as a schema object
    or the grammar made of it, both of which name its property)."""
    wanted = SAMPLES[param]
    if param == "json_schema":
        return any(isinstance(leaf, str) and "qqkey" in leaf for leaf in _leaves(body)) or any(
            isinstance(leaf, Mapping) and "qqkey" in leaf for leaf in _mappings(body)
        )
    if param == "stop":
        return any(leaf == wanted[0] for leaf in _leaves(body))
    if param == "tools":  # the tools, described to the model: the function's name
        return any(isinstance(leaf, str) and "qqtool" in leaf for leaf in _leaves(body))
    if param == "tool_choice" and isinstance(body, Mapping) and "messages" in body:
        # llama-server: `required` is told to the model (and its grammar has no text)
        return any(isinstance(leaf, str) and MUST_CALL in leaf for leaf in _leaves(body))
    return any(leaf == wanted and type(leaf) is type(wanted) for leaf in _leaves(body))


def _mappings(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        yield value
        for item in value.values():
            yield from _mappings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _mappings(item)


SAMPLED_CASES = [case for case in CASES if case[2] in SAMPLES]
IN_PROCESS = ("llamacpp-inproc", "mock", "vllm-inproc")  # walked by the backend tests below


@pytest.mark.parametrize(
    ("engine", "workload", "param"), [c for c in SAMPLED_CASES if c[0] not in IN_PROCESS]
)
async def test_the_engine_request_carries_an_honoured_parameter_or_is_refused_naming_it(
    engine: str, workload: str, param: str
) -> None:
    adapter = _adapter(engine)
    assert adapter is not None
    try:
        baseline = await adapter.plan(_request(workload, None))
        plan = await adapter.plan(_request(workload, param))
    finally:
        await adapter.close()
    assert isinstance(baseline, StreamPlan)
    if param in honoured(engine, workload):
        assert isinstance(plan, StreamPlan), plan
        assert _carries(plan.body, param), f"{engine} {workload} dropped {param}: {plan.body}"
        if param != "max_tokens":
            assert not _carries(baseline.body, param), "the sample value is not distinctive"
    else:
        _refused_naming(plan, param)


def _to_the_worker_or_refused(
    engine: str, workload: str, param: str
) -> tuple[GenerateRequest, Sampling] | None:
    """A request setting `param`, for an in-process `engine`: None where the engine does
    not honour it (tools on completion), after checking its refusal names it; else the
    request, which the capability matrix lets through, and its sampling as the worker
    gets it (through the worker protocol's wire form)."""
    request = _request(workload, param)
    if param not in honoured(engine, workload):
        _refused_naming(refusal(engine, request), param)
        return None
    assert refusal(engine, request) is None
    return request, request_from_wire(request_to_wire(request)).sampling


@pytest.mark.parametrize(
    ("workload", "param"),
    [(w, p) for e, w, p in SAMPLED_CASES if e == "llamacpp-inproc"],
)
def test_the_in_process_engine_applies_every_parameter_it_honours(
    workload: str, param: str
) -> None:
    walked = _to_the_worker_or_refused("llamacpp-inproc", workload, param)
    if walked is None:
        return
    request, carried = walked
    sent = getattr(request.sampling, param)
    assert getattr(carried, param) == (pytest.approx(sent) if isinstance(sent, float) else sent)
    plan = generation_plan(request.sampling)
    if param in ("grammar", "json_schema", "tools"):
        assert plan.constraint == param
    else:
        assert _carries(asdict(plan), param), plan
        assert not _carries(asdict(generation_plan(_request(workload, None).sampling)), param)


# vLLM's names for the parameters whose SamplingParams keyword differs.
VLLM_NAMES = {"repeat_penalty": "repetition_penalty"}


@pytest.mark.parametrize(
    ("workload", "param"),
    [(w, p) for e, w, p in SAMPLED_CASES if e == "vllm-inproc"],
)
def test_the_in_process_vllm_engine_applies_every_parameter_it_honours(
    workload: str, param: str
) -> None:
    walked = _to_the_worker_or_refused("vllm-inproc", workload, param)
    if walked is None:
        return
    request, carried = walked
    args = sampling_args(carried, json_schema_grammar)  # the worker converts with xgrammar
    baseline = sampling_args(_request(workload, None).sampling)
    sent = getattr(request.sampling, param)
    if param in ("tools", "tool_choice"):  # the grammar of the calls: the tool's name in it
        grammar = args["structured"]["grammar"]
        assert "qqtool" in grammar and "structured" not in baseline
        # `required`: calls only; the tools alone (`auto`) let plain text through too
        assert ("tool-plain-text" in grammar) == (param == "tools"), grammar
        return
    if param in ("grammar", "json_schema"):
        wanted = {"grammar": "grammar", "json_schema": "json"}[param]
        assert args["structured"] == {wanted: sent} and "structured" not in baseline
        return
    name = VLLM_NAMES.get(param, param)
    value = list(sent) if param == "stop" else sent
    assert args[name] == (pytest.approx(value) if isinstance(value, float) else value)
    if param != "max_tokens":
        assert name not in baseline, baseline


async def _mock_events(request: GenerateRequest) -> list[Any]:
    backend = MockBackend()
    await backend.start()
    try:
        return [event async for event in backend.generate(request)]
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("workload", "param"), [(w, p) for e, w, p in SAMPLED_CASES if e == "mock"]
)
async def test_the_mock_engine_applies_what_it_honours_and_refuses_the_rest(
    workload: str, param: str
) -> None:
    events = await _mock_events(_request(workload, param))
    if param not in honoured("mock", workload):
        assert len(events) == 1, events
        _refused_naming(events[0], param)
        return
    tokens = [event for event in events if isinstance(event, Token)]
    if param == "max_tokens":
        assert len(tokens) == SAMPLES["max_tokens"]
    else:  # seed: word k of a job is WORDS[(seed + k) % 8]
        assert tokens[0].text == WORDS[SAMPLES["seed"] % len(WORDS)] + " " != WORDS[0] + " "


def test_a_job_lands_on_the_pool_whose_engine_honours_its_parameter() -> None:
    needs = JobNeeds("m", 16, workload="completion", params=frozenset({"max_tokens", "top_k"}))
    placed = place(needs, [_pool("mock"), _pool("llamacpp-inproc")])
    assert getattr(placed, "pool_id", None) == "pool-llamacpp-inproc"
    unplaced = place(needs, [_pool("mock")])
    assert [(r.check, r.wanted) for r in getattr(unplaced, "rejections", ())] == [
        ("params", "top_k")
    ]
