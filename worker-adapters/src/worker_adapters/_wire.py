"""The engine token stream's HTTP/1.1 client: a protocol over one socket, parsed by llhttp.

Token streams are the data path (one POST, then an SSE body read for seconds); control
calls stay on aiohttp (`_http.HttpClient.call`). Measured on the same engine
(`bench/engine_client.py`), aiohttp costs ~3× this client's CPU per request and ~2× per
network read: it builds a request object, a response object, a stream reader, timers
and trace hooks for every request, and every read passes through its reader and a
timeout context. Here:

- `_Connection` is an `asyncio.Protocol`: each network read is fed to httptools
  (llhttp, the parser Node.js uses), which calls back with the status, the headers and
  the de-chunked body bytes; body bytes are queued and the one waiting reader is woken.
  Back-pressure: past `_HIGH_WATER` queued bytes the socket stops being read;
- `_Pool` keeps idle keep-alive connections per (host, port, TLS) on each event loop,
  for at most `_KEEPALIVE_S` (below the 5 s idle timeout of common servers);
- `WireStream` is one request: `open` (connect or reuse, write the request, wait for the
  status line), `read` (bytes as they came, under a deadline on the loop's clock),
  `finish` (drain to the end of the message, then back to the pool) and `abort` (close
  the socket: the engine sees the disconnect; valid at every stage, also while the
  request waits to be answered, so a cancel needs no task of its own).

Failures are raised as `worker_adapters.errors`: connect refused or timed out ->
`EngineUnavailable`; the connection lost or a malformed answer -> `StreamBroken`; a
reused keep-alive connection closed before any byte of an answer -> `EngineUnavailable`
(the server closed it while idle; retrying on a new connection is safe); deadlines ->
`EngineTimeout`.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Mapping
from typing import cast

import httptools

from worker_adapters.errors import EngineTimeout, EngineUnavailable, StreamBroken

__all__ = ["Endpoint", "WireStream", "close_pool"]

_KEEPALIVE_S = 4.0
_IDLE_PER_ENDPOINT = 256
_HIGH_WATER = 256 << 10

# host, port, and for TLS the context and the name to check in the server's certificate
# (None: plaintext; `True`: TLS with the system's roots, checking the host).
Endpoint = tuple[str, int, "ssl.SSLContext | bool | None", str]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    __slots__ = (
        "answered",
        "chunks",
        "complete",
        "error",
        "framed",
        "idle_since",
        "keep_alive",
        "lost",
        "parser",
        "paused",
        "queued",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.lost = False
        self.idle_since = 0.0
        self.begin()

    def begin(self) -> None:
        """Ready for the next request's answer."""
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.answered = False  # any byte of an answer arrived
        self.framed = False  # the answer says where its body ends (length or chunks)
        self.complete = False
        self.keep_alive = False
        self.paused = False
        self.chunks: list[bytes] = []
        self.queued = 0
        self.error: Exception | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        parser = self.parser
        if parser is None or self.complete:  # bytes nobody asked for: not reusable
            self._close()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = StreamBroken(f"malformed HTTP answer from the engine: {exc}")
            self._close()
        self.wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.status and not self.complete and not self.framed and self.error is None:
            self.complete = True  # a body delimited by the close (no length, no chunks)
        self.wake()

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.framed = True

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.queued += len(body)
        if self.queued > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    # -- for WireStream ------------------------------------------------------------------

    def wake(self, result: bool = True) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    async def wait(self, deadline: float) -> bool:
        """Until something arrives (True) or `deadline` on the loop's clock (False)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiter = waiter
        timer = loop.call_at(deadline, self.wake, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.queued = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self, now: float) -> bool:
        transport = self.transport
        return (
            not self.lost
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < _KEEPALIVE_S
        )

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self._close()
        self.lost = True
        self.wake()


class _Pool:
    """Idle keep-alive connections of one event loop, per endpoint."""

    def __init__(self) -> None:
        self._idle: dict[Endpoint, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    def take_idle(self, endpoint: Endpoint, now: float) -> _Connection | None:
        idle = self._idle.get(endpoint)
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    async def connect(self, endpoint: Endpoint, timeout_s: float) -> _Connection:
        host, port, tls, server_name = endpoint
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if isinstance(tls, ssl.SSLContext):
            context = tls
        elif tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            context = self._tls
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=context,
                    server_hostname=(server_name or host) if context is not None else None,
                )
        except TimeoutError as exc:
            raise EngineUnavailable(
                f"engine unreachable: no connection to {host}:{port} in {timeout_s} s"
            ) from exc
        except OSError as exc:
            raise EngineUnavailable(f"engine unreachable: {host}:{port}: {exc}") from exc
        return connection

    def give_back(self, endpoint: Endpoint, connection: _Connection, now: float) -> None:
        idle = self._idle.setdefault(endpoint, [])
        if len(idle) >= _IDLE_PER_ENDPOINT:
            connection.close()
            return
        connection.parser = None
        connection.idle_since = now
        idle.append(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = _Pool()
    return pool


def close_pool() -> None:
    """Close the running loop's idle stream connections (at shutdown)."""
    pool = _POOLS.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        pool.close()


def request_head(
    method: str, path: str, host_header: str, headers: Mapping[str, str], length: int
) -> bytes:
    """The request line and headers; CR or LF in a name or value is refused."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class WireStream:
    """One streamed request; read with `read`, end with `finish` or `abort`."""

    __slots__ = ("_aborted", "_connection", "_endpoint")

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._connection: _Connection | None = None
        self._aborted = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    @property
    def status(self) -> int:
        return self._connection.status if self._connection is not None else 0

    async def open(self, request: bytes, connect_timeout_s: float, deadline: float) -> int:
        """Send `request` (head and body) and wait for the status line; returns the
        status. Raises EngineUnavailable / StreamBroken / EngineTimeout."""
        if self._aborted:
            raise StreamBroken("the stream was aborted")
        self.discard()  # a failed earlier attempt's connection
        pool = _pool()
        loop = asyncio.get_running_loop()
        connection = pool.take_idle(self._endpoint, loop.time())
        reused = connection is not None
        if connection is None:
            connection = await pool.connect(self._endpoint, connect_timeout_s)
            if self.aborted:  # while connecting
                connection.close()
                raise StreamBroken("the stream was aborted")
        connection.begin()
        self._connection = connection
        assert connection.transport is not None
        connection.transport.write(request)
        while not connection.status:
            if connection.error is not None:
                raise connection.error
            if connection.lost or self._aborted:
                if reused and not connection.answered and not self._aborted:
                    raise EngineUnavailable("engine closed an idle keep-alive connection")
                raise StreamBroken("engine closed the connection before answering")
            if not await connection.wait(deadline):
                self.abort()
                raise EngineTimeout("engine did not answer in time")
        return connection.status

    async def read(self, deadline: float) -> bytes:
        """The next bytes that arrived (b"" at the end of the body). Deadline on the
        loop's clock."""
        connection = self._connection
        if connection is None:
            raise StreamBroken("the stream was aborted")
        while True:
            if connection.chunks:
                return connection.take()
            if connection.error is not None:
                raise connection.error
            if connection.complete:
                return b""
            if connection.lost or self._aborted:
                raise StreamBroken("engine closed the connection mid-stream")
            if not await connection.wait(deadline):
                raise EngineTimeout("engine produced no token in time")

    async def read_all(self, limit: int, deadline: float) -> bytes:
        """The rest of the body, at most `limit` bytes (an error answer)."""
        parts: list[bytes] = []
        size = 0
        while size < limit:
            chunk = await self.read(deadline)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:limit]

    def abort(self) -> None:
        """Close the connection now (the engine sees the disconnect). Idempotent; valid
        before, during and after `open`; nothing can be opened after it."""
        self._aborted = True
        self.discard()

    def discard(self) -> None:
        """Close this attempt's connection (an error answer); `open` may try again."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def drain_and_release(self, drain_s: float, drain_limit: int) -> None:
        """Read to the end of the message (bounded), then return the connection to the
        pool; a connection that cannot be reused is closed."""
        connection = self._connection
        if connection is None or self._aborted:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        drained = 0
        try:
            while not connection.complete and drained < drain_limit:
                drained += len(await self.read(deadline))
        except (StreamBroken, EngineTimeout):
            pass
        connection.take()  # drop the rest; resumes a socket paused by back-pressure
        transport = connection.transport
        if (
            connection.complete
            and connection.keep_alive
            and connection.error is None
            and not connection.lost
            and transport is not None
            and not transport.is_closing()
        ):
            self._connection = None
            _pool().give_back(self._endpoint, connection, loop.time())
        else:
            self.discard()
