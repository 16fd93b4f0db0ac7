"""`llorch worker` on llama.cpp, as a real process, through the native adapter (WRK-01/02)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from catalog_core import write_tiny_model
from worker_adapters import (
    ChatTurn,
    End,
    Endpoint,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
    create_adapter,
)
from worker_adapters.errors import AdapterError, RequestRejected
from worker_adapters.protocol import Adapter

KEY = "worker-test-key"


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("worker")
    model = write_tiny_model(root / "tiny.gguf")
    port_file = root / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker_adapters.worker",
            "--model",
            str(model),
            "--slots",
            "2",
            "--ctx",
            "4096",
            "--threads",
            "1",
            "--port-file",
            str(port_file),
        ],
        env={**os.environ, "LLORCH_WORKER_API_KEY": KEY},
        stderr=subprocess.DEVNULL,
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
    for _ in range(500):
        if (await adapter.health()).state == "ready":
            break
        await asyncio.sleep(0.02)
    yield adapter
    await adapter.close()


async def run(adapter: Adapter, **fields: object) -> list[StreamEvent]:
    sampling = Sampling(**{"max_tokens": 16, "seed": 1, **fields.pop("sampling", {})})  # type: ignore[arg-type, dict-item]
    request = GenerateRequest(str(fields.pop("job_id", "job")), sampling, **fields)  # type: ignore[arg-type]
    return [event async for event in adapter.submit(request)]


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


async def test_props_describe_the_engine_and_its_slots(adapter: Adapter) -> None:
    props = await adapter.props()
    assert props.engine == "llamacpp-inproc" and props.engine_version.startswith("llama-cpp")
    assert (props.ctx, props.slots_total, props.chat_template) == (4096, 2, True)
    assert {"completion", "chat", "grammar", "json_schema"} <= props.features
    assert props.incarnation > 0


async def test_a_call_without_the_pool_key_is_refused(worker: str) -> None:
    stranger = create_adapter("native", Endpoint(worker, "wrong-key"))
    with pytest.raises(AdapterError):
        await stranger.health()
    events = await run(stranger, prompt="x")
    assert len(events) == 1 and isinstance(events[0], Failed)
    await stranger.close()


async def test_generation_streams_started_tokens_and_an_exact_end(adapter: Adapter) -> None:
    events = await run(adapter, prompt="Hello world", sampling={"max_tokens": 40})
    assert isinstance(events[0], Started) and events[0].tokens_in >= 3
    end = events[-1]
    assert isinstance(end, End) and end.tokens_out == 40 and end.finish_reason == "length"
    assert sum(e.tokens for e in events if isinstance(e, Token)) <= 40
    assert end.ttft_ms > 0 and end.decode_time_ms >= 0


async def test_the_same_seed_gives_the_same_text_and_another_seed_differs(adapter: Adapter) -> None:
    first = text_of(await run(adapter, prompt="abc", sampling={"seed": 42, "max_tokens": 30}))
    again = text_of(await run(adapter, prompt="abc", sampling={"seed": 42, "max_tokens": 30}))
    other = text_of(await run(adapter, prompt="abc", sampling={"seed": 43, "max_tokens": 30}))
    assert first == again and first != other


async def test_chat_renders_the_models_template_around_the_messages(adapter: Adapter) -> None:
    plain = await run(adapter, prompt="hi")
    chat = await run(adapter, messages=(ChatTurn("user", "hi"),))
    assert isinstance(plain[0], Started) and isinstance(chat[0], Started)
    assert chat[0].tokens_in > plain[0].tokens_in + 5
    assert isinstance(chat[-1], End)


async def test_a_prompt_that_does_not_fit_the_context_is_refused_before_generating(
    adapter: Adapter,
) -> None:
    events = await run(adapter, prompt="word " * 100, sampling={"max_tokens": 4090})
    assert len(events) == 1 and isinstance(events[0], Failed)
    failure = events[0]
    assert failure.code == "CONTEXT_OVERFLOW" and not failure.retriable
    assert failure.before_first_token


async def test_a_grammar_constrains_the_output(adapter: Adapter) -> None:
    grammar = 'root ::= ("yes" | "no") "."'
    for seed in range(3):
        events = await run(adapter, prompt="?", sampling={"grammar": grammar, "seed": seed})
        assert text_of(events) in ("yes.", "no."), text_of(events)
        assert isinstance(events[-1], End) and events[-1].finish_reason == "stop"


async def test_a_json_schema_gives_json_that_validates(adapter: Adapter) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    events = await run(
        adapter, prompt="{", sampling={"json_schema": json.dumps(schema), "max_tokens": 64}
    )
    value = json.loads(text_of(events))
    assert isinstance(value, dict) and isinstance(value["ok"], bool) and set(value) == {"ok"}


async def test_an_invalid_grammar_is_a_typed_error_never_unconstrained_text(
    adapter: Adapter,
) -> None:
    events = await run(adapter, prompt="x", sampling={"grammar": "root ::= ("})
    assert [type(e) for e in events] == [Failed]
    assert isinstance(events[0], Failed) and events[0].code == "INVALID_PARAMS"


async def test_tokenize_reports_byte_offsets_that_slice_the_text(adapter: Adapter) -> None:
    text = "Hello wörld, tokens!"
    tokenized = await adapter.tokenize(text, with_offsets=True)
    data = text.encode()
    assert len(tokenized.ids) == len(tokenized.byte_offsets) >= 3
    assert tokenized.byte_offsets[0] == 0
    assert list(tokenized.byte_offsets) == sorted(tokenized.byte_offsets)
    assert await adapter.detokenize(tokenized.ids) == data.decode()


async def test_cancel_stops_generation_between_tokens(adapter: Adapter) -> None:
    request = GenerateRequest("long-job", Sampling(max_tokens=4000, seed=3), prompt="go")
    stream = adapter.submit(request)
    received = [await anext(stream), await anext(stream)]
    assert isinstance(received[1], Token)
    started = time.monotonic()
    await adapter.cancel("long-job")
    rest = [event async for event in stream]
    assert time.monotonic() - started < 2.0
    assert not rest or isinstance(rest[-1], (End, Failed))
    assert sum(e.tokens for e in received + rest if isinstance(e, Token)) < 4000


async def test_two_slots_generate_at_the_same_time(adapter: Adapter) -> None:
    first = adapter.submit(GenerateRequest("s1", Sampling(max_tokens=2000, seed=1), prompt="a"))
    second = adapter.submit(GenerateRequest("s2", Sampling(max_tokens=2000, seed=2), prompt="b"))
    assert isinstance(await anext(first), Started)
    assert isinstance(await anext(second), Started)
    assert (await adapter.health()).slots_busy == 2
    await adapter.cancel("s1")
    await adapter.cancel("s2")
    assert [e async for e in first] and [e async for e in second]


async def test_a_prompt_sharing_a_prefix_lands_on_the_slot_that_cached_it(adapter: Adapter) -> None:
    shared = "You are a careful assistant. " * 20
    first = await run(adapter, prompt=shared + "Question one?", sampling={"max_tokens": 4})
    await run(adapter, prompt="Something unrelated entirely.", sampling={"max_tokens": 4})
    again = await run(adapter, prompt=shared + "Question two?", sampling={"max_tokens": 4})
    assert isinstance(first[0], Started) and isinstance(again[0], Started)
    assert again[0].tokens_cached >= first[0].tokens_in - 8


# -- hostile input (SEC-03): refused with a reason, and the worker lives on -------------

TINY_VOCAB = 512


async def _still_serves(adapter: Adapter) -> None:
    assert (await adapter.health()).state == "ready"
    assert isinstance(
        (await run(adapter, prompt="still here", sampling={"max_tokens": 2}))[-1], End
    )


@pytest.mark.parametrize("token", [TINY_VOCAB, TINY_VOCAB + 10**6, -1, -(2**31)])
async def test_detokenize_refuses_ids_outside_the_vocabulary_and_the_worker_lives(
    adapter: Adapter, token: int
) -> None:
    with pytest.raises(RequestRejected) as refused:
        await adapter.detokenize((5, token))
    assert refused.value.code == "INVALID_PARAMS" and "tokens[1]" in str(refused.value)
    assert await adapter.detokenize((TINY_VOCAB - 1,)) is not None  # the last id is fine
    await _still_serves(adapter)


async def test_detokenize_of_many_ids_matches_the_text_piece_by_piece(adapter: Adapter) -> None:
    text = "Hello wörld, tokens! " * 2000
    ids = (await adapter.tokenize(text)).ids
    assert len(ids) > 5000
    assert await adapter.detokenize(ids) == text


@pytest.mark.parametrize(
    "schema", [{"foo": []}, {"type": "no-such-type"}, {"$ref": "#/nowhere"}, {"enum": 5}]
)
async def test_a_json_schema_the_converter_refuses_is_invalid_params_not_retriable(
    adapter: Adapter, schema: dict[str, object]
) -> None:
    events = await run(adapter, prompt="x", sampling={"json_schema": json.dumps(schema)})
    assert [type(e) for e in events] == [Failed]
    failure = events[0]
    assert isinstance(failure, Failed)
    assert (failure.code, failure.retriable, failure.before_first_token) == (
        "INVALID_PARAMS",
        False,
        True,
    )
    await _still_serves(adapter)
