"""A small SSE reader for the CLI: bytes in, (id, event, data) out (WHATWG §9.2 subset:
`id`, `event`, `data` fields; comment lines ignored; events end at a blank line)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "parse_sse"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    id: str | None
    event: str
    data: str


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    event_id: str | None = None
    name = "message"
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event_id, name, "\n".join(data))
            event_id, name, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id":
            event_id = value
    if data:
        yield ServerSentEvent(event_id, name, "\n".join(data))
