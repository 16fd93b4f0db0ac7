"""Logprobs from the in-process llama.cpp engine (WRK-02): the pure log-softmax, the
worker wire, and a real `llorch worker` on the tiny model through the native adapter."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from catalog_core import write_tiny_model
from worker_adapters import (
    Endpoint,
    GenerateRequest,
    Sampling,
    StreamEvent,
    Token,
    TokenLogprob,
    TopLogprob,
    create_adapter,
)
from worker_adapters.engine import coalesce_tokens
from worker_adapters.llamacpp_inproc.logprobs import logprobs_from_logits
from worker_adapters.native.translate import event_from_wire, event_to_wire
from worker_adapters.protocol import Adapter

KEY = "logprobs-test-key"


def piece(token: int) -> bytes:
    return f"<{token}>".encode()


def naive_log_softmax(logits: list[float]) -> list[float]:
    total = sum(math.exp(x) for x in logits)
    return [x - math.log(total) for x in logits]


# -- the pure computation -----------------------------------------------------------------


def test_logprobs_equal_the_log_softmax_of_the_logits() -> None:
    logits = [0.5, -1.0, 2.0, 0.0, 1.5]
    entry = logprobs_from_logits(np.array(logits, dtype=np.float32), 3, 2, piece)
    expected = naive_log_softmax(logits)
    assert entry.token == "<3>" and entry.token_bytes == b"<3>"
    assert entry.logprob == pytest.approx(expected[3], abs=1e-6)
    assert [t.token for t in entry.top] == ["<2>", "<4>"]
    assert [t.logprob for t in entry.top] == pytest.approx([expected[2], expected[4]], abs=1e-6)


def test_huge_logits_do_not_overflow() -> None:
    logits = np.array([1000.0, 1000.0, 0.0, -1000.0], dtype=np.float32)
    entry = logprobs_from_logits(logits, 0, 3, piece)
    assert entry.logprob == pytest.approx(math.log(0.5))
    assert all(math.isfinite(t.logprob) for t in entry.top)
    assert entry.top[2].logprob == pytest.approx(-1000.0 - math.log(2.0), rel=1e-6)


def test_top_list_is_sorted_with_ties_broken_by_token_id_and_capped_at_20() -> None:
    logits = np.zeros(64, dtype=np.float32)
    logits[[7, 3, 40]] = [2.0, 2.0, 5.0]
    entry = logprobs_from_logits(logits, 40, 50, piece)
    assert len(entry.top) == 20
    assert [t.token for t in entry.top[:3]] == ["<40>", "<3>", "<7>"]
    values = [t.logprob for t in entry.top]
    assert values == sorted(values, reverse=True)


def test_no_alternatives_when_none_are_asked() -> None:
    entry = logprobs_from_logits(np.array([1.0, 2.0], dtype=np.float32), 1, 0, piece)
    assert entry.top == ()
    assert entry.logprob <= 0.0


def test_a_certain_token_has_logprob_zero_not_above() -> None:
    entry = logprobs_from_logits(np.array([80.0, -80.0], dtype=np.float32), 0, 1, piece)
    assert entry.logprob == 0.0
    assert entry.top[0].logprob == 0.0


# -- events and the worker wire ----------------------------------------------------------

LP_A = TokenLogprob("a", -0.25, b"a", (TopLogprob("a", -0.25, b"a"), TopLogprob("b", -2.0, b"b")))
LP_B = TokenLogprob("\ufffd", -1.5, b"\xc3", ())


def test_worker_wire_carries_logprobs_with_exact_bytes() -> None:
    event = Token("ab", 2, (LP_A, LP_B))
    assert event_from_wire(event_to_wire(event), tokens_seen=True) == event


def test_worker_wire_without_logprobs_is_unchanged() -> None:
    wire = event_to_wire(Token("x", 1))
    assert not wire.token.logprobs
    assert event_from_wire(wire, tokens_seen=False) == Token("x", 1)


async def test_coalescing_keeps_every_tokens_logprobs_in_order() -> None:
    queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
    for event in (Token("a", 1, (LP_A,)), Token("b", 1, (LP_B,)), None):
        queue.put_nowait(event)
    merged = [event async for event in coalesce_tokens(queue)]
    assert merged == [Token("ab", 2, (LP_A, LP_B))]


# -- a real worker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("logprobs-worker")
    model = write_tiny_model(root / "tiny.gguf")
    port_file = root / "port"
    command = [sys.executable, "-m", "worker_adapters.worker", "--model", str(model)]
    command += ["--slots", "1", "--ctx", "2048", "--threads", "1", "--port-file", str(port_file)]
    process = subprocess.Popen(
        command, env={**os.environ, "LLORCH_WORKER_API_KEY": KEY}, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        assert process.poll() is None and time.monotonic() < deadline, "worker did not start"
        time.sleep(0.02)
    yield f"127.0.0.1:{port_file.read_text().strip()}"
    process.terminate()
    assert process.wait(30) == 0


@pytest.fixture
async def adapter(worker: str) -> AsyncIterator[Adapter]:
    adapter = create_adapter("native", Endpoint(worker, KEY))
    deadline = time.monotonic() + 60
    while (await adapter.health()).state != "ready":
        assert time.monotonic() < deadline, "worker did not become ready"
        await asyncio.sleep(0.05)
    yield adapter
    await adapter.close()


async def tokens(adapter: Adapter, job: str, sampling: Sampling) -> list[Token]:
    request = GenerateRequest(job, sampling, prompt="Once upon a time")
    return [e async for e in adapter.submit(request) if isinstance(e, Token)]


@pytest.mark.integration
async def test_greedy_tokens_are_their_positions_top_choice(adapter: Adapter) -> None:
    sampling = Sampling(max_tokens=12, temperature=0.0, seed=3, logprobs=5)
    events = await tokens(adapter, "greedy", sampling)
    entries = [lp for event in events for lp in event.logprobs]
    assert len(entries) == sum(event.tokens for event in events) == 12
    for entry in entries:
        assert entry.logprob <= 0.0
        assert len(entry.top) == 5
        values = [top.logprob for top in entry.top]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0.0 for v in values)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-5
        assert entry.token_bytes == entry.top[0].token_bytes
        assert entry.logprob == pytest.approx(entry.top[0].logprob, abs=1e-6)
    assert b"".join(e.token_bytes for e in entries).decode(errors="replace") == "".join(
        event.text for event in events
    )


@pytest.mark.integration
async def test_logprobs_zero_gives_each_tokens_own_logprob_only(adapter: Adapter) -> None:
    events = await tokens(adapter, "zero", Sampling(max_tokens=6, seed=5, logprobs=0))
    entries = [lp for event in events for lp in event.logprobs]
    assert len(entries) == 6
    assert all(entry.top == () and entry.logprob <= 0.0 for entry in entries)


@pytest.mark.integration
async def test_no_logprobs_unless_asked(adapter: Adapter) -> None:
    events = await tokens(adapter, "plain", Sampling(max_tokens=6, seed=5))
    assert events and all(event.logprobs == () for event in events)


@pytest.mark.integration
async def test_worker_props_list_the_logprobs_feature(adapter: Adapter) -> None:
    assert "logprobs" in (await adapter.props()).features
