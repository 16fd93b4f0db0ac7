"""`DeferredLines`: info lines logged on an event loop are written a moment later, in
order and in one write; warnings and lines logged off the loop are written at once."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from specs.narration import DeferredLines, JsonFormatter


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


@pytest.fixture
def narrated() -> Iterator[tuple[logging.Logger, CountingStream, DeferredLines]]:
    stream = CountingStream()
    handler = DeferredLines(stream, defer_s=0.001)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test.narration.deferred")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream, handler
    logger.handlers.clear()


def humans(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["human"] for line in stream.getvalue().splitlines()]


async def test_info_lines_on_a_loop_are_written_later_together_and_in_order(
    narrated: tuple[logging.Logger, CountingStream, DeferredLines],
) -> None:
    logger, stream, _ = narrated
    for step in ("admits task t1", "places task t1", "starts streaming task t1"):
        logger.info(step)
    assert stream.getvalue() == ""  # nothing written on the way to the engine
    async with asyncio.timeout(5):
        await stream.written.wait()
    assert humans(stream) == ["admits task t1", "places task t1", "starts streaming task t1"]
    assert stream.writes == 1


async def test_a_warning_is_written_at_once_after_the_pending_lines(
    narrated: tuple[logging.Logger, CountingStream, DeferredLines],
) -> None:
    logger, stream, _ = narrated
    logger.info("admits task t2")
    logger.warning("re-queues task t2")
    assert humans(stream) == ["admits task t2", "re-queues task t2"]


def test_lines_logged_outside_an_event_loop_are_written_at_once(
    narrated: tuple[logging.Logger, CountingStream, DeferredLines],
) -> None:
    logger, stream, _ = narrated
    logger.info("provisions model m")
    assert humans(stream) == ["provisions model m"]


async def test_flush_writes_what_is_pending(
    narrated: tuple[logging.Logger, CountingStream, DeferredLines],
) -> None:
    logger, stream, handler = narrated
    logger.info("ends the stream of task t3")
    handler.flush()  # logging.shutdown does this at exit
    assert humans(stream) == ["ends the stream of task t3"]
