"""A job the journal kept is rebuilt after a restart as it was accepted: `/v2` requests
from their body, OpenAI facade requests from theirs (translated again, not kept twice)."""

from __future__ import annotations

import json

from orchestratord.app import _journaled_spec
from orchestratord.journal.records import JournaledTask


def _row(route: str, wire: str) -> JournaledTask:
    return JournaledTask(
        seq=1, task_id="t-1", wire=wire, route=route, api_key="client-a",
        correlation_id="corr-1", detached=False, state="queued", attempts=0, pool_id=None,
        created_ms=1, started_ms=None, finished_ms=None, error=None, end_json=None,
        tokens_in=0, tokens_out=0, finish_reason=None, last_event_id=-1,
    )  # fmt: skip


def test_a_journaled_chat_request_is_translated_again_as_the_facade_did() -> None:
    body = {
        "model": "default",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        "max_completion_tokens": 7,
        "temperature": 0.5,
        "stop": "\n",
        "stream": True,
    }
    spec = _journaled_spec(_row("chat", json.dumps(body)))
    assert (spec.task_id, spec.model, spec.workload) == ("t-1", "default", "chat")
    assert (spec.correlation_id, spec.api_key) == ("corr-1", "client-a")
    request = spec.request
    assert request.messages is not None
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("user", "hello"),
    ]
    assert request.sampling.max_tokens == 7 and request.sampling.temperature == 0.5
    assert request.sampling.stop == ("\n",)


def test_a_journaled_completion_request_keeps_its_prompt_and_limits() -> None:
    body = {"model": "default", "prompt": "Once upon", "max_tokens": 3, "seed": 11}
    spec = _journaled_spec(_row("completion", json.dumps(body)))
    assert spec.workload == "completion" and spec.request.prompt == "Once upon"
    assert spec.request.sampling.max_tokens == 3 and spec.request.sampling.seed == 11


def test_a_journaled_v2_request_is_read_from_its_body_as_it_came() -> None:
    body = '{"model": "default",  "prompt": "hi", "max_tokens": 4.0, "priority": "batch"}'
    spec = _journaled_spec(_row("v2", body))
    assert spec.task_id == "t-1" and spec.priority == "batch"
    assert spec.request.prompt == "hi" and spec.request.sampling.max_tokens == 4
