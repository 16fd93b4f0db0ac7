"""Logprobs on the public wire: the `token` event's `logprobs` and OpenAI's two shapes.

A task that asks for `logprobs` (API-02) gets, on each `token` event, one entry per
engine token: `{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`
(OpenAI's chat shape, so the chat facade passes entries through unchanged). The legacy
completions shape (`/v1/completions`) is built from the same entries: parallel lists
`tokens`, `token_logprobs`, `top_logprobs` (one `{token: logprob}` map per token) and
`text_offset` (each token's start, in characters of the completion text). Only requests
that asked for logprobs reach this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from worker_adapters import TokenLogprob

__all__ = ["CompletionLogprobs", "entries_json"]


def entries_json(logprobs: Iterable[TokenLogprob]) -> str:
    """The `logprobs` array of a `token` event, as JSON text."""
    return json.dumps(
        [
            {
                "token": entry.token,
                "logprob": entry.logprob,
                "bytes": list(entry.token_bytes or entry.token.encode()),
                "top_logprobs": [
                    {
                        "token": top.token,
                        "logprob": top.logprob,
                        "bytes": list(top.token_bytes or top.token.encode()),
                    }
                    for top in entry.top
                ],
            }
            for entry in logprobs
        ],
        ensure_ascii=False,
    )


class CompletionLogprobs:
    """Builds the legacy completions `logprobs` object, chunk by chunk (`text_offset`
    continues across chunks of one stream)."""

    __slots__ = ("_offset",)

    def __init__(self) -> None:
        self._offset = 0

    def shape(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        offsets = []
        for entry in entries:
            offsets.append(self._offset)
            self._offset += len(entry["token"])
        return {
            "tokens": [entry["token"] for entry in entries],
            "token_logprobs": [entry["logprob"] for entry in entries],
            "top_logprobs": [
                {top["token"]: top["logprob"] for top in entry["top_logprobs"]} for entry in entries
            ],
            "text_offset": offsets,
        }
