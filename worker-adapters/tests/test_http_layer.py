"""The shared HTTP layer (ADP-05): retries only before the first byte, keep-alive reuse,
cancel at any point of a stream, error-status mapping, and secrets never leaking."""

from __future__ import annotations

import asyncio
import ssl
import traceback
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web
from specs.tls import ClientTls
from worker_adapters import End, Endpoint, Failed, GenerateRequest, Sampling, StreamEvent, Token
from worker_adapters._http import HttpClient, HttpSettings, redact
from worker_adapters.errors import AdapterError, EngineStatusError
from worker_adapters.http_errors import failure_from_status
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.testing import llamacpp_transcripts as llama
from worker_adapters.testing.fake_engines import FakeLlamaServer
from worker_adapters.testing.fake_server import json_response
from worker_adapters.testing.processes import free_port
from worker_adapters.testing.scenarios import Scenario
from worker_adapters.testing.transcripts import Transcript, http_error, stream

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "sk-test-0123456789abcdef"
SETTINGS = HttpSettings(
    stall_timeout_s=5.0, retry_attempts=3, retry_initial_s=0.001, retry_max_s=0.01
)
LOADING = http_error(
    "loading", "reconstructed: §A1.1", 503, {"error": {"code": 503, "message": "Loading model"}}
)
OK = llama.completion("ok", ["a", "b"])


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlamaServer]:
    async with FakeLlamaServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def adapter(fake: FakeLlamaServer) -> LlamaServerAdapter:
    return LlamaServerAdapter(Endpoint(fake.address, KEY), SETTINGS)


def request(job_id: str) -> GenerateRequest:
    return GenerateRequest(job_id, Sampling(max_tokens=8), prompt="hi")


async def run(adapter: LlamaServerAdapter, job_id: str) -> list[StreamEvent]:
    return [event async for event in adapter.submit(request(job_id))]


async def test_a_503_before_the_stream_is_retried_then_succeeds(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.script("j", LOADING, OK)
    events = await run(adapter, "j")
    assert isinstance(events[-1], End) and len(fake.requests_of("j")) == 2


async def test_retries_are_bounded_and_end_retriable_pool_unready(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.script("j", LOADING)
    events = await run(adapter, "j")
    assert events == [events[0]] and isinstance(events[0], Failed)
    assert (events[0].code, events[0].retriable, events[0].before_first_token) == (
        "POOL_UNREADY",
        True,
        True,
    )
    assert len(fake.requests_of("j")) == SETTINGS.retry_attempts


@pytest.mark.parametrize(
    "transcript",
    [
        llama.completion("cut", ["a"], stop_type=None),
        llama.for_scenario(Scenario.ERROR_MID_STREAM),
    ],
    ids=["truncated", "error-frame"],
)
async def test_nothing_is_retried_once_the_stream_has_started(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter, transcript: Transcript
) -> None:
    fake.script("j", transcript, OK)
    events = await run(adapter, "j")
    assert isinstance(events[-1], Failed) and len(fake.requests_of("j")) == 1


async def test_a_refused_connection_is_worker_reset_with_engine_lost() -> None:
    dead = LlamaServerAdapter(Endpoint(f"127.0.0.1:{free_port()}"), SETTINGS)
    (failure,) = await run(dead, "j")
    assert isinstance(failure, Failed) and failure.code == "WORKER_RESET"
    assert failure.engine_lost and failure.retriable and failure.before_first_token


async def test_a_finished_stream_gives_its_connection_back_for_the_next(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.default = OK
    assert isinstance((await run(adapter, "first"))[-1], End)
    assert isinstance((await run(adapter, "second"))[-1], End)
    assert fake.seen("first").peer == fake.seen("second").peer


async def test_no_token_follows_a_cancel_even_from_an_already_read_chunk(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    frames = b"".join(llama.completion("x", ["t"] * 200).writes)
    fake.script("j", Transcript("one-write", "synthetic: 200 frames in one write", (frames,)))
    events = adapter.submit(request("j"))
    received = [await anext(events), await anext(events)]
    await adapter.cancel("j")
    rest = [event async for event in events]
    assert isinstance(received[1], Token) and not any(isinstance(e, Token) for e in rest)
    assert len(rest) == 1 and isinstance(rest[0], Failed) and rest[0].code == "CANCELLED"


async def test_cancel_while_the_engine_holds_its_status_line_closes_the_connection(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.script("j", Transcript("prefill", "synthetic: long prefill", OK.writes, hold_s=60))
    consumer = asyncio.ensure_future(run(adapter, "j"))
    await fake.arrival("j").wait()
    await adapter.cancel("j")
    await asyncio.wait_for(fake.seen("j").disconnected.wait(), 2.0)
    (failure,) = await asyncio.wait_for(consumer, 2.0)
    assert isinstance(failure, Failed) and failure.code == "CANCELLED"


async def test_pings_do_not_hold_off_the_stall_timeout(fake: FakeLlamaServer) -> None:
    adapter = LlamaServerAdapter(Endpoint(fake.address, KEY), HttpSettings(stall_timeout_s=0.3))
    fake.script("j", stream("pinging", "synthetic", [], ending="ping"))
    (failure,) = await run(adapter, "j")
    assert isinstance(failure, Failed) and failure.code == "DECODE_TIMEOUT"
    assert fake.seen("j").disconnected.is_set() or await _disconnects(fake, "j")


async def _disconnects(fake: FakeLlamaServer, job_id: str) -> bool:
    await asyncio.wait_for(fake.seen(job_id).disconnected.wait(), 2.0)
    return True


@pytest.mark.parametrize(
    ("status", "error_type", "message", "code", "retriable"),
    [
        (400, "invalid_request_error", "bad field", "INVALID_PARAMS", False),
        (
            400,
            "exceed_context_size_error",
            "the request exceeds the available context size",
            "CONTEXT_OVERFLOW",
            False,
        ),
        (
            400,
            "BadRequestError",
            "This model's maximum context length is 8192 tokens",
            "CONTEXT_OVERFLOW",
            False,
        ),
        (
            422,
            "validation",
            "`inputs` tokens + `max_new_tokens` must be <= 4096",
            "CONTEXT_OVERFLOW",
            False,
        ),
        (413, "", "too big", "INVALID_PARAMS", False),
        (401, "authentication_error", "Invalid API Key", "ENGINE_ERROR", False),
        (404, "not_found_error", "no such model", "ENGINE_ERROR", False),
        (429, "overloaded", "busy", "NO_CAPACITY", True),
        (501, "not_supported_error", "no embeddings", "INVALID_PARAMS", False),
        (503, "unavailable_error", "Loading model", "POOL_UNREADY", True),
        (500, "server_error", "Compute error.", "ENGINE_ERROR", True),
        # llama_cpp.server answers a request that fails its schema with a 500:
        (
            500,
            "internal_server_error",
            "1 validation error:\n  {'loc': ('body', 'top_p')}",
            "INVALID_PARAMS",
            False,
        ),
    ],
)
def test_error_statuses_map_to_one_table_of_codes(
    status: int, error_type: str, message: str, code: str, retriable: bool
) -> None:
    failure = failure_from_status(EngineStatusError(status, error_type, message))
    assert (failure.code, failure.retriable, failure.before_first_token) == (code, retriable, True)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        (f"key {KEY} leaked", (KEY,), "key *** leaked"),
        ("Authorization: Bearer abc.def-ghi", (), "Authorization: Bearer ***"),
        ("bearer xyz, then", (), "bearer ***, then"),
        ("nothing here", (KEY,), "nothing here"),
        ("empty secret", ("",), "empty secret"),
    ],
)
def test_redact_removes_keys_and_bearer_tokens(
    text: str, secrets: tuple[str, ...], expected: str
) -> None:
    assert redact(text, secrets) == expected


class EchoingLlamaServer(FakeLlamaServer):
    """A fake whose /props error repeats the request's Authorization header."""

    async def _props(self, request: web.Request) -> web.Response:
        message = f"cannot serve {request.headers.get('Authorization')}"
        return json_response({"error": {"code": 500, "message": message, "type": "x"}}, 500)


async def test_an_engine_echoing_the_key_never_puts_it_in_failures_or_errors() -> None:
    body = {"error": {"code": 500, "message": f"bad header Authorization: Bearer {KEY}"}}
    async with EchoingLlamaServer(api_key=KEY) as fake:
        adapter = LlamaServerAdapter(Endpoint(fake.address, KEY), SETTINGS)
        fake.script("j", http_error("echo", "synthetic: an engine echoing the request", 500, body))
        (failure,) = await run(adapter, "j")
        assert isinstance(failure, Failed) and KEY not in failure.message
        dead = LlamaServerAdapter(Endpoint(f"127.0.0.1:{free_port()}", KEY), SETTINGS)
        for call in (adapter.props(), dead.props()):
            with pytest.raises(AdapterError) as caught:
                await call
            rendered = "".join(traceback.format_exception(caught.value))
            assert KEY not in rendered, rendered
        assert KEY not in repr(adapter) and KEY not in repr(dead)


def test_an_http_client_never_shows_its_key() -> None:
    client = HttpClient("127.0.0.1:1", KEY)
    assert KEY not in repr(client) and client.base_url == "http://127.0.0.1:1"


async def test_time_to_first_token_counts_the_wait_for_the_status_line(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    # llama-server answers only once the prompt is processed: that wait is part of ttft.
    fake.script("j", Transcript("prefill", "synthetic: 0.2 s prefill", OK.writes, hold_s=0.2))
    end = (await run(adapter, "j"))[-1]
    assert isinstance(end, End) and end.ttft_ms >= 200.0


async def test_https_with_a_private_ca_serves_control_calls_and_streams() -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with FakeLlamaServer(api_key=KEY, ssl_context=context) as server:
        server.script("j", OK)
        trusted = ClientTls(ca.cert_pem.bytes())
        adapter = LlamaServerAdapter(Endpoint(server.address, KEY, trusted), SETTINGS)
        assert (await adapter.health()).state == "ready"
        events = await run(adapter, "j")
        assert isinstance(events[-1], End), events
        assert "".join(e.text for e in events if isinstance(e, Token)) == "ab"
        await adapter.close()


async def test_https_refuses_an_engine_whose_certificate_is_from_another_ca() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with FakeLlamaServer(api_key=KEY, ssl_context=context) as server:
        server.script("j", OK)
        stranger = ClientTls(trustme.CA().cert_pem.bytes())
        adapter = LlamaServerAdapter(Endpoint(server.address, KEY, stranger), SETTINGS)
        with pytest.raises(AdapterError):
            await adapter.health()
        events = await run(adapter, "j")
        assert isinstance(events[-1], Failed) and server.requests_of("j") == []
        await adapter.close()
