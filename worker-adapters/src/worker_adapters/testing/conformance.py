"""The adapter conformance suite (ADP-07): one set of tests every adapter passes.

Use it by subclassing `AdapterConformance` in a test module and providing a `target`
fixture that yields a `scenarios.ConformanceTarget` (see `targets` for the fakes, the
mock engine, `llorch worker`, and real llama-server / llama_cpp.server processes):

    class TestVllmConformance(AdapterConformance):
        @pytest.fixture
        async def target(self) -> AsyncIterator[ConformanceTarget]:
            async with fake_http_target("vllm") as target:
                yield target

What every adapter must show, whatever its engine:
- ordering: `Started`, then `Token`*, then exactly one terminal (`End` or `Failed`),
  nothing after it; a `Failed` may come without `Started`;
- completion and chat streams end with `End`, with the exact text where it is known;
- UTF-8: multi-byte characters arrive whole and exact, whatever the chunking;
- cancel: after `cancel()` returns no token is delivered, the stream ends with one
  terminal (`Failed CANCELLED`, or `End` with finish_reason `cancelled`) and the engine
  itself stops within 2 s; closing the stream early releases the engine too; cancel is
  idempotent and ignores unknown ids;
- typed errors: an engine failure before the first token is retriable with
  `before_first_token`; one after tokens is ENGINE_ERROR without it; a refused request
  is INVALID_PARAMS or CONTEXT_OVERFLOW and not retriable;
- truncation: a stream that stops without the engine's terminal marker is
  WORKER_RESET, retriable;
- timeouts: an engine that stops producing ends the job with DECODE_TIMEOUT;
- an unreachable engine is WORKER_RESET with `engine_lost`.

This module imports pytest: it is test support, shipped in `testing` like the fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from worker_adapters.protocol import Adapter
from worker_adapters.testing.scenarios import Arranged, ConformanceTarget, Scenario
from worker_adapters.types import End, Failed, Started, StreamEvent, Token

__all__ = ["AdapterConformance", "assert_well_formed", "text_of"]

CANCEL_REACHES_ENGINE_S = 2.0
STREAM_BOUND_S = 60.0  # a test that waits longer than this has found a hang


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


def assert_well_formed(events: list[StreamEvent]) -> End | Failed:
    """The ordering contract; returns the terminal event."""
    assert events, "the stream yielded nothing"
    *body, terminal = events
    assert isinstance(terminal, End | Failed), f"no terminal event: {events[-3:]}"
    assert not any(isinstance(e, End | Failed) for e in body), "more than one terminal"
    if isinstance(terminal, End) or any(isinstance(e, Token) for e in body):
        assert body and isinstance(body[0], Started), f"Started must come first: {events[:2]}"
    assert sum(isinstance(e, Started) for e in body) <= 1, "more than one Started"
    return terminal


async def _arranged(target: ConformanceTarget, scenario: Scenario, job_id: str) -> Arranged:
    arranged = await target.arrange(scenario, job_id)
    if isinstance(arranged, str):
        pytest.skip(f"{scenario.value}: {arranged}")
    return arranged


async def _collect(adapter: Adapter, arranged: Arranged) -> list[StreamEvent]:
    async def run() -> list[StreamEvent]:
        events: list[StreamEvent] = []
        async with contextlib.aclosing(adapter.submit(arranged.request)) as stream:  # type: ignore[type-var]
            async for event in stream:
                events.append(event)
                if arranged.disrupt is not None and sum(isinstance(e, Token) for e in events) == 1:
                    await arranged.disrupt()
        return events

    return await asyncio.wait_for(run(), STREAM_BOUND_S)


async def _run(
    target: ConformanceTarget, scenario: Scenario, job_id: str
) -> tuple[Arranged, list[StreamEvent]]:
    arranged = await _arranged(target, scenario, job_id)
    events = await _collect(arranged.adapter or target.adapter, arranged)
    return arranged, events


class AdapterConformance:
    """The shared suite; subclasses provide the `target` fixture."""

    async def test_a_completion_is_started_tokens_and_one_end(
        self, target: ConformanceTarget
    ) -> None:
        arranged, events = await _run(target, Scenario.COMPLETES, "conf-complete")
        end = assert_well_formed(events)
        assert isinstance(end, End), end
        assert any(isinstance(e, Token) for e in events)
        if arranged.text is not None:
            assert text_of(events) == arranged.text
        assert end.tokens_out >= 1 and end.ttft_ms >= 0 and end.decode_time_ms >= 0

    async def test_a_chat_request_streams_in_the_same_order(
        self, target: ConformanceTarget
    ) -> None:
        arranged, events = await _run(target, Scenario.CHAT, "conf-chat")
        assert isinstance(assert_well_formed(events), End)
        if arranged.text is not None:
            assert text_of(events) == arranged.text

    async def test_multibyte_text_arrives_whole_and_exact(self, target: ConformanceTarget) -> None:
        arranged, events = await _run(target, Scenario.UTF8, "conf-utf8")
        assert isinstance(assert_well_formed(events), End)
        assert all("\ufffd" not in e.text for e in events if isinstance(e, Token))
        assert arranged.text is not None and text_of(events) == arranged.text

    async def test_cancel_stops_tokens_and_reaches_the_engine_within_2s(
        self, target: ConformanceTarget
    ) -> None:
        arranged = await _arranged(target, Scenario.LONG, "conf-cancel")
        adapter = arranged.adapter or target.adapter
        stream = adapter.submit(arranged.request)
        before = [await anext(stream)]
        while sum(isinstance(e, Token) for e in before) < 2:
            before.append(await anext(stream))
        await adapter.cancel("conf-cancel")
        after = await asyncio.wait_for(_drain(stream), CANCEL_REACHES_ENGINE_S)
        assert not any(isinstance(e, Token | Started) for e in after), after
        terminal = assert_well_formed(before + after)
        assert _is_cancel(terminal), terminal
        await asyncio.wait_for(target.engine_released("conf-cancel"), CANCEL_REACHES_ENGINE_S)

    async def test_closing_the_stream_early_releases_the_engine(
        self, target: ConformanceTarget
    ) -> None:
        arranged = await _arranged(target, Scenario.LONG, "conf-close")
        stream = (arranged.adapter or target.adapter).submit(arranged.request)
        seen: list[StreamEvent] = []
        while not any(isinstance(e, Token) for e in seen):
            seen.append(await anext(stream))
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(target.engine_released("conf-close"), CANCEL_REACHES_ENGINE_S)

    async def test_cancel_is_idempotent_and_ignores_unknown_jobs(
        self, target: ConformanceTarget
    ) -> None:
        await target.adapter.cancel("conf-never-submitted")
        _, events = await _run(target, Scenario.COMPLETES, "conf-twice")
        await target.adapter.cancel("conf-twice")
        await target.adapter.cancel("conf-twice")
        assert isinstance(assert_well_formed(events), End)

    async def test_an_engine_failure_before_the_first_token_is_typed_and_retriable(
        self, target: ConformanceTarget
    ) -> None:
        _, events = await _run(target, Scenario.ERROR_BEFORE_FIRST, "conf-early-error")
        failure = assert_well_formed(events)
        assert isinstance(failure, Failed) and not any(isinstance(e, Token) for e in events)
        assert failure.code in {"ENGINE_ERROR", "POOL_UNREADY", "NO_CAPACITY", "WORKER_RESET"}
        assert failure.retriable and failure.before_first_token

    async def test_an_engine_failure_after_tokens_is_engine_error(
        self, target: ConformanceTarget
    ) -> None:
        _, events = await _run(target, Scenario.ERROR_MID_STREAM, "conf-late-error")
        failure = assert_well_formed(events)
        assert any(isinstance(e, Token) for e in events)
        assert isinstance(failure, Failed) and failure.code == "ENGINE_ERROR", failure
        assert not failure.before_first_token

    async def test_a_refused_request_is_typed_and_not_retriable(
        self, target: ConformanceTarget
    ) -> None:
        _, events = await _run(target, Scenario.REJECTED, "conf-rejected")
        failure = assert_well_formed(events)
        assert isinstance(failure, Failed), failure
        assert failure.code in {"INVALID_PARAMS", "CONTEXT_OVERFLOW"}, failure
        assert not failure.retriable and failure.before_first_token
        assert not any(isinstance(e, Token) for e in events)

    async def test_a_stream_cut_without_its_terminal_marker_is_worker_reset(
        self, target: ConformanceTarget
    ) -> None:
        _, events = await _run(target, Scenario.TRUNCATED, "conf-truncated")
        failure = assert_well_formed(events)
        assert isinstance(failure, Failed) and failure.code == "WORKER_RESET", failure
        assert failure.retriable and not failure.before_first_token

    async def test_an_engine_that_stops_producing_is_decode_timeout(
        self, target: ConformanceTarget
    ) -> None:
        _, events = await _run(target, Scenario.STALL, "conf-stall")
        failure = assert_well_formed(events)
        assert isinstance(failure, Failed) and failure.code == "DECODE_TIMEOUT", failure
        assert failure.retriable

    async def test_an_unreachable_engine_is_worker_reset_with_engine_lost(
        self, target: ConformanceTarget
    ) -> None:
        _, events = await _run(target, Scenario.ENGINE_DOWN, "conf-down")
        assert len(events) == 1, events
        failure = events[0]
        assert isinstance(failure, Failed) and failure.code == "WORKER_RESET", failure
        assert failure.retriable and failure.before_first_token and failure.engine_lost


async def _drain(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


def _is_cancel(terminal: End | Failed) -> bool:
    if isinstance(terminal, Failed):
        return terminal.code == "CANCELLED" and not terminal.retriable
    return terminal.finish_reason == "cancelled"
