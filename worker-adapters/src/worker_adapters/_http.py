"""The HTTP edge of the engine adapters: with `_wire`, the only modules that speak HTTP.

It owns:
- one shared `aiohttp.ClientSession` per event loop (so one per process in a daemon),
  with a keep-alive connection pool, for control calls (`shared_session`,
  `close_shared_session`, which also closes `_wire`'s stream connections);
- `HttpClient`, one per engine endpoint: base URL, the per-pool API key sent as
  `Authorization: Bearer`, JSON control calls (`call`) and streams (`open_stream`);
- bounded, jittered retries (tenacity) of what failed before the first byte of an
  answer: refused or reset connections (a stale keep-alive connection, an engine
  restarting) and HTTP 503 (an engine still loading). Nothing is retried once a body
  byte has arrived, and timeouts are not retried;
- `HttpStream` (on `_wire`, our own HTTP/1.1 stream client): chunk reads under a
  caller-given deadline, `abort` (closes the TCP connection: that is how llama-server,
  llama_cpp.server, vLLM and TGI cancel; valid while the request still waits for its
  answer) and `finish` (drains to EOF so the connection returns to the pool);
- `redact`, so API keys never reach exception messages or logs.

The token path's client was chosen by benchmark: relaying one event through an httpx
stream cost 72-200 µs of CPU here, through aiohttp 23-46 µs; `_wire` costs less again
per request and per read (`bench/engine_client.py` compares the last two).

Foreign exceptions are mapped here, once, into `worker_adapters.errors` and chained:
connect failures -> `EngineUnavailable`; a connection that breaks after the request was
sent -> `StreamBroken`; deadlines -> `EngineTimeout`; error statuses ->
`EngineStatusError` (body parsed by `error_from_body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import yarl
from specs.tls import ClientTls
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from worker_adapters._wire import Endpoint, WireStream, close_pool, request_head
from worker_adapters.errors import (
    AdapterError,
    EngineStatusError,
    EngineTimeout,
    EngineUnavailable,
    StreamBroken,
)

__all__ = [
    "HttpClient",
    "HttpSettings",
    "HttpStream",
    "Reply",
    "close_shared_session",
    "error_from_body",
    "redact",
    "shared_session",
]

# Connections kept per process: several engines × their slots, with room for probes.
_POOL_LIMIT = 512
# Below the 5 s idle timeout of common servers (uvicorn), so we rarely reuse a socket
# the server is closing; a reuse that loses that race is retried (before the first byte).
_KEEPALIVE_S = 4.0
_DRAIN_LIMIT_BYTES = 1 << 20
_ERROR_BODY_LIMIT = 64 << 10
_STREAM_HEADERS = {"Accept": "*/*", "User-Agent": "llorch", "Content-Type": "application/json"}
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")

T = TypeVar("T")

_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts and retries, in seconds. `stall_timeout_s` counts from the request or the
    last token: keep-alive pings do not reset it (a pinging engine may still be stuck)."""

    connect_timeout_s: float = 5.0
    control_timeout_s: float = 10.0
    stall_timeout_s: float = 300.0
    drain_timeout_s: float = 1.0
    retry_attempts: int = 3
    retry_initial_s: float = 0.05
    retry_max_s: float = 1.0


def shared_session() -> aiohttp.ClientSession:
    """The session of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    session = _SESSIONS.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=_POOL_LIMIT, keepalive_timeout=_KEEPALIVE_S)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(),
            cookie_jar=aiohttp.DummyCookieJar(),  # engines set none; saves work per request
        )
        _SESSIONS[loop] = session
    return session


async def close_shared_session() -> None:
    """Close this loop's session (at process shutdown, after the adapters are closed)."""
    close_pool()
    session = _SESSIONS.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret and any bearer token replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


@dataclass(frozen=True, slots=True)
class Reply:
    """A control call's answer: status and parsed JSON (or the text when not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json_or_raise(self) -> Any:
        if not self.ok:
            raise error_from_body(self.status, self.body)
        return self.body


def error_from_body(status: int, body: Any) -> EngineStatusError:
    """Read the error shapes engines use: llama-server/OpenAI `{"error":{message,type}}`,
    TGI `{"error": str, "error_type"}`, old vLLM flat `{"object":"error",...}`, FastAPI
    `{"detail": ...}`, or plain text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return EngineStatusError(status, str(error.get("type", "")), str(error.get("message")))
        if isinstance(error, str):
            return EngineStatusError(status, str(body.get("error_type", "")), error)
        if "message" in body:
            return EngineStatusError(status, str(body.get("type", "")), str(body["message"]))
        if "detail" in body:
            return EngineStatusError(status, "", str(body["detail"]))
    return EngineStatusError(status, "", str(body)[:500] if body else "")


class HttpStream(WireStream):
    """An open streaming response (`_wire`); read with `read`, end with `finish` or
    `abort`. Made before the request is sent (`HttpClient.stream`), so `abort` also
    stops a request still waiting for its answer."""

    __slots__ = ("_client",)

    def __init__(self, client: HttpClient) -> None:
        super().__init__(client.endpoint)
        self._client = client

    async def finish(self) -> None:
        """Read to EOF (bounded) so the connection can be reused, then release it."""
        await self.drain_and_release(self._client.settings.drain_timeout_s, _DRAIN_LIMIT_BYTES)


def _client_context(tls: ClientTls) -> ssl.SSLContext:
    """Verify the server against `tls.ca_pem` (the system's roots when empty). A client
    certificate is not sent: the HTTP engines we start ask for none."""
    context = ssl.create_default_context()
    if tls.ca_pem:
        context.load_verify_locations(cadata=tls.ca_pem.decode())
    return context


class HttpClient:
    """One engine endpoint over HTTP. Holds no connection: they live in the shared pool."""

    def __init__(
        self,
        address: str,
        api_key: str = "",
        settings: HttpSettings | None = None,
        tls: ClientTls | None = None,
    ):
        """`address`: `host:port` or a URL; `tls`: dial HTTPS trusting its CA (a private
        one: the fleet's) and checking its `server_name` (default: the host)."""
        scheme = "https" if tls is not None else "http"
        self.base_url = (address if "://" in address else f"{scheme}://{address}").rstrip("/")
        self.settings = settings or HttpSettings()
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._urls: dict[str, yarl.URL] = {}
        base = yarl.URL(self.base_url)
        host = base.raw_host or "127.0.0.1"
        https = base.scheme == "https"
        port = base.port or (443 if https else 80)
        self._ssl: ssl.SSLContext | bool = _client_context(tls) if tls is not None else https
        server_name = tls.server_name if tls is not None else ""
        self.endpoint: Endpoint = (host, port, self._ssl if https else None, server_name)
        self._server_name = server_name
        self._host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._targets: dict[str, str] = {}
        # Built once: an aiohttp ClientTimeout costs ~10 µs to construct (attrs).
        self._control_timeout = aiohttp.ClientTimeout(
            total=self.settings.control_timeout_s, sock_connect=self.settings.connect_timeout_s
        )

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r}, api_key={'***' if self._api_key else ''!r})"

    def _url(self, path: str) -> yarl.URL:
        """The stream URL of `path`, parsed once (a stream's URL is one of a few routes)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = yarl.URL(self.base_url + path)
        return url

    def describe(self, exc: BaseException) -> str:
        """A log-safe description of a transport failure."""
        return redact(f"{type(exc).__name__}: {exc}", (self._api_key,))

    def _scrub(self, raw: bytes) -> bytes:
        """An error body with our key removed, should an engine echo the request back."""
        if self._api_key:
            raw = raw.replace(self._api_key.encode(), b"***")
        return raw

    async def call(self, method: str, path: str, body: Any = None) -> Reply:
        """A control call (health, props, tokenize, ...). Raises only for transport failures."""
        timeout = self._control_timeout

        async def attempt() -> Reply:
            async with shared_session().request(
                method,
                self.base_url + path,
                json=body,
                headers=self._headers,
                timeout=timeout,
                ssl=self._ssl,
                server_hostname=self._server_name or None,
            ) as response:
                if 200 <= response.status < 300:
                    return Reply(response.status, _parse(await response.read()))
                raw = await response.content.read(_ERROR_BODY_LIMIT)
                return Reply(response.status, _parse(self._scrub(raw)))

        return await self._with_retries(attempt, lambda: False, retry_503=False)

    def stream(self) -> HttpStream:
        """A stream not opened yet (`open_stream(..., stream=)`); abortable at once."""
        return HttpStream(self)

    def _target(self, path: str) -> str:
        """The request target of `path` (the base URL's path prefix, percent-encoded)."""
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = self._url(path).raw_path_qs
        return target

    async def open_stream(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        stream: HttpStream | None = None,
    ) -> HttpStream:
        """POST and wait for a 2xx status line; error statuses raise `EngineStatusError`."""
        opened = stream if stream is not None else HttpStream(self)
        payload = json.dumps(body).encode()
        fields = {**_STREAM_HEADERS, **self._headers, **(headers or {})}
        request = request_head("POST", self._target(path), self._host_header, fields, len(payload))
        request += payload
        settings = self.settings

        async def attempt() -> HttpStream:
            now = asyncio.get_running_loop().time()
            status = await opened.open(
                request, settings.connect_timeout_s, now + settings.stall_timeout_s
            )
            if 200 <= status < 300:
                return opened
            raw = b""
            with contextlib.suppress(AdapterError):
                deadline = asyncio.get_running_loop().time() + settings.control_timeout_s
                raw = await opened.read_all(_ERROR_BODY_LIMIT, deadline)
            opened.discard()
            raise error_from_body(status, _parse(self._scrub(raw)))

        return await self._with_retries(attempt, should_stop, retry_503=True)

    async def _with_retries(
        self,
        attempt: Callable[[], Awaitable[T]],
        should_stop: Callable[[], bool],
        *,
        retry_503: bool,
    ) -> T:
        def retriable(exc: BaseException) -> bool:
            if should_stop():
                return False
            if isinstance(exc, EngineStatusError):
                return retry_503 and exc.status == 503
            return isinstance(exc, EngineUnavailable)

        # The first attempt runs bare (the common case pays nothing for retries); the
        # back-off before the second is the one tenacity would have drawn.
        attempts = max(1, self.settings.retry_attempts)
        try:
            return await self._mapped(attempt)
        except AdapterError as exc:
            if attempts == 1 or not retriable(exc):
                raise
        settings = self.settings
        await asyncio.sleep(random.uniform(0, min(settings.retry_max_s, settings.retry_initial_s)))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts - 1),
            wait=wait_random_exponential(
                multiplier=self.settings.retry_initial_s, max=self.settings.retry_max_s
            ),
            retry=retry_if_exception(retriable),
            reraise=True,
        )
        return await retrying(self._mapped, attempt)

    async def _mapped(self, attempt: Callable[[], Awaitable[T]]) -> T:
        try:
            return await attempt()
        except AdapterError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise EngineUnavailable(f"engine unreachable: {self.describe(exc)}") from exc
        except TimeoutError as exc:
            raise EngineTimeout(f"engine did not answer in time: {self.describe(exc)}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise EngineUnavailable(f"engine unreachable: {self.describe(exc)}") from exc
        except aiohttp.ClientError as exc:
            raise StreamBroken(f"engine connection failed: {self.describe(exc)}") from exc


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return redact(raw.decode("utf-8", errors="replace"))
