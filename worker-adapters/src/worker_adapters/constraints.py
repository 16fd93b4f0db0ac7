"""Generation constraints checked without a model: llama.cpp's JSON-schema converter,
and the check of a finished output against its JSON schema.

The in-process llama.cpp engine turns a `json_schema` into a GBNF grammar with
llama-cpp-python's converter (`llama_cpp.llama_grammar.json_schema_to_gbnf`); the
orchestrator runs the same converter at admission so that a schema this engine cannot
take is refused up front (SEC-03) instead of failing on the engine. The converter is
pure Python, but it lives in the optional `llama-cpp-python` package: without it,
`json_schema_converter()` is None and the engine's own check is the only one.

A grammar made from a schema does not enforce all of it (llama.cpp's converters skip
`uniqueItems`, `multipleOf`, `not`, lookaheads in `pattern`, ...), some engines honour
only "a JSON object", and `max_tokens` may cut an output short: `schema_violation` checks
the finished text against the whole schema with `jsonschema` (2020-12), so that no
output that violates it ends as a success. Pure: schema and text in, the reason out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

__all__ = [
    "SCHEMA_VIOLATION",
    "json_schema_converter",
    "json_schema_grammar",
    "schema_violation",
]

SCHEMA_VIOLATION = "SCHEMA_VIOLATION"  # the error code of an output its schema refuses
_MAX_SHOWN = 200  # characters of the validator's message kept (it quotes the output)


@cache
def _converter() -> Callable[[str], str] | None:
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        return None
    return json_schema_to_gbnf


def json_schema_grammar(json_schema: str) -> str:
    """The GBNF that llama.cpp's converter makes of `json_schema` (JSON text), or
    ValueError saying why it cannot. The converter asserts on schemas it does not know
    (`{"foo": []}`) and may raise anything on odd ones: every exception is a refusal."""
    convert = _converter()
    if convert is None:
        raise ValueError("llama-cpp-python is not installed: no JSON-schema converter here")
    try:
        return convert(json_schema)
    except Exception as exc:  # noqa: BLE001 - converter failures of every kind are refusals
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"json_schema cannot be turned into a grammar: {reason}") from None


def json_schema_converter() -> Callable[[str], str] | None:
    """`json_schema_grammar` when the converter is installed, else None."""
    return json_schema_grammar if _converter() is not None else None


def schema_violation(
    schema: Mapping[str, Any] | str, output: str, *, finish_reason: str = "stop"
) -> str | None:
    """Why `output` (the whole generated text) does not satisfy `schema` (an object or its
    JSON text), or None when it does. The reason names where (a JSON path) and what the
    validator found; an output cut by `max_tokens` (`finish_reason` "length") says so."""
    cut = " (cut at max_tokens: raise max_tokens)" if finish_reason == "length" else ""
    try:
        instance = json.loads(output)
    except ValueError as exc:
        return f"the output is not JSON{cut}: {_shorten(str(exc))}"
    except RecursionError:
        return "the output is JSON nested too deeply to check"
    if isinstance(schema, str):
        schema = json.loads(schema)
    try:
        error = best_match(Draft202012Validator(schema).iter_errors(instance))
    except RecursionError:
        return "the output is JSON nested too deeply to check"
    if error is None:
        return None
    return (
        f"the output does not satisfy the json_schema at {error.json_path}{cut}: "
        f"{_shorten(error.message)} ({error.validator})"
    )


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"
