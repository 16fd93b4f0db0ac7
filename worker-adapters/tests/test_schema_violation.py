"""`schema_violation`: a finished output checked against its whole JSON schema."""

from __future__ import annotations

import json

from worker_adapters.constraints import schema_violation

UNIQUE_PAIR = {
    "type": "array",
    "items": {"enum": ["a"]},
    "minItems": 2,
    "maxItems": 2,
    "uniqueItems": True,
}


def test_an_output_that_satisfies_the_schema_has_no_violation() -> None:
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert schema_violation(schema, '{"a": 3}') is None
    assert schema_violation(json.dumps(schema), ' {"a": 3} ') is None


def test_a_violation_names_the_json_path_the_reason_and_the_keyword() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 5}}}
    reason = schema_violation(schema, '{"a": 3}')
    assert reason is not None
    assert "at $.a" in reason and "3 is not a multiple of 5" in reason
    assert reason.endswith("(multipleOf)")


def test_a_keyword_a_grammar_cannot_enforce_is_still_checked() -> None:
    reason = schema_violation(UNIQUE_PAIR, '["a", "a"]')
    assert reason is not None and "non-unique elements" in reason and "(uniqueItems)" in reason


def test_text_that_is_not_json_is_a_violation_saying_so() -> None:
    reason = schema_violation({}, '{"a": ')
    assert reason is not None and reason.startswith("the output is not JSON: ")


def test_an_output_cut_by_max_tokens_says_to_raise_max_tokens() -> None:
    reason = schema_violation({"type": "object"}, '{"a": [1, 2', finish_reason="length")
    assert reason is not None and "cut at max_tokens" in reason


def test_the_quoted_output_in_a_reason_is_shortened() -> None:
    reason = schema_violation({"type": "object"}, json.dumps("x" * 10_000))
    assert reason is not None and len(reason) < 400 and reason.endswith("(type)")


def test_output_nested_too_deeply_is_a_violation_not_a_crash() -> None:
    reason = schema_violation({"type": "array"}, "[" * 100_000 + "]" * 100_000)
    assert reason == "the output is JSON nested too deeply to check"
