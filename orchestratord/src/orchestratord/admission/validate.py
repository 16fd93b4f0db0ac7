"""Request checks the schema cannot express, made before anything reaches an engine
(SEC-03). Pure: values in, `Refusal`s out; the HTTP layer renders them.

Each rule is one named check returning the refusal (field, reason, status) or None:

- `prompt_not_empty`: a completion needs at least one character of prompt (an engine
  given nothing to continue fails or invents a start; either way it is not an answer);
- `grammar_defines_root`: llama.cpp grammars (GBNF) start at a `root` rule; text
  without one cannot parse on any engine that takes GBNF;
- `json_schema_valid`: a `json_schema` is a JSON Schema (2020-12 meta-schema), no larger
  than `max_grammar_bytes`, and, where the engine's converter is given, converts to a
  grammar no larger than that either (`{"foo": []}` is a valid schema that llama.cpp's
  converter refuses);
- `token_ids_valid`: at most `max_token_ids` ids, each within the model's vocabulary
  when its size is known (llama.cpp aborts on an id outside it);
- `text_within_limit`: text to tokenize is under the prompt limit, as a prompt is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = [
    "Refusal",
    "grammar_defines_root",
    "json_schema_valid",
    "prompt_not_empty",
    "text_within_limit",
    "token_ids_valid",
]

Converter = Callable[[str], str]  # schema JSON -> grammar, ValueError when it cannot
_ROOT_RULE = re.compile(r"^[ \t]*root[ \t]*::=", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: the field, a reason a client can act on, the status."""

    field: str
    reason: str
    status: int = 400


def prompt_not_empty(prompt: str | None, field: str = "prompt") -> Refusal | None:
    if prompt is not None and not prompt:
        return Refusal(field, "the prompt is empty: give at least one character")
    return None


def grammar_defines_root(grammar: str | None, field: str = "grammar") -> Refusal | None:
    if grammar is not None and not _ROOT_RULE.search(grammar):
        return Refusal(field, "a GBNF grammar needs a `root ::= ...` rule to start from")
    return None


def json_schema_valid(
    schema: Mapping[str, Any] | None,
    *,
    max_grammar_bytes: int,
    convert: Converter | None,
    field: str = "json_schema",
) -> Refusal | None:
    if schema is None:
        return None
    text = json.dumps(schema)
    if len(text.encode()) > max_grammar_bytes:
        return Refusal(field, f"the schema is larger than {max_grammar_bytes} bytes", 413)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top)"
        return Refusal(field, f"not a valid JSON Schema at {where}: {exc.message}")
    except RecursionError:
        return Refusal(field, "the schema is nested too deeply")
    if convert is None:
        return None
    try:
        grammar = convert(text)
    except ValueError as exc:
        return Refusal(field, str(exc))
    if len(grammar.encode()) > max_grammar_bytes:
        return Refusal(field, f"the schema's grammar is larger than {max_grammar_bytes} bytes", 413)
    return None


def token_ids_valid(
    ids: Sequence[int], *, max_token_ids: int, vocab_size: int | None, field: str = "tokens"
) -> Refusal | None:
    if len(ids) > max_token_ids:
        return Refusal(field, f"{len(ids)} token ids; at most {max_token_ids} are taken", 413)
    for position, token in enumerate(ids):
        if token < 0 or (vocab_size and token >= vocab_size):
            bound = f"0..{vocab_size - 1}" if vocab_size else "0 or more"
            return Refusal(
                f"{field}.{position}",
                f"{token} is not a token id of this model (ids are {bound})",
            )
    return None


def text_within_limit(text: str, *, max_bytes: int, field: str = "text") -> Refusal | None:
    size = len(text.encode())
    if size > max_bytes:
        return Refusal(field, f"{size} bytes exceeds the limit of {max_bytes} bytes")
    return None
