"""`guarded`: the stream contract enforced around an in-process engine's events.

An `EngineBackend` is trusted code, but a fake with fault knobs (or a bug) can still
emit a token before `Started`, stop without a terminal event, emit two, or stop
producing. Around its event iterator this guard passes through a well-formed stream
and turns every deviation into one typed terminal, so the in-process adapter keeps the
same promises as the network adapters (ADP-03, ADP-07):
- a token or end before `Started`, or a second `Started`: `ENGINE_ERROR`;
- the iterator ends without `End`/`Failed`: `WORKER_RESET` (retriable);
- nothing arrives for `stall_timeout_s`: `DECODE_TIMEOUT`, and the engine's generator
  is cancelled, which stops its generation;
- anything after the terminal event is never read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from worker_adapters.http_errors import truncated
from worker_adapters.protocol import aclose_quietly
from worker_adapters.types import End, Failed, Started, StreamEvent, Token

__all__ = ["guarded"]


async def guarded(
    events: AsyncIterator[StreamEvent], *, stall_timeout_s: float | None
) -> AsyncIterator[StreamEvent]:
    started = tokens_seen = False
    try:
        while True:
            try:
                async with asyncio.timeout(stall_timeout_s):
                    event = await anext(events)
            except StopAsyncIteration:
                yield truncated(tokens_seen=tokens_seen)
                return
            except TimeoutError:
                message = f"engine produced nothing for {stall_timeout_s} s"
                yield Failed("DECODE_TIMEOUT", message, True, not tokens_seen)
                return
            if isinstance(event, End | Failed):
                if isinstance(event, End) and not started:
                    yield _malformed("End before Started", tokens_seen)
                else:
                    yield event
                return
            if isinstance(event, Started) == started:
                problem = "second Started" if started else "Token before Started"
                yield _malformed(problem, tokens_seen)
                return
            started = True
            tokens_seen = tokens_seen or isinstance(event, Token)
            yield event
    finally:
        await aclose_quietly(events)


def _malformed(problem: str, tokens_seen: bool) -> Failed:
    return Failed("ENGINE_ERROR", f"malformed engine stream: {problem}", True, not tokens_seen)
