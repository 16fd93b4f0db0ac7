"""Generation constraints checked without a model: llama.cpp's JSON-schema converter.

The in-process llama.cpp engine turns a `json_schema` into a GBNF grammar with
llama-cpp-python's converter (`llama_cpp.llama_grammar.json_schema_to_gbnf`); the
orchestrator runs the same converter at admission so that a schema this engine cannot
take is refused up front (SEC-03) instead of failing on the engine. The converter is
pure Python, but it lives in the optional `llama-cpp-python` package: without it,
`json_schema_converter()` is None and the engine's own check is the only one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

__all__ = ["json_schema_converter", "json_schema_grammar"]


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
