"""Deadlines on reading requests: idle and slow connections are closed (SEC-03).

uvicorn arms its keep-alive timer only after a response, and disarms it on any byte, so
a connection that never sends a request, or sends its headers or body a byte at a time
(slowloris), is held forever. `guarded_protocol` returns uvicorn's httptools protocol
with two deadlines:

- idle: a connection with no request in progress is closed after `timeout_keep_alive`
  (uvicorn's setting, `http_keep_alive_s` in our config), counted from its opening too,
  not only from its last response;
- read: from the first byte of a request, its headers and whole body must arrive within
  `read_timeout_s` (`http_request_read_timeout_s`), else the client gets 408 with the
  error envelope (OpenAI's error body under `/v1/`) and the connection is closed. The
  deadline is absolute: trickling bytes does not extend it.

Neither touches a response in progress: once a request has been read, the deadline is
off until the next request starts, so a long SSE stream is never cut.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from orchestratord.errors import ApiError
from orchestratord.http.errors import error_body

__all__ = ["guarded_protocol"]


def _timeout_response(read_timeout_s: float, path: str) -> bytes:
    """The 408, in the shape `path` answers errors in (OpenAI's under `/v1/`), with a
    fresh correlation id (the request's own may not have arrived)."""
    correlation_id = uuid.uuid4().hex
    error = ApiError(
        "INVALID_PARAMS",
        f"the request was not received within {read_timeout_s:g} s",
        status=408,
        retriable=True,
    )
    body = error_body(error, correlation_id, path)
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-correlation-id: {correlation_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    read_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_deadline: asyncio.TimerHandle | None = None
        # Idle from the start: a connection that never sends a request is closed too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None and self._reading_a_request():
            self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)
        super().data_received(data)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _reading_a_request(self) -> bool:
        """True between requests (the next one starts) or while a body is still coming;
        False while a request that was read whole is being answered."""
        cycle: Any = self.cycle
        return cycle is None or cycle.response_complete or cycle.more_body

    def _request_path(self) -> str:
        """The path of the request being read, as far as it arrived ("" before that)."""
        cycle: Any = self.cycle
        if cycle is not None and not cycle.response_complete:
            return str(cycle.scope.get("path", ""))
        raw: bytes = getattr(self, "url", b"") or b""
        return raw.split(b"?", 1)[0].decode("latin-1")

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            return  # a response is going out: never cut it
        self.transport.write(_timeout_response(self.read_timeout_s, self._request_path()))
        self.transport.close()


def guarded_protocol(read_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the idle and read deadlines (pass as `http=`)."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedHttpToolsProtocol,),
        {"read_timeout_s": float(read_timeout_s)},
    )
