"""SSE framing on raw bytes (`_sse.SseParser`): frames split anywhere, CRLF, comments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from worker_adapters._sse import SseParser, SseTooLarge


def parse_all(chunks: list[bytes]) -> tuple[list[bytes], bool]:
    parser = SseParser()
    payloads = [p for chunk in chunks for p in parser.feed(chunk)]
    return payloads, parser.pending


@pytest.mark.parametrize(
    ("wire", "payloads"),
    [
        (b'data: {"a":1}\n\n', [b'{"a":1}']),
        (b"data:x\n\n", [b"x"]),  # no space after the colon
        (b"data:  two spaces\n\n", [b" two spaces"]),  # only one space is dropped
        (b"data: [DONE]\r\n\r\n", [b"[DONE]"]),  # CRLF (sse-starlette)
        (b"data: a\rdata: b\r\rdata: c\n\n", [b"a\nb", b"c"]),  # lone CR line ends
        (b": ping\n\ndata: x\n\n", [b"x"]),  # a comment-only event is not dispatched
        (b":\n\n", []),  # llama-server's colon-only keep-alive
        (b": keep-alive\ndata: y\n\n", [b"y"]),  # a comment inside an event
        (b"event: message\nid: 7\nretry: 10\ndata: z\n\n", [b"z"]),  # other fields ignored
        (b"data: line1\ndata: line2\n\n", [b"line1\nline2"]),
        (b"data: a\n\n\n\ndata: b\n\n", [b"a", b"b"]),  # extra blank lines
        (b"id: 1\n\n", []),  # an event without data
    ],
)
def test_frames_are_read_as_the_sse_spec_says(wire: bytes, payloads: list[bytes]) -> None:
    assert parse_all([wire]) == (payloads, False)


def test_an_event_cut_off_at_eof_is_held_and_reported_as_pending() -> None:
    payloads, pending = parse_all([b"data: whole\n\n", b'data: {"cut'])
    assert payloads == [b"whole"] and pending


def test_a_crlf_split_between_chunks_still_ends_the_event() -> None:
    assert parse_all([b"data: a\r", b"\n\r", b"\n"]) == ([b"a"], False)


def test_an_event_that_never_ends_is_refused_past_the_limit() -> None:
    parser = SseParser(max_bytes=64)
    with pytest.raises(SseTooLarge):
        parser.feed(b"data: " + b"x" * 100)


WIRE = (
    'data: {"content":"h\u00e9"}\n\n: ping\n\ndata: {"content":"\u20ac\u65e5"}\r\n\r\n'
    'data: {"content":"\U0001f642"}\n\ndata: [DONE]\n\n'
).encode()
EXPECTED = [
    '{"content":"h\u00e9"}'.encode(),
    '{"content":"\u20ac\u65e5"}'.encode(),
    '{"content":"\U0001f642"}'.encode(),
    b"[DONE]",
]


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_a_stream_cut_at_any_byte_gives_the_same_frames(cut: int) -> None:
    assert parse_all([WIRE[:cut], WIRE[cut:]]) == (EXPECTED, False)


@given(st.lists(st.integers(0, len(WIRE)), max_size=12))
def test_a_stream_cut_into_any_chunks_gives_the_same_frames(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [WIRE[a:b] for a, b in zip([0, *points], [*points, len(WIRE)], strict=True)]
    assert parse_all(chunks) == (EXPECTED, False)
