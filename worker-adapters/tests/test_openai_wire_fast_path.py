"""The OpenAI frame decoder's fast path reads token frames exactly as a full JSON decode
would, and leaves every frame of another shape to that decode."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from worker_adapters._openai_wire import OpenAIDecoder
from worker_adapters.types import End, Failed, Started, Token

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chat_frame(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return json.dumps({**HEAD, "choices": [choice], **extra}, ensure_ascii=False).encode()


def texts_of(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, Token)]


def decode(decoder: OpenAIDecoder, frames: list[bytes]) -> list[object]:
    return [event for frame in frames for event in decoder.feed(frame)]


@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=30))
def test_token_frames_decode_to_the_same_texts_as_json(texts: list[str]) -> None:
    frames = [chat_frame({"role": "assistant", "content": ""})]
    frames += [chat_frame({"content": text}) for text in texts]
    frames += [chat_frame({}, "stop"), b"[DONE]"]
    events = decode(OpenAIDecoder(chat=True), frames)
    assert isinstance(events[0], Started) and isinstance(events[-1], End)
    assert texts_of(events) == [text for text in texts if text]


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=20))
def test_completion_frames_decode_to_the_same_texts_as_json(texts: list[str]) -> None:
    def frame(text: str, finish: str | None = None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return json.dumps({**HEAD, "object": "text_completion", "choices": [choice]}).encode()

    frames = [frame(text) for text in texts] + [frame("", "length"), b"[DONE]"]
    events = decode(OpenAIDecoder(chat=False), frames)
    assert texts_of(events) == texts
    assert isinstance(events[-1], End) and events[-1].finish_reason == "length"


def test_a_finish_or_usage_on_a_token_frame_is_not_lost() -> None:
    decoder = OpenAIDecoder(chat=True)
    frames = [
        chat_frame({"content": "a"}),
        chat_frame({"content": "b"}),
        chat_frame({"content": "c"}, "length"),
        chat_frame({"content": "d"}, usage={"prompt_tokens": 7, "completion_tokens": 4}),
        b"[DONE]",
    ]
    events = decode(decoder, frames)
    assert texts_of(events) == ["a", "b", "c", "d"]
    end = events[-1]
    assert isinstance(end, End) and end.finish_reason == "length"
    assert end.tokens_in == 7 and end.tokens_out == 4


def test_a_frame_with_two_values_where_the_text_was_is_malformed_not_a_token() -> None:
    decoder = OpenAIDecoder(chat=True)
    good = chat_frame({"content": "ab"})
    decode(decoder, [good, chat_frame({"content": "cd"})])
    broken = good.replace(b'"ab"', b'"a","b"')
    (failure,) = decoder.feed(broken)
    assert isinstance(failure, Failed) and failure.code == "ENGINE_ERROR"


def test_escaped_and_non_ascii_text_is_decoded_like_json() -> None:
    decoder = OpenAIDecoder(chat=True)
    texts = ["plain", 'a "quote"', "back\\slash", "line\nbreak", "é€😀", "\u2028", "tab\t"]
    frames = [chat_frame({"content": t}) for t in texts]
    frames += [json.dumps(json.loads(f), ensure_ascii=True).encode() for f in frames]
    assert texts_of(decode(decoder, frames)) == texts + texts
