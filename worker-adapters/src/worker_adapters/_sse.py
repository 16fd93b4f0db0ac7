"""Server-Sent Events framing on raw bytes: network chunks in, `data` payloads out.

`SseParser.feed(chunk)` returns the data payload (bytes) of every event completed by
that chunk. It follows WHATWG HTML §9.2 for what the engines send: events end at a blank
line; `\\r\\n`, `\\r` and `\\n` all end lines; lines starting with `:` are comments (the
keep-alive pings of llama-server, sse-starlette and axum) and are ignored; one space
after `data:` is dropped; several `data` lines join with `\\n`; an event without data is
not dispatched; other fields (`event`, `id`, `retry`) are ignored, since no engine route
we use needs them. An event split across chunks, even inside a multi-byte character, is
held until its blank line arrives: decoding happens later, on whole payloads. At EOF an
unterminated event is discarded, as the spec says; the caller learns of it from
`pending` (a truncation).

Pure and synchronous; one parser per stream. The common frame (`data: {...}` on one
line) takes a fast path with no per-line work.
"""

from __future__ import annotations

__all__ = ["MAX_EVENT_BYTES", "SseParser", "SseTooLarge"]

# An engine frame is one JSON object (a token and its metadata, or a final summary with
# timings and settings); a megabyte-sized one means a broken stream, not a big token.
MAX_EVENT_BYTES = 8 << 20


class SseTooLarge(ValueError):
    """An event grew past MAX_EVENT_BYTES without a terminating blank line."""


class SseParser:
    """Incremental SSE parser; see the module docstring."""

    __slots__ = ("_buffer", "_max_bytes")

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max_bytes = max_bytes

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are held (at EOF: a cut-off event)."""
        return bool(self._buffer.strip(b"\r\n"))

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add one network chunk; return the data payloads of the events it completed."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = _normalize_newlines(buffer)
        if b"\n\n" not in buffer:
            if len(buffer) > self._max_bytes:
                raise SseTooLarge(f"SSE event larger than {self._max_bytes} bytes")
            self._buffer = buffer
            return []
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        payloads: list[bytes] = []
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:
                payloads.append(event[6:])
            elif event:
                data = _slow_data(event)
                if data is not None:
                    payloads.append(data)
        return payloads


def _normalize_newlines(buffer: bytes) -> bytes:
    """CRLF and lone CR become LF; a trailing CR is kept (its LF may be in the next chunk)."""
    trailing_cr = buffer.endswith(b"\r")
    body = buffer[:-1] if trailing_cr else buffer
    body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body + b"\r" if trailing_cr else body


def _slow_data(event: bytes) -> bytes | None:
    """The data of an event with comments, several lines or `data:` without a space."""
    lines: list[bytes] = []
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, colon, value = line.partition(b":")
        if name != b"data":
            continue
        if colon and value.startswith(b" "):
            value = value[1:]
        lines.append(value)
    return b"\n".join(lines) if lines else None
