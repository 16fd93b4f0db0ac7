"""TGI transcripts built from real recorded TGI responses (`recordings/tgi/`).

The recordings are parsed responses from TGI's own integration tests, not raw bytes, so
the SSE framing is added here following the engine reference (§A4.2): one
`data: <json>\\n\\n` frame per event. For `/generate_stream` each recorded token of a
`/generate` answer (`details.tokens`: id, text, logprob, special) becomes one
`StreamResponse` event; the last also carries the recorded `generated_text` and
`details` (finish_reason, generated_tokens, seed; the recordings have no
`input_length`, so none is invented). There is no `[DONE]` on this route. The
recorded `/v1/chat/completions` streams are replayed chunk by chunk and end with
`data: [DONE]`, as TGI's OpenAI routes do.

Names say what is recorded: `recorded_tgi_*` transcripts replay recorded tokens and
chunks (cut short, or followed by an error frame, where the name says so: error frames
were not recorded, their shape `{"error", "error_type"}` is the reference's);
`reconstructed_tgi_*` ones have no recording behind them at all (a validation error, a
multi-byte text: the recordings hold no non-ASCII stream).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from worker_adapters.testing.scenarios import LONG_PACE_S, UTF8_TOKENS, Scenario
from worker_adapters.testing.transcripts import DONE, Ending, Transcript, split_each_write, stream

__all__ = [
    "SIMPLE_TEXT",
    "chat_recording",
    "for_scenario",
    "generate_events",
    "recorded_tgi_chat",
    "recorded_tgi_generate",
    "tgi_error",
]

RECORDINGS = Path(__file__).parent / "recordings" / "tgi"
SIMPLE = "test_flash_llama_test_flash_llama_simple.json"
ALL_PARAMS = "test_flash_llama_test_flash_llama_all_params.json"
CHAT_USAGE = "test_completion_prompts_test_flash_llama_completion_stream_usage.json"
CHAT_OK = "test_completion_prompts_test_chat_openai_usage.json"
JSON_SCHEMA = "test_json_schema_constrain_test_json_schema_stream.json"
SIMPLE_TEXT = " for /api/v1/projects/1"
_RECONSTRUCTED = "reconstructed: TGI wire facts, engine reference §A4.2 (no recording)"


@cache
def _load(file: str) -> Any:
    return json.loads((RECORDINGS / file).read_text())


def _provenance(file: str, extra: str = "") -> str:
    note = f"; {extra}" if extra else ""
    return f"recorded: TGI integration-test snapshot {file} (db931fc), framed per §A4.2{note}"


def tgi_error(message: str, error_type: str) -> dict[str, str]:
    return {"error": message, "error_type": error_type}


def generate_events(file: str) -> list[dict[str, Any]]:
    """`/generate_stream` events from a recorded `/generate` answer."""
    answer = _load(file)
    details = answer["details"]
    tokens = details["tokens"]
    events: list[dict[str, Any]] = []
    for index, token in enumerate(tokens, start=1):
        last = index == len(tokens)
        stream_details = {
            "finish_reason": details["finish_reason"],
            "generated_tokens": details["generated_tokens"],
            "seed": details["seed"],
        }
        events.append(
            {
                "index": index,
                "token": token,
                "generated_text": answer["generated_text"] if last else None,
                "details": stream_details if last else None,
            }
        )
    return events


def recorded_tgi_generate(
    name: str,
    file: str = SIMPLE,
    *,
    keep: int | None = None,
    tail: list[Any] | None = None,
    ending: Ending = "close",
    note: str = "",
) -> Transcript:
    """`/generate_stream` from a recording: all events, or the first `keep` then `tail`."""
    events: list[Any] = generate_events(file)
    if keep is not None:
        events = events[:keep]
    return stream(name, _provenance(file, note), [*events, *(tail or [])], ending=ending)


def chat_recording(file: str) -> list[dict[str, Any]]:
    return list(_load(file))


def recorded_tgi_chat(name: str, file: str = CHAT_USAGE) -> Transcript:
    return stream(name, _provenance(file), [*chat_recording(file), DONE])


def _long() -> Transcript:
    """The recorded tokens, repeated: a stream long enough to cancel."""
    events = generate_events(SIMPLE)[:-1] * 300
    note = "recorded token events repeated, no final event"
    return stream(
        "recorded_tgi_simple_repeated", _provenance(SIMPLE, note), events, pace_s=LONG_PACE_S
    )


def _utf8() -> Transcript:
    events: list[Any] = []
    for index, text in enumerate(UTF8_TOKENS, start=1):
        token = {"id": 1000 + index, "text": text, "logprob": -0.5, "special": False}
        events.append({"index": index, "token": token, "generated_text": None, "details": None})
    events[-1]["generated_text"] = "".join(UTF8_TOKENS)
    events[-1]["details"] = {"finish_reason": "length", "generated_tokens": len(UTF8_TOKENS)}
    return split_each_write(stream("reconstructed_tgi_utf8_split", _RECONSTRUCTED, events))


def for_scenario(scenario: Scenario) -> Transcript | None:
    """The transcript that makes the fake TGI behave as `scenario` says."""
    generation_error = tgi_error(
        "Request failed during generation: Server error: CUDA OOM", "generation"
    )
    match scenario:
        case Scenario.COMPLETES:
            return recorded_tgi_generate("recorded_tgi_simple")
        case Scenario.CHAT:
            return recorded_tgi_chat("recorded_tgi_chat_stream_usage")
        case Scenario.UTF8:
            return _utf8()
        case Scenario.LONG:
            return _long()
        case Scenario.ERROR_BEFORE_FIRST:
            return stream(
                "reconstructed_tgi_generation_error_first", _RECONSTRUCTED, [generation_error]
            )
        case Scenario.ERROR_MID_STREAM:
            note = "error frame after 4 recorded tokens (frame shape from §A4.2)"
            return recorded_tgi_generate(
                "recorded_tgi_simple_cut_by_error_frame", keep=4, tail=[generation_error], note=note
            )
        case Scenario.REJECTED:
            message = (
                "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
                "Given: 4000 `inputs` tokens and 200 `max_new_tokens`"
            )
            frames = [tgi_error(message, "validation")]
            return stream("reconstructed_tgi_validation_error", _RECONSTRUCTED, frames)
        case Scenario.TRUNCATED:
            return recorded_tgi_generate(
                "recorded_tgi_simple_truncated", keep=4, note="cut after 4 events"
            )
        case Scenario.STALL:
            note = "silent after 3 recorded events, comment pings only"
            return recorded_tgi_generate(
                "recorded_tgi_simple_stalled", keep=3, ending="ping", note=note
            )
    return None
