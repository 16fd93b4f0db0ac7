"""The pure pieces of the in-process vLLM engine (WRK-03): request mapping, logprobs,
delta assembly, refusals before the engine, KV cache size. The real engine runs in
ci/harness/tests/test_vllm_inproc_pool.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from worker_adapters.types import Sampling, Token, TokenLogprob, TopLogprob
from worker_adapters.vllm_inproc.plan import (
    MIN_KV_CACHE_BYTES,
    DeltaAssembler,
    check_prompt,
    kv_cache_bytes,
    sampling_args,
    token_logprobs,
)


@dataclass
class Logprob:  # the shape of vLLM's `vllm.logprobs.Logprob`
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def test_unset_parameters_are_left_to_vllm_and_max_tokens_is_always_sent() -> None:
    assert sampling_args(Sampling(max_tokens=5)) == {"max_tokens": 5}


def test_every_sampling_parameter_lands_under_vllms_name() -> None:
    sampling = Sampling(
        max_tokens=9,
        temperature=0.3,
        top_k=7,
        top_p=0.9,
        min_p=0.05,
        repeat_penalty=1.1,
        presence_penalty=0.2,
        frequency_penalty=0.4,
        seed=11,
        stop=("END", "\n\n"),
        logprobs=3,
    )
    assert sampling_args(sampling) == {
        "max_tokens": 9,
        "temperature": 0.3,
        "top_k": 7,
        "top_p": 0.9,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.4,
        "seed": 11,
        "stop": ["END", "\n\n"],
        "logprobs": 3,
    }


def test_a_grammar_or_a_json_schema_becomes_a_structured_output() -> None:
    grammar = sampling_args(Sampling(max_tokens=4, grammar='root ::= "a"'))
    schema = sampling_args(Sampling(max_tokens=4, json_schema='{"type": "object"}'))
    assert grammar["structured"] == {"grammar": 'root ::= "a"'}
    assert schema["structured"] == {"json": '{"type": "object"}'}


def test_zero_logprobs_still_asks_for_the_sampled_tokens_own() -> None:
    assert sampling_args(Sampling(max_tokens=4, logprobs=0))["logprobs"] == 0


def test_a_tokens_logprobs_are_the_sampled_one_and_the_top_n_by_rank() -> None:
    candidates = {
        5: Logprob(-2.5, 3, "c"),  # sampled, but not the most likely
        1: Logprob(-0.1, 1, "a"),
        9: Logprob(-1.2, 2, "é"),
    }
    entry = token_logprobs(5, candidates, 2)
    assert entry == TokenLogprob(
        "c", -2.5, b"c", (TopLogprob("a", -0.1, b"a"), TopLogprob("é", -1.2, "é".encode()))
    )
    assert token_logprobs(5, candidates, 0).top == ()


def test_logprobs_without_the_sampled_token_are_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="sampled token 4"):
        token_logprobs(4, {1: Logprob(-0.1, 1, "a")}, 1)


def test_tokens_whose_text_vllm_held_back_are_counted_into_the_next_delta() -> None:
    assembler = DeltaAssembler()
    first = TokenLogprob("\ufffd", -0.5)
    second = TokenLogprob("\ufffd", -0.7)
    assert assembler.feed("", 1, (first,)) is None  # the first byte of a character
    assert assembler.feed("日", 1, (second,)) == Token("日", 2, (first, second))
    assert assembler.feed(" x", 1) == Token(" x", 1)
    assert assembler.produced == 3


def test_an_empty_or_too_long_prompt_is_refused_before_the_engine() -> None:
    assert check_prompt(0, 4, 512) == (
        "INVALID_PARAMS",
        "the prompt is empty (no tokens to start from)",
    )
    code, message = check_prompt(500, 13, 512) or ("", "")
    assert code == "CONTEXT_OVERFLOW" and "500 tokens" in message and "512" in message
    assert check_prompt(500, 12, 512) is None


def test_the_kv_cache_is_ctx_times_slots_of_float32_kv_in_whole_mib() -> None:
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 128}
    per_token = 2 * 4 * 32 * 2 * 4  # layers x kv heads x head size x (K, V) x float32
    assert kv_cache_bytes(config, 2048, 2) == MIN_KV_CACHE_BYTES  # 8 MiB, at least 16
    assert kv_cache_bytes(config, 8192, 8) == -(-per_token * 8192 * 8 // (1 << 20)) << 20
    grouped = {**config, "num_key_value_heads": 2, "head_dim": 64}
    assert kv_cache_bytes(grouped, 8192, 8) == 2 * 2 * 64 * 2 * 4 * 8192 * 8


def test_a_config_without_the_models_shape_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="num_hidden_layers"):
        kv_cache_bytes({"hidden_size": 128}, 512, 1)
