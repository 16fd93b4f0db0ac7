"""The input checks of `admission.validate` (SEC-03), one table per rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from orchestratord.admission.validate import (
    grammar_defines_root,
    json_schema_valid,
    prompt_not_empty,
    text_within_limit,
    token_ids_valid,
)
from orchestratord.http.middleware import CorrelationIdMiddleware
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send
from worker_adapters.constraints import json_schema_converter


def test_an_empty_prompt_is_refused_and_an_absent_one_is_not_this_checks_business() -> None:
    refusal = prompt_not_empty("")
    assert refusal is not None and refusal.field == "prompt" and refusal.status == 400
    assert prompt_not_empty(" ") is None and prompt_not_empty(None) is None


@pytest.mark.parametrize(
    ("grammar", "refused"),
    [('root ::= "a"', False), ('ws ::= " "\n  root::= ws "b"', False), ("a ::= b", True)],
)
def test_a_grammar_needs_a_root_rule(grammar: str, refused: bool) -> None:
    assert (grammar_defines_root(grammar) is not None) is refused


CONVERT = json_schema_converter()


@pytest.mark.parametrize(
    ("schema", "status"),
    [
        ({"type": "object", "properties": {"ok": {"type": "boolean"}}}, None),
        ({}, None),
        ({"type": "no-such-type"}, 400),  # the meta-schema
        ({"minLength": -1}, 400),
        ({"foo": []}, 400),  # valid JSON Schema; llama.cpp's converter refuses it
        ({"enum": ["x" * 70_000]}, 413),
    ],
)
def test_a_json_schema_is_checked_against_the_meta_schema_the_converter_and_the_size(
    schema: dict[str, Any], status: int | None
) -> None:
    assert CONVERT is not None, "the llama.cpp converter is installed in this workspace"
    refusal = json_schema_valid(schema, max_grammar_bytes=65_536, convert=CONVERT)
    assert (refusal.status if refusal else None) == status, refusal


def test_without_a_converter_only_the_meta_schema_is_checked() -> None:
    assert json_schema_valid({"foo": []}, max_grammar_bytes=65_536, convert=None) is None


@pytest.mark.parametrize(
    ("ids", "vocab", "field", "status"),
    [
        ((0, 511), 512, None, None),
        ((0, 512), 512, "tokens.1", 400),
        ((-1,), None, "tokens.0", 400),
        ((10**9,), None, None, None),  # unknown vocabulary: the engine checks
        ((1,) * 11, 512, "tokens", 413),
    ],
)
def test_token_ids_are_counted_and_checked_against_the_vocabulary(
    ids: tuple[int, ...], vocab: int | None, field: str | None, status: int | None
) -> None:
    refusal = token_ids_valid(ids, max_token_ids=10, vocab_size=vocab)
    assert (refusal.field if refusal else None) == field
    assert (refusal.status if refusal else None) == status


def test_text_over_the_limit_is_refused_counting_utf8_bytes() -> None:
    assert text_within_limit("é" * 5, max_bytes=10) is None
    refusal = text_within_limit("é" * 6, max_bytes=10)
    assert refusal is not None and "12 bytes" in refusal.reason


async def _cancelled_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise asyncio.CancelledError  # as a closed gRPC channel raises it


async def _broken_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a bug below the handlers")


@pytest.mark.parametrize("app", [_cancelled_app, _broken_app], ids=["cancelled", "error"])
def test_whatever_escapes_the_handlers_is_the_json_envelope_not_plain_text(app: Any) -> None:
    client = TestClient(CorrelationIdMiddleware(app), raise_server_exceptions=True)
    response = client.post("/v2/detokenize", headers={"X-Correlation-Id": "c-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "code": "INTERNAL",
        "message": "internal error",
        "retriable": False,
        "correlation_id": "c-1",
    }
    assert response.headers["x-correlation-id"] == "c-1"
