"""The prompt-prefix index and prefill rates that placement's prefix affinity reads (PLC-03)."""

from __future__ import annotations

import pytest
from orchestratord.stats import PREFIX_CHUNK_BYTES, PoolStats, prefix_keys

SYSTEM = "s" * (4 * PREFIX_CHUNK_BYTES)


def test_remember_counts_the_leading_chunks_the_pool_had_already_served() -> None:
    stats = PoolStats()
    first = prefix_keys(SYSTEM + "a" * PREFIX_CHUNK_BYTES)
    assert stats.remember(first) == 0
    assert stats.remember(first) == len(first) == 5
    other_turn = prefix_keys(SYSTEM + "b" * PREFIX_CHUNK_BYTES)
    assert stats.remember(other_turn) == 4  # the shared system prompt, not the new turn


def test_prefill_rate_counts_evaluated_tokens_only() -> None:
    stats = PoolStats()
    stats.observe(prefill_tokens=1000, tokens_out=8, prefill_s=2.0, decode_s=0.5)
    assert stats.prefill_tokens_per_s == pytest.approx(500.0)
    # A prompt served from the cache evaluates (almost) nothing: no prefill sample, so the
    # pool does not look faster at prefill than it is.
    stats.observe(prefill_tokens=0.0, tokens_out=8, prefill_s=0.1, decode_s=0.5)
    assert stats.prefill_tokens_per_s == pytest.approx(500.0)
