"""EventLog: SSE framing, monotonically increasing ids, replay, terminal close (API-04)."""

from __future__ import annotations

import asyncio

import pytest
from orchestratord.events import HEARTBEAT, EventLog


def test_frames_carry_increasing_ids_and_the_event_name() -> None:
    log = EventLog(16)
    log.append("started", "{}")
    log.append_token('a "quoted"\nline', 0)
    subscriber = log.subscribe(None)
    assert subscriber.pending == [
        b"id: 0\nevent: started\ndata: {}\n\n",
        b'id: 1\nevent: token\ndata: {"t":"a \\"quoted\\"\\nline","i":0}\n\n',
    ]


def test_nothing_can_follow_the_terminal_event() -> None:
    log = EventLog(16)
    assert log.append("end", "{}")
    assert not log.append_token("late", 1)
    assert log.closed and log.last_id == 0


def test_resuming_replays_only_events_after_the_given_id() -> None:
    log = EventLog(16)
    for index in range(4):
        log.append_token(str(index), index)
    subscriber = log.subscribe(1)
    assert [frame.split(b"\n")[0] for frame in subscriber.pending] == [b"id: 2", b"id: 3"]


def test_resuming_before_the_replay_window_is_refused() -> None:
    log = EventLog(2)
    for index in range(5):
        log.append_token(str(index), index)
    with pytest.raises(ValueError, match="no longer in the replay buffer"):
        log.subscribe(0)
    assert len(log.subscribe(2).pending) == 2


async def test_live_frames_reach_a_waiting_subscriber_and_the_stream_ends() -> None:
    log = EventLog(16)
    subscriber = log.subscribe(None)
    reader = asyncio.create_task(subscriber.next_chunk(5.0))
    await asyncio.sleep(0)
    log.append_token("x", 0)
    chunk = await reader
    assert chunk is not None and chunk.startswith(b"id: 0\nevent: token")
    log.append("end", "{}")
    assert (await subscriber.next_chunk(5.0) or b"").startswith(b"id: 1\nevent: end")
    assert await subscriber.next_chunk(5.0) is None


async def test_frames_that_piled_up_are_sent_in_one_chunk() -> None:
    log = EventLog(16)
    subscriber = log.subscribe(None)
    for index in range(3):
        log.append_token(str(index), index)
    chunk = await subscriber.next_chunk(5.0)
    assert chunk is not None and chunk.count(b"event: token") == 3


async def test_a_silent_stream_gets_a_heartbeat_comment() -> None:
    subscriber = EventLog(4).subscribe(None)
    assert await subscriber.next_chunk(0.01) == HEARTBEAT
