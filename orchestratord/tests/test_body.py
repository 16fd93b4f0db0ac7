"""Request bodies and errors as the document states them: `null` only where the
document allows it, `8.0` an integer, and the error shape chosen by the path."""

from __future__ import annotations

import json

import pytest
from orchestratord.errors import ApiError, Detail
from orchestratord.http.body import parse_body
from orchestratord.http.errors import error_response, is_openai_path
from specs.api.models import CordonRequest, DeploymentRequest, OpenAIChatRequest, TaskRequest


def test_null_is_refused_where_the_document_does_not_allow_it_naming_the_field() -> None:
    with pytest.raises(ApiError) as caught:
        parse_body(CordonRequest, b'{"cordoned": true, "device": null}')
    assert caught.value.status == 400
    assert [d.field for d in caught.value.details] == ["device"]
    with pytest.raises(ApiError) as nested:
        parse_body(DeploymentRequest, b'{"model": "m", "replicas": {"min": null}}')
    assert [d.field for d in nested.value.details] == ["replicas.min"]


def test_null_is_taken_where_the_document_allows_it_and_extra_fields_are_not_checked() -> None:
    body = parse_body(
        OpenAIChatRequest,
        b'{"model": "m", "messages": [{"role": "user", "content": null, "x": null}],'
        b' "max_tokens": null, "stop": null}',
    )
    assert body.max_tokens is None and body.messages[0].content is None


def test_an_integral_number_is_an_integer_and_a_fraction_is_not() -> None:
    assert (
        parse_body(TaskRequest, b'{"model": "m", "prompt": "p", "max_tokens": 8.0}').max_tokens == 8
    )
    with pytest.raises(ApiError) as caught:
        parse_body(TaskRequest, b'{"model": "m", "prompt": "p", "max_tokens": 8.5}')
    assert caught.value.details[0].field == "max_tokens"
    with pytest.raises(ApiError):
        parse_body(TaskRequest, b'{"model": "m", "prompt": "p", "max_tokens": "8"}')


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (429, "rate_limit_error"),
        (503, "server_error"),
    ],
)
def test_errors_on_v1_are_openais_body_and_elsewhere_the_envelope(status: int, kind: str) -> None:
    error = ApiError(
        "X", "why", status=status, retry_after_ms=2500, details=[Detail("bad", field="n")]
    )
    openai = error_response(error, "cid", "/v1/chat/completions")
    assert json.loads(bytes(openai.body)) == {
        "error": {"message": "why", "type": kind, "param": "n", "code": "X"}
    }
    envelope = json.loads(bytes(error_response(error, "cid", "/v2/tasks").body))
    assert envelope["code"] == "X" and envelope["correlation_id"] == "cid"
    for response in (openai, error_response(error, "cid", "/v2/tasks")):
        assert response.headers.get("retry-after") == ("3" if status in (429, 503) else None)
    assert (
        is_openai_path("/v1/models")
        and not is_openai_path("/v1x")
        and not is_openai_path("/v2/v1/")
    )
