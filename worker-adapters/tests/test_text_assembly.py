"""TextAssembler: UTF-8 reassembly across tokens and stop strings that never leak (ADP-03)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from worker_adapters.textstream import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> str:
    return "".join(assembler.feed(p) for p in pieces) + assembler.finish()


def test_a_character_split_across_tokens_is_emitted_once_complete() -> None:
    euro = "€".encode()
    assembler = TextAssembler()
    assert assembler.feed(euro[:1]) == ""
    assert assembler.feed(euro[1:2]) == ""
    assert assembler.feed(euro[2:] + b"x") == "€x"


def test_bytes_that_can_never_be_a_character_become_replacement_characters() -> None:
    assert feed_all(TextAssembler(), [b"a\xff", b"b", b"\xe2\x82"]) == "a\ufffdb\ufffd"


def test_a_stop_string_ends_the_text_before_it() -> None:
    assembler = TextAssembler(("STOP",))
    out = [assembler.feed(p) for p in (b"hello S", b"TO", b"P and more")]
    assert "".join(out) == "hello "
    assert assembler.stopped
    assert assembler.feed(b"late") == "" and assembler.finish() == ""


def test_a_possible_stop_prefix_is_held_back_then_released() -> None:
    assembler = TextAssembler(("</end>",))
    assert assembler.feed(b"text </e") == "text "
    assert assembler.feed(b"lse") == "</else"
    assert not assembler.stopped


def test_the_earliest_of_several_stop_strings_wins() -> None:
    assembler = TextAssembler(("bb", "a"))
    assert assembler.feed(b"xxbbya") == "xx"


@pytest.mark.parametrize("stops", [(), ("zz",), ("é", "q")])
def test_without_a_stop_match_everything_comes_out(stops: tuple[str, ...]) -> None:
    assert feed_all(TextAssembler(stops), [b"ab", "c\u00e8".encode(), b"d"]) == "abc\u00e8d"


@given(st.text(max_size=60), st.lists(st.integers(1, 5), max_size=30))
def test_any_split_of_valid_utf8_reassembles_to_the_same_text(text: str, cuts: list[int]) -> None:
    data = text.encode()
    pieces, position = [], 0
    for size in cuts:
        pieces.append(data[position : position + size])
        position += size
    pieces.append(data[position:])
    assert feed_all(TextAssembler(), pieces) == text


@given(
    st.text(alphabet="abc", max_size=40),
    st.text(alphabet="abc", min_size=1, max_size=3),
    st.integers(1, 4),
)
def test_output_is_the_text_up_to_the_first_stop(text: str, stop: str, step: int) -> None:
    data = text.encode()
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    expected = text[: text.index(stop)] if stop in text else text
    assert feed_all(TextAssembler((stop,)), pieces) == expected
