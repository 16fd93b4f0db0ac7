"""The scenarios of the conformance suite, and the texts the fake engines stream for them.

A scenario names an engine behaviour the suite checks every adapter against (ADP-07).
A conformance target (`conformance.ConformanceTarget`) arranges each scenario on its
engine: the fakes by scripting a transcript (the `*_transcripts` modules map every
scenario to one), the mock engine by a fault knob, a real engine by a request (or a
disruption of its process) that makes it behave so; a target that cannot arrange one
says so and that test is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from worker_adapters.protocol import Adapter
from worker_adapters.types import GenerateRequest

__all__ = [
    "LONG_PACE_S",
    "LONG_TOKENS",
    "SAMPLE_TOKENS",
    "UTF8_TOKENS",
    "Arranged",
    "ConformanceTarget",
    "Scenario",
]


class Scenario(StrEnum):
    COMPLETES = "completes"  # a completion that ends normally
    CHAT = "chat"  # a chat request that ends normally
    UTF8 = "utf8"  # multi-byte characters, split across network chunks or tokens
    LONG = "long"  # a stream long enough to be cancelled mid-way
    ERROR_BEFORE_FIRST = "error_before_first_token"  # the engine fails, no token yet
    ERROR_MID_STREAM = "error_mid_stream"  # the engine fails after some tokens
    REJECTED = "rejected"  # the engine refuses the request (bad params, too long)
    TRUNCATED = "truncated"  # the stream stops without the engine's terminal marker
    STALL = "stall"  # the engine stops producing tokens (pings may go on)
    ENGINE_DOWN = "engine_down"  # nothing listens at the engine's address


# What the fakes stream for COMPLETES and CHAT: the text is their concatenation.
SAMPLE_TOKENS = ("Hel", "lo", " world", "!")
# For UTF8: characters of 2, 3 and 4 bytes, cut across writes inside a character.
UTF8_TOKENS = ("h\u00e9", "llo ", "\u20ac", "\u65e5\u672c", " \U0001f642")
# For LONG: enough tokens, paced, that a stream is still running when it is cancelled.
LONG_TOKENS = 4000
LONG_PACE_S = 0.005


@dataclass(frozen=True, slots=True)
class Arranged:
    """How a target set a scenario up.

    `text` is the exact text the stream must carry (None when the engine's output is not
    known in advance, as with a real model). `adapter` replaces the target's adapter for
    this scenario (an unreachable address, a short stall timeout). `disrupt` is awaited
    right after the first token arrives (kill or pause the engine's process)."""

    request: GenerateRequest
    text: str | None = None
    adapter: Adapter | None = None
    disrupt: Callable[[], Awaitable[None]] | None = None


class ConformanceTarget(Protocol):
    """One adapter against one engine, as the conformance suite sees it."""

    @property
    def adapter(self) -> Adapter: ...

    async def arrange(self, scenario: Scenario, job_id: str) -> Arranged | str:
        """Set `scenario` up for a request with this job id; a str says why it cannot."""
        ...

    async def engine_released(self, job_id: str) -> None:
        """Return once the engine itself has stopped working on `job_id` (its own view:
        a fake saw the disconnect, a real engine's busy-slot gauge dropped)."""
        ...
