"""The engine stream client (`_wire`, through `_http.HttpClient.open_stream`) against raw
HTTP/1.1 servers on loopback whose every byte the test writes: request bytes, chunked,
length- and close-delimited bodies, keep-alive reuse and the idle-close race, abort while
the request waits, error statuses and 503 retries, broken and stalled streams, refused
connections, header injection and back-pressure."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest
from worker_adapters import _wire
from worker_adapters._http import HttpClient, HttpSettings, HttpStream
from worker_adapters.errors import (
    EngineStatusError,
    EngineTimeout,
    EngineUnavailable,
    StreamBroken,
)

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "sk-test-0123456789abcdef"
BODY = {"prompt": "héllo", "n_predict": 4, "stream": True}
PATH = "/completion"
WAIT_S = 5.0
FAST = HttpSettings(
    stall_timeout_s=WAIT_S, retry_attempts=1, retry_initial_s=0.001, retry_max_s=0.01
)


# -- a raw HTTP/1.1 server ---------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request as the server read it off the socket."""

    line: str
    fields: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.fields if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection; None when the client closed it first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            message = f"the client closed inside a request head: {exc.partial!r}"
            raise AssertionError(message) from exc
        return None
    except ConnectionResetError:
        return None
    line, *rest = head[:-4].decode("latin-1").split("\r\n")
    fields = []
    for raw in rest:
        name, sep, value = raw.partition(":")
        assert sep, f"malformed header line {raw!r}"
        fields.append((name, value.strip()))
    request = Request(line, fields, b"")
    length = int(request.header("Content-Length") or "0")
    return Request(line, fields, await reader.readexactly(length))


@dataclass
class Peer:
    """The server's side of one accepted connection."""

    server: RawServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def next_request(self) -> Request | None:
        request = await read_request(self.reader)
        if request is not None:
            self.server.requests.append(request)
        return request

    async def request(self) -> Request:
        request = await self.next_request()
        assert request is not None, "the client closed before sending a request"
        return request

    async def send(self, *parts: bytes) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()

    async def closed_by_client(self) -> bytes:
        """Waits for the client to close the connection; what it sent meanwhile."""
        try:
            return await self.reader.read()
        except ConnectionResetError:
            return b""


Handler = Callable[[Peer], Coroutine[Any, Any, None]]


@dataclass
class RawServer:
    """A loopback server running `handler` once per accepted connection; the connection
    is closed when the handler returns. Handler failures are raised on exit."""

    handler: Handler
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, settings: HttpSettings = FAST, api_key: str = "") -> HttpClient:
        return HttpClient(self.address, api_key=api_key, settings=settings)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handler runs in a task of its own, so the exit can cancel it without
        # asyncio logging the cancel as the connection callback's failure.
        self.connections += 1
        task = asyncio.create_task(self.handler(Peer(self, reader, writer)))
        self._tasks.append(task)
        try:
            await asyncio.wait([task])
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        for result in results:
            if isinstance(result, Exception):
                raise result


def head(status_line: str, *fields: str) -> bytes:
    return ("\r\n".join([status_line, *fields]) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
SSE_CHUNKED = head(
    "HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"
)


def sized(status_line: str, body: bytes, *fields: str) -> bytes:
    return head(status_line, *fields, f"Content-Length: {len(body)}") + body


def json_answer(status_line: str, body: object) -> bytes:
    return sized(status_line, json.dumps(body).encode(), "Content-Type: application/json")


def pattern(size: int) -> bytes:
    """`size` bytes that repeat with a prime period (a lost or moved slice shows)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def soon(seconds: float = WAIT_S) -> float:
    return asyncio.get_running_loop().time() + seconds


async def read_to_end(stream: HttpStream) -> bytes:
    deadline = soon()
    parts = []
    while chunk := await stream.read(deadline):
        parts.append(chunk)
    return b"".join(parts)


async def serve_each(peer: Peer, answer: bytes) -> None:
    """Answers every request on the connection with `answer`."""
    while await peer.next_request() is not None:
        await peer.send(answer)


# -- observing the client's connections --------------------------------------------------


@dataclass
class Probe:
    """Set when a client connection stops reading its socket (back-pressure) and when
    one is lost."""

    paused: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Probe:
    probe = Probe()
    on_body = _wire._Connection.on_body
    connection_lost = _wire._Connection.connection_lost

    def observed_on_body(self: _wire._Connection, body: bytes) -> None:
        on_body(self, body)
        if self.paused:
            probe.paused.set()

    def observed_connection_lost(self: _wire._Connection, exc: Exception | None) -> None:
        connection_lost(self, exc)
        probe.lost.set()

    monkeypatch.setattr(_wire._Connection, "on_body", observed_on_body)
    monkeypatch.setattr(_wire._Connection, "connection_lost", observed_connection_lost)
    return probe


def connection_of(stream: HttpStream) -> _wire._Connection:
    connection = stream._connection
    assert connection is not None
    return connection


# -- streaming and keep-alive ------------------------------------------------------------

EVENTS = [
    b'data: {"content":"h\xc3\xa9"}\n\n',
    b": ping\n\n",
    b'data: {"content":" wor',  # an event cut across two chunks
    b'ld"}\n\ndata: [DONE]\n\n',
]


async def test_a_chunked_sse_body_streams_byte_exact_and_the_connection_is_reused() -> None:
    proceed: asyncio.Queue[None] = asyncio.Queue()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(SSE_CHUNKED)
        for event in EVENTS:  # one chunk per write, the next only once this one was read
            await peer.send(chunk(event))
            await proceed.get()
        await peer.send(LAST_CHUNK)
        await serve_each(peer, SSE_CHUNKED + chunk(b"data: again\n\n") + LAST_CHUNK)

    async with RawServer(handler) as server:
        client = server.client()
        stream = await client.open_stream(PATH, BODY)
        assert stream.status == 200
        for event in EVENTS:
            got = b""
            while len(got) < len(event):
                got += await stream.read(soon())
            assert got == event
            proceed.put_nowait(None)
        assert await stream.read(soon()) == b""
        await stream.finish()

        second = await client.open_stream(PATH, BODY)
        assert await read_to_end(second) == b"data: again\n\n"
        await second.finish()

        assert server.connections == 1
        assert [request.line for request in server.requests] == [f"POST {PATH} HTTP/1.1"] * 2


async def test_the_request_carries_path_host_json_length_bearer_key_and_extra_headers() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(sized("HTTP/1.1 200 OK", b"ok"))

    async with RawServer(handler) as server:
        client = server.client(api_key=KEY)
        extra = {"X-Request-Id": "req-7", "Accept": "text/event-stream"}
        stream = await client.open_stream("/v1/completions", BODY, headers=extra)
        assert await read_to_end(stream) == b"ok"
        await stream.finish()

        (request,) = server.requests
        assert request.line == "POST /v1/completions HTTP/1.1"
        assert request.header("Host") == server.address
        assert request.header("Content-Type") == "application/json"
        assert request.header("Content-Length") == str(len(request.body))
        assert json.loads(request.body) == BODY
        assert request.header("Authorization") == f"Bearer {KEY}"
        assert request.header("X-Request-Id") == "req-7"
        assert request.header("Accept") == "text/event-stream"  # overrides the default


async def test_without_an_api_key_no_authorization_is_sent_and_a_base_path_prefixes() -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, sized("HTTP/1.1 200 OK", b""))

    async with RawServer(handler) as server:
        client = HttpClient(f"http://{server.address}/engine/", settings=FAST)
        stream = await client.open_stream("/v1/completions", BODY)
        assert await read_to_end(stream) == b""
        await stream.finish()

        (request,) = server.requests
        assert request.line == "POST /engine/v1/completions HTTP/1.1"
        assert request.header("Authorization") is None


async def test_finish_drains_an_unread_body_and_the_connection_is_reused() -> None:
    answer = SSE_CHUNKED + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n") + LAST_CHUNK

    async def handler(peer: Peer) -> None:
        await serve_each(peer, answer)

    async with RawServer(handler) as server:
        client = server.client()
        for _ in range(3):
            stream = await client.open_stream(PATH, BODY)
            await stream.finish()
        assert (server.connections, len(server.requests)) == (1, 3)


async def test_a_closed_idle_keep_alive_connection_is_not_an_error() -> None:
    """The server closes right after the final chunk, so the client may take the
    connection from the pool before it has seen the close."""
    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=2, retry_initial_s=0.001, retry_max_s=0.01
    )

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.writer.write(SSE_CHUNKED + chunk(b"data: 1\n\n") + LAST_CHUNK)
        # returning closes the connection at once

    async with RawServer(handler) as server:
        client = server.client(settings)
        for _ in range(2):
            stream = await client.open_stream(PATH, BODY)
            assert await read_to_end(stream) == b"data: 1\n\n"
            await stream.finish()
        assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_pooled_connection_the_server_closed_is_not_reused(probe: Probe) -> None:
    async def handler(peer: Peer) -> None:
        if peer.server.connections == 1:
            await peer.request()
            await peer.send(sized("HTTP/1.1 200 OK", b"one"))
            return  # closes the connection once it is idle in the client's pool
        await serve_each(peer, sized("HTTP/1.1 200 OK", b"two"))

    async with RawServer(handler) as server:
        client = server.client()  # no retries: the pool must notice the close itself
        stream = await client.open_stream(PATH, BODY)
        assert await read_to_end(stream) == b"one"
        await stream.finish()
        async with asyncio.timeout(WAIT_S):
            await probe.lost.wait()

        second = await client.open_stream(PATH, BODY)
        assert await read_to_end(second) == b"two"
        await second.finish()
        assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_reused_connection_closed_before_any_answer_is_retried_on_a_new_one() -> None:
    """The close race seen from the server: the request arrives on the idle connection
    just as the server closes it."""
    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=2, retry_initial_s=0.001, retry_max_s=0.01
    )

    async def handler(peer: Peer) -> None:
        if peer.server.connections == 1:
            await peer.request()
            await peer.send(sized("HTTP/1.1 200 OK", b"one"))
            await peer.request()
            return  # closes without answering
        await serve_each(peer, sized("HTTP/1.1 200 OK", b"two"))

    async with RawServer(handler) as server:
        client = server.client(settings)
        stream = await client.open_stream(PATH, BODY)
        assert await read_to_end(stream) == b"one"
        await stream.finish()

        second = await client.open_stream(PATH, BODY)
        assert await read_to_end(second) == b"two"
        await second.finish()
        assert (server.connections, len(server.requests)) == (2, 3)


async def test_without_retries_the_reuse_race_is_engine_unavailable_not_stream_broken() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(sized("HTTP/1.1 200 OK", b"one"))
        await peer.request()

    async with RawServer(handler) as server:
        client = server.client()
        stream = await client.open_stream(PATH, BODY)
        await stream.finish()
        with pytest.raises(EngineUnavailable) as info:
            await client.open_stream(PATH, BODY)
        assert type(info.value) is EngineUnavailable
        assert len(server.requests) == 2


# -- abort -------------------------------------------------------------------------------


async def test_abort_while_the_request_waits_for_its_status_closes_the_connection() -> None:
    request_seen = asyncio.Event()
    closed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(peer: Peer) -> None:
        await peer.request()
        request_seen.set()
        closed.set_result(await peer.closed_by_client())

    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=3, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        client = server.client(settings)
        stream = client.stream()
        opening = asyncio.create_task(client.open_stream(PATH, BODY, stream=stream))
        async with asyncio.timeout(WAIT_S):
            await request_seen.wait()
        assert not opening.done()

        stream.abort()
        async with asyncio.timeout(1.0):
            with pytest.raises(StreamBroken):
                await opening
            assert await closed == b""
        assert stream.aborted
        assert server.connections == 1  # an aborted stream is never retried


async def test_a_stream_aborted_before_it_opens_never_connects() -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, sized("HTTP/1.1 200 OK", b"ok"))

    async with RawServer(handler) as server:
        client = server.client()
        stream = client.stream()
        stream.abort()
        with pytest.raises(StreamBroken):
            await client.open_stream(PATH, {"aborted": True}, stream=stream)

        other = await client.open_stream(PATH, BODY)
        assert await read_to_end(other) == b"ok"
        await other.finish()
        assert server.connections == 1
        assert [json.loads(request.body) for request in server.requests] == [BODY]


# -- error statuses and retries ----------------------------------------------------------


async def test_a_500_raises_engine_status_error_with_the_engine_message_unretried() -> None:
    error = {"error": {"message": "boom", "type": "server_error"}}

    async def handler(peer: Peer) -> None:
        await serve_each(peer, json_answer("HTTP/1.1 500 Internal Server Error", error))

    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=3, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        with pytest.raises(EngineStatusError) as info:
            await server.client(settings).open_stream(PATH, BODY)
        assert (info.value.status, info.value.message, info.value.error_type) == (
            500,
            "boom",
            "server_error",
        )
        assert len(server.requests) == 1


LOADING = json_answer(
    "HTTP/1.1 503 Service Unavailable",
    {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
)


async def test_a_503_is_retried_and_the_next_answer_streams() -> None:
    async def handler(peer: Peer) -> None:
        while await peer.next_request() is not None:
            if len(peer.server.requests) == 1:
                await peer.send(LOADING)
            else:
                await peer.send(SSE_CHUNKED + chunk(b"data: ready\n\n") + LAST_CHUNK)

    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=2, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        stream = await server.client(settings).open_stream(PATH, BODY)
        assert stream.status == 200
        assert await read_to_end(stream) == b"data: ready\n\n"
        await stream.finish()
        assert len(server.requests) == 2


@pytest.mark.parametrize("attempts", [1, 3])
async def test_503_retries_are_bounded_by_retry_attempts(attempts: int) -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, LOADING)

    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=attempts, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        with pytest.raises(EngineStatusError) as info:
            await server.client(settings).open_stream(PATH, BODY)
        assert (info.value.status, info.value.message) == (503, "Loading model")
        assert len(server.requests) == attempts


async def test_should_stop_ends_503_retries() -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, LOADING)

    settings = HttpSettings(
        stall_timeout_s=WAIT_S, retry_attempts=3, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        with pytest.raises(EngineStatusError):
            await server.client(settings).open_stream(PATH, BODY, should_stop=lambda: True)
        assert len(server.requests) == 1


# -- broken, close-delimited and stalled bodies ------------------------------------------


@pytest.mark.parametrize(
    ("answer_head", "part"),
    [
        (SSE_CHUNKED, chunk(b"data: 1\n\n") + b"40\r\ndata: cut"),
        (head("HTTP/1.1 200 OK", "Content-Length: 100"), b"data: 1\n\n"),
    ],
    ids=["chunked", "content-length"],
)
async def test_a_connection_lost_mid_body_raises_stream_broken(
    answer_head: bytes, part: bytes
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer_head + part)
        # returning closes the connection inside the body

    async with RawServer(handler) as server:
        stream = await server.client().open_stream(PATH, BODY)
        got: list[bytes] = []

        async def read_on() -> None:
            while True:
                got.append(await stream.read(soon()))

        with pytest.raises(StreamBroken):
            await read_on()
        assert b"".join(got).startswith(b"data: 1\n\n")
        await stream.finish()


async def test_a_body_delimited_by_the_close_is_read_to_its_end() -> None:
    pieces = [b"data: a\n\n", b"data: b\n\n", b"tail without newline"]

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(head("HTTP/1.1 200 OK", "Connection: close"), *pieces)

    async with RawServer(handler) as server:
        client = server.client()
        stream = await client.open_stream(PATH, BODY)
        assert await read_to_end(stream) == b"".join(pieces)
        assert await stream.read(soon()) == b""
        await stream.finish()

        again = await client.open_stream(PATH, BODY)
        assert await read_to_end(again) == b"".join(pieces)
        await again.finish()
        assert server.connections == 2  # a close-delimited connection is not pooled


async def test_a_silent_engine_mid_stream_raises_engine_timeout_at_the_deadline() -> None:
    closed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(SSE_CHUNKED, chunk(b"data: 1\n\n"))
        closed.set_result(await peer.closed_by_client())

    async with RawServer(handler) as server:
        stream = await server.client().open_stream(PATH, BODY)
        assert await stream.read(soon()) == b"data: 1\n\n"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.2
        with pytest.raises(EngineTimeout):
            await stream.read(deadline)
        assert loop.time() >= deadline

        stream.abort()
        async with asyncio.timeout(WAIT_S):
            assert await closed == b""


async def test_an_engine_silent_before_its_status_times_out_once_and_is_disconnected() -> None:
    closed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(peer: Peer) -> None:
        await peer.request()
        closed.set_result(await peer.closed_by_client())

    settings = HttpSettings(
        stall_timeout_s=0.2, retry_attempts=3, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(EngineTimeout):
            await server.client(settings).open_stream(PATH, BODY)
        assert loop.time() - started >= 0.2
        async with asyncio.timeout(WAIT_S):
            assert await closed == b""
        assert server.connections == 1  # timeouts are not retried


# -- connecting, malformed answers, header injection -------------------------------------


async def test_a_refused_connection_raises_engine_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = HttpClient(f"127.0.0.1:{port}", settings=FAST)
    with pytest.raises(EngineUnavailable) as info:
        await client.open_stream(PATH, BODY)
    assert type(info.value) is EngineUnavailable  # not StreamBroken: nothing was sent


async def test_a_malformed_answer_raises_stream_broken() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"SMTP ready\r\n\r\n")
        await peer.closed_by_client()

    async with RawServer(handler) as server:
        with pytest.raises(StreamBroken, match="malformed"):
            await server.client().open_stream(PATH, BODY)


async def test_an_answer_split_at_every_byte_is_read_the_same() -> None:
    answer = SSE_CHUNKED + chunk(b'data: {"a":1}\n\n') + chunk(b"data: [DONE]\n\n") + LAST_CHUNK

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(*(answer[i : i + 1] for i in range(len(answer))))
        await serve_each(peer, sized("HTTP/1.1 200 OK", b"next"))

    async with RawServer(handler) as server:
        client = server.client()
        stream = await client.open_stream(PATH, BODY)
        assert await read_to_end(stream) == b'data: {"a":1}\n\ndata: [DONE]\n\n'
        await stream.finish()
        reused = await client.open_stream(PATH, BODY)
        assert await read_to_end(reused) == b"next"
        await reused.finish()
        assert server.connections == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nInjected: yes"},
        {"X-Evil": "a\nInjected: yes"},
        {"X-Evil": "a\rInjected: yes"},
        {"X-Evil\r\nInjected": "yes"},
        {"Injected: yes\r\nX-Evil": "a"},
    ],
)
async def test_a_header_with_cr_or_lf_is_refused_before_anything_is_sent(
    headers: dict[str, str],
) -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, sized("HTTP/1.1 200 OK", b"ok"))

    async with RawServer(handler) as server:
        client = server.client()
        with pytest.raises(ValueError, match="invalid header"):
            await client.open_stream(PATH, {"evil": True}, headers=headers)

        stream = await client.open_stream(PATH, BODY)
        assert await read_to_end(stream) == b"ok"
        await stream.finish()
        assert server.connections == 1
        (request,) = server.requests
        assert json.loads(request.body) == BODY
        assert request.header("Injected") is None


# -- back-pressure -----------------------------------------------------------------------


async def test_a_body_past_the_high_water_mark_pauses_reading_and_arrives_complete(
    probe: Probe,
) -> None:
    big = pattern(4 * _wire._HIGH_WATER + 12345)

    async def handler(peer: Peer) -> None:
        await serve_each(peer, sized("HTTP/1.1 200 OK", big))

    async with RawServer(handler) as server:
        client = server.client()
        for _ in range(2):
            stream = await client.open_stream(PATH, BODY)
            async with asyncio.timeout(WAIT_S):
                await probe.paused.wait()  # the client has not read a byte yet
            connection = connection_of(stream)
            assert connection.transport is not None
            assert not connection.transport.is_reading()
            assert connection.queued < len(big)
            probe.paused.clear()

            assert await read_to_end(stream) == big
            await stream.finish()
        assert server.connections == 1


async def test_a_body_completed_while_reading_was_paused_leaves_a_reusable_connection(
    probe: Probe,
) -> None:
    """The last body byte is the one that crosses the high-water mark: the message ends
    while the socket is paused; `finish` has nothing to read, and the connection must
    not go back to the pool still paused."""
    big = pattern(_wire._HIGH_WATER + 1)

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(sized("HTTP/1.1 200 OK", big))
        await serve_each(peer, sized("HTTP/1.1 200 OK", b"small"))

    settings = HttpSettings(
        stall_timeout_s=1.0, retry_attempts=1, retry_initial_s=0.001, retry_max_s=0.01
    )
    async with RawServer(handler) as server:
        client = server.client(settings)
        stream = await client.open_stream(PATH, BODY)
        async with asyncio.timeout(WAIT_S):
            await probe.paused.wait()
        assert connection_of(stream).complete
        await stream.finish()

        second = await client.open_stream(PATH, BODY)
        assert await read_to_end(second) == b"small"
        await second.finish()
        assert server.connections == 1
