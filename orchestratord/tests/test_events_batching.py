"""EventLog batching: tokens that arrived together are published together, framed and
numbered exactly as one by one, and a lone token wakes a waiting reader at once."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st
from orchestratord.events import EventLog, text_literal, token_text_json


def test_tokens_appended_together_are_framed_like_tokens_appended_one_by_one() -> None:
    texts = ["a", ' "quoted"', "new\nline", "é"]
    together, one_by_one = EventLog(16), EventLog(16)
    for log in (together, one_by_one):
        log.append("started", "{}")
    assert together.append_tokens(texts, 0) == len(texts)
    for index, text in enumerate(texts):
        one_by_one.append_token(text, index)
    assert together.subscribe(None).pending == one_by_one.subscribe(None).pending
    assert together.last_id == one_by_one.last_id == len(texts)


def test_a_batch_reaches_a_live_reader_in_one_chunk_and_decoded_readers_as_pairs() -> None:
    log = EventLog(16)
    reader, decoded = log.subscribe(None), log.subscribe_decoded()
    log.append_tokens(["x", "y"], 7)
    assert reader.pending == [  # one chunk, encoded once, a frame (own id) per token
        b'id: 0\nevent: token\ndata: {"t":"x","i":7}\n\n'
        b'id: 1\nevent: token\ndata: {"t":"y","i":8}\n\n'
    ]
    replay = log.subscribe(0)  # a reader resuming after event 0 gets event 1's frame alone
    assert replay.pending == [b'id: 1\nevent: token\ndata: {"t":"y","i":8}\n\n']
    assert [json.loads(data)["t"] for _, data in decoded.pending] == ["x", "y"]
    assert [token_text_json(data) for _, data in decoded.pending] == ['"x"', '"y"']


def test_nothing_is_appended_after_the_terminal_event() -> None:
    log = EventLog(16)
    log.append("end", "{}")
    assert log.append_tokens(["late"], 0) == 0
    assert log.last_id == 0


async def test_a_lone_token_wakes_a_waiting_reader_without_waiting_for_more() -> None:
    log = EventLog(16)
    subscriber = log.subscribe(None)
    reader = asyncio.create_task(subscriber.next_chunk(heartbeat_s=60.0))
    await asyncio.sleep(0)  # the reader is waiting now
    assert not reader.done()
    log.append_tokens(["only"], 0)
    chunk = await asyncio.wait_for(reader, timeout=5.0)
    assert chunk == b'id: 0\nevent: token\ndata: {"t":"only","i":0}\n\n'


@given(st.text(max_size=40))
def test_text_literal_is_the_json_encoding_of_the_text(text: str) -> None:
    assert text_literal(text) == json.dumps(text, ensure_ascii=False)
