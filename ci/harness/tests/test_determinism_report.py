"""The determinism report (TST-04), as a pure function: what it passes, and what it
names when two pools' streams differ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ci_harness.determinism import PoolRun, compare_runs, first_difference

DIGEST = "ab" * 32


def run(pool: str, streams: Mapping[int, Sequence[bytes]], **identity: str) -> PoolRun:
    fields = {"engine": "llamacpp", "engine_version": "b1-abc", "model_digest": DIGEST}
    fields.update(identity)
    return PoolRun(pool, streams=streams, **fields)


def test_first_difference_is_none_for_the_same_tokens_and_the_index_where_they_part() -> None:
    assert first_difference([b"a", b"b"], [b"a", b"b"]) is None
    assert first_difference([b"a", b"b", b"c"], [b"a", b"x", b"c"]) == 1
    assert first_difference([b"a", b"b"], [b"a", b"b", b"c"]) == 2
    assert first_difference([], []) is None


def test_first_difference_compares_bytes_even_of_split_characters() -> None:
    e_acute = "\u00e9".encode()
    assert first_difference([e_acute[:1], e_acute[1:]], [e_acute[:1], b"\xa8"]) == 1


def test_identical_streams_pass_and_the_report_records_build_and_digest() -> None:
    streams = {seed: [f"t{seed}".encode(), b"x"] for seed in range(64)}
    report = compare_runs(run("a", streams), run("b", dict(streams)), engine_build="sha 12")
    assert report.passed and report.tokens == 128 and report.seeds == tuple(range(64))
    text = report.text()
    assert "byte-identical" in text and "seeds: 64 (0..63)" in text
    assert "engine build: llamacpp b1-abc; sha 12" in text and DIGEST in text


def test_a_differing_stream_fails_naming_seed_position_both_tokens_and_what_came_before() -> None:
    left = {1: [b"a", b"b"], 2: [b"p", b"q", b"r", b"s", b"t", b"u"]}
    right = {1: [b"a", b"b"], 2: [b"p", b"q", b"r", b"s", b"t", b"v"]}
    report = compare_runs(run("ip-a", left), run("ip-b", right), engine_build="")
    assert not report.passed and [d.seed for d in report.differences] == [2]
    (difference,) = report.differences
    assert (difference.index, difference.left, difference.right) == (5, b"u", b"v")
    assert difference.before == (b"q", b"r", b"s", b"t")
    line = report.text().splitlines()[-1]
    assert line == "  seed 2: first differing token #5: b'u' (ip-a) vs b'v' (ip-b), after b'qrst'"


def test_a_stream_that_ends_early_is_a_difference_at_its_end() -> None:
    report = compare_runs(run("a", {7: [b"x"]}), run("b", {7: [b"x", b"y"]}), engine_build="")
    assert "#1: <end of stream> (a) vs b'y' (b)" in report.text()


def test_pools_of_different_builds_or_models_are_no_valid_comparison() -> None:
    streams = {1: [b"a"]}
    report = compare_runs(
        run("a", streams),
        run("b", streams, engine_version="b2-def", model_digest="cd" * 32),
        engine_build="",
    )
    assert not report.passed and not report.differences
    assert [p.split(":")[0] for p in report.problems] == [
        "engine version differs",
        "model digest differs",
    ]


def test_a_seed_missing_from_one_pool_or_no_tokens_at_all_fails() -> None:
    report = compare_runs(run("a", {1: [b"x"], 2: [b"y"]}), run("b", {1: [b"x"]}), engine_build="")
    assert report.problems == ("seeds streamed by one pool only: 2",)
    nothing = compare_runs(run("a", {1: []}), run("b", {1: []}), engine_build="")
    assert not nothing.passed and "no token was compared" in nothing.problems[0]
