"""Transcripts: what a fake engine writes back for one request.

A transcript is the HTTP status, the raw body writes in order (each write is sent and
flushed on its own, so a write boundary is a network chunk boundary as far as the
sender can make it one) and a terminal behaviour once the writes are done:
`close` (end the response normally), `hang` (keep the connection open and silent),
`ping` (keep it open, sending only SSE comment pings, as llama-server and TGI do on
silent streams), or `reset` (drop the TCP connection without ending the response).
Error frames are writes like any other: the transcript says what follows them.

Every transcript says where its bytes come from in `provenance`:
`recorded:` (built from responses recorded from the real engine), `reconstructed:`
(written from the documented wire facts, no recording exists), or `synthetic:`
(shaped to exercise one behaviour). The helpers build SSE frames the way the engines
frame them (`data: <json>\\n\\n`), split writes inside a frame, or switch to CRLF.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = [
    "DONE",
    "PING",
    "Ending",
    "Transcript",
    "crlf",
    "http_error",
    "split_each_write",
    "sse",
    "stream",
]

Ending = Literal["close", "hang", "ping", "reset"]

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


@dataclass(frozen=True, slots=True)
class Transcript:
    name: str
    provenance: str
    writes: tuple[bytes, ...] = ()
    ending: Ending = "close"
    status: int = 200
    content_type: str = "text/event-stream"
    pace_s: float = 0.0  # the fake engine's time between writes (its decode speed)
    hold_s: float = 0.0  # time before the status line (llama-server waits for a first result)


def sse(payload: Any) -> bytes:
    """One SSE frame as the engines write it; `payload` is JSON-encoded unless bytes.

    Non-ASCII text is written raw (UTF-8), as serde_json and nlohmann::json do."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False)
    body = data if isinstance(data, bytes) else data.encode()
    return b"data: " + body + b"\n\n"


def stream(
    name: str,
    provenance: str,
    frames: Iterable[Any],
    *,
    ending: Ending = "close",
    pace_s: float = 0.0,
) -> Transcript:
    """A 200 SSE transcript of `frames` (payloads, or ready bytes such as DONE/PING)."""
    writes = tuple(f if isinstance(f, bytes) and f.endswith(b"\n\n") else sse(f) for f in frames)
    return Transcript(name, provenance, writes, ending, pace_s=pace_s)


def http_error(name: str, provenance: str, status: int, body: Any) -> Transcript:
    """A plain HTTP error answer (no stream), as engines send before the first result."""
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return Transcript(name, provenance, (raw,), "close", status, "application/json")


def split_each_write(transcript: Transcript) -> Transcript:
    """Cut every write in two: just after the first byte of its first multi-byte
    character (so the cut falls inside the character), else in the middle."""
    writes: list[bytes] = []
    for write in transcript.writes:
        at = next((i + 1 for i, byte in enumerate(write) if byte >= 0x80), len(write) // 2)
        writes.extend(part for part in (write[:at], write[at:]) if part)
    return replace(transcript, writes=tuple(writes))


def crlf(transcript: Transcript) -> Transcript:
    """The same transcript with CRLF line ends (sse-starlette's framing)."""
    writes = tuple(w.replace(b"\n", b"\r\n") for w in transcript.writes)
    return replace(transcript, writes=writes)
