"""`_guard.guarded`: an in-process engine that breaks the stream contract still gives
one well-formed stream with one typed terminal (the mock engine's `malformed` knob)."""

from __future__ import annotations

import pytest
from worker_adapters import End, Failed, GenerateRequest, Sampling, Started, StreamEvent, Token
from worker_adapters.inproc import InProcessAdapter
from worker_adapters.mock import MockBackend
from worker_adapters.testing.conformance import assert_well_formed


async def run(prompt: str, *, stall_timeout_s: float = 5.0) -> list[StreamEvent]:
    adapter = InProcessAdapter(MockBackend(), stall_timeout_s=stall_timeout_s)
    request = GenerateRequest("j", Sampling(max_tokens=3), prompt=prompt)
    return [event async for event in adapter.submit(request)]


@pytest.mark.parametrize(
    ("knob", "kinds", "code"),
    [
        ("token-before-started", [Failed], "ENGINE_ERROR"),
        ("no-terminal", [Started, Token, Token, Token, Failed], "WORKER_RESET"),
        ("double-end", [Started, Token, Token, Token, End], ""),
    ],
)
async def test_a_malformed_engine_stream_becomes_one_typed_terminal(
    knob: str, kinds: list[type], code: str
) -> None:
    events = await run(f"[[mock malformed={knob}]]")
    terminal = assert_well_formed(events)
    assert [type(e) for e in events] == kinds
    assert not code or (isinstance(terminal, Failed) and terminal.code == code)


async def test_a_hung_engine_is_decode_timeout_and_its_generation_is_closed() -> None:
    backend = MockBackend()
    adapter = InProcessAdapter(backend, stall_timeout_s=0.2)
    request = GenerateRequest("j", Sampling(max_tokens=9), prompt="[[mock hang_after=1]]")
    events = [event async for event in adapter.submit(request)]
    assert isinstance(events[-1], Failed) and events[-1].code == "DECODE_TIMEOUT"
    assert not events[-1].before_first_token and backend.health().slots_busy == 0
