"""The `triton` adapter's wire, on frames recorded from the real engine (Triton 2.51 in
PyTriton 0.7.0 serving `triton_llamacpp.py`), and the request bodies it sends.

The recorded frames are exactly what `curl -N .../generate_stream` printed; the runner
tests against the real server are in `test_triton_engine.py`.
"""

from __future__ import annotations

import json

import pytest
from worker_adapters.capabilities import refusal
from worker_adapters.triton.wire import TritonDecoder, generate_body
from worker_adapters.types import (
    ChatTurn,
    End,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
)

RECORDED_STREAM = [
    b'{"event":"start","final":false,"finish_reason":"","model_name":"llm","model_version":"1",'
    b'"text_output":"","tokens":0,"tokens_in":2,"tokens_out":0}',
    b'{"event":"token","final":false,"finish_reason":"","model_name":"llm","model_version":"1",'
    b'"text_output":"\xef\xbf\xbdbq","tokens":2,"tokens_in":0,"tokens_out":2}',
    b'{"event":"token","final":false,"finish_reason":"","model_name":"llm","model_version":"1",'
    b'"text_output":"ck","tokens":1,"tokens_in":0,"tokens_out":3}',
    b'{"event":"end","final":true,"finish_reason":"length","model_name":"llm","model_version":"1",'
    b'"text_output":"","tokens":0,"tokens_in":2,"tokens_out":5}',
]
_TRACEBACK = (
    'Traceback (most recent call last):\n  File "/venv/lib/python3.11/site-packages/pytriton/'
    'proxy/inference.py", line 393, in _handle_requests\n    async for responses in '
    "self._model_callable(requests):\n"
)
RECORDED_REFUSAL = json.dumps(
    {"error": _TRACEBACK + "RequestRefused: INVALID_PARAMS: temperature must not be negative\n"}
).encode()
RECORDED_CRASH = json.dumps(
    {"error": _TRACEBACK + "ValueError: max_tokens must be >= 0\n"}
).encode()


def decode(frames: list[bytes]) -> list[StreamEvent]:
    decoder = TritonDecoder()
    return [event for frame in frames for event in decoder.feed(frame)]


def test_a_recorded_stream_decodes_to_started_tokens_and_end() -> None:
    events = decode(RECORDED_STREAM)
    assert events == [
        Started(2),
        Token("\ufffdbq", 2),
        Token("ck", 1),
        End(tokens_in=2, tokens_out=5, finish_reason="length", ttft_ms=0.0, decode_time_ms=0.0),
    ]


def test_a_refusal_frame_under_200_is_its_typed_code_and_not_retriable() -> None:
    (started, failure) = decode([RECORDED_STREAM[0], RECORDED_REFUSAL])
    assert started == Started(2)
    assert failure == Failed(
        "INVALID_PARAMS", "temperature must not be negative", False, before_first_token=True
    )


def test_any_other_error_frame_is_engine_error_with_the_exception_line() -> None:
    *_, failure = decode([*RECORDED_STREAM[:2], RECORDED_CRASH])
    assert isinstance(failure, Failed)
    assert failure.code == "ENGINE_ERROR"
    assert failure.message == "ValueError: max_tokens must be >= 0"
    assert not failure.before_first_token


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ([RECORDED_STREAM[1]], "token before start"),
        ([RECORDED_STREAM[0], RECORDED_STREAM[0]], "second start"),
        ([b"not json"], "unreadable frame"),
        ([RECORDED_STREAM[0], b'{"event":"end","final":false}'], "unknown event 'end'"),
    ],
)
def test_a_malformed_stream_ends_with_engine_error(frames: list[bytes], problem: str) -> None:
    failure = decode(frames)[-1]
    assert isinstance(failure, Failed) and failure.code == "ENGINE_ERROR"
    assert failure.message.endswith(problem)


def test_the_body_maps_every_set_sampling_value_and_nothing_else() -> None:
    sampling = Sampling(max_tokens=7, temperature=0.5, top_k=3, seed=9, stop=("\n", "END"))
    body = generate_body(GenerateRequest("job", sampling, "hi"), "job#1")
    assert body == {
        "id": "job#1",
        "request_id": "job#1",
        "text_input": "hi",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_k": 3,
        "seed": 9,
        "stop": ["\n", "END"],
    }


def test_chat_turns_travel_as_json_messages() -> None:
    request = GenerateRequest("job", Sampling(1), messages=(ChatTurn("user", "hé"),))
    body = generate_body(request, "job#1")
    assert json.loads(body["messages"]) == [{"role": "user", "content": "hé"}]
    assert "text_input" not in body


@pytest.mark.parametrize(
    ("sampling", "missing"),
    [
        (Sampling(4, grammar='root ::= "a"'), "grammar"),
        (Sampling(4, json_schema="{}"), "json_schema"),
        (Sampling(4, logprobs=2), "logprobs"),
        (Sampling(4, temperature=0.1), ""),
    ],
)
def test_constraints_the_model_cannot_honour_are_named(sampling: Sampling, missing: str) -> None:
    refused = refusal("triton", GenerateRequest("job", sampling, "hi"))
    if not missing:
        assert refused is None
    else:
        assert refused is not None and refused.code == "UNSUPPORTED_PARAM"
        assert refused.message.startswith(f"{missing}:")
