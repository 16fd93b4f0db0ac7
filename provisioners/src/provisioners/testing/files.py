"""A real HTTP file server on loopback for download tests, with Range and faults.

`RangeFileServer(files)` serves the given bytes by path on 127.0.0.1 from a thread
(stdlib `http.server`), honours `Range: bytes=N-` (206 with Content-Range, 416 past the
end) and `If-Range` against its strong ETag, and records every request it answered:
the Range header, the status and how many body bytes it sent. Faults for the next
full-body answers are queued with `drop_next(after_bytes)` (send that many bytes, then
close the connection) and `hold_next(after_bytes)` (send that many, then wait until the
returned event is set, then close). Use it as a context manager; stopping it releases
every held answer.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["RangeFileServer", "ServedRequest"]

_RANGE = re.compile(r"bytes=(\d+)-")
_HOLD_LIMIT_S = 60.0  # a held answer never outlives a test that forgot to release it


@dataclass(frozen=True, slots=True)
class ServedRequest:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass(frozen=True, slots=True)
class _Fault:
    after_bytes: int
    release: threading.Event | None  # None: drop at once


class RangeFileServer:
    """See module doc. `url(path)` gives the address of a served file."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: list[ServedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._releases: list[threading.Event] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    @property
    def body_bytes_sent(self) -> int:
        with self._lock:
            return sum(request.body_bytes for request in self.requests)

    def drop_next(self, after_bytes: int) -> None:
        """The next GET answer sends `after_bytes` of its body, then closes the connection."""
        with self._lock:
            self._faults.append(_Fault(after_bytes, None))

    def hold_next(self, after_bytes: int) -> threading.Event:
        """The next GET answer sends `after_bytes`, then waits for the event, then closes."""
        release = threading.Event()
        with self._lock:
            self._faults.append(_Fault(after_bytes, release))
            self._releases.append(release)
        return release

    def __enter__(self) -> RangeFileServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for release in self._releases:
            release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(self, request: ServedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _handler_for(server: RangeFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads `server.requests` instead."""

        def _answer(self, *, with_body: bool) -> None:
            range_header = self.headers.get("Range")
            content = server.files.get(self.path.split("?", 1)[0].lstrip("/"))
            if content is None:
                self._status_only(404, range_header)
                return
            etag = f'"{hashlib.sha256(content).hexdigest()[:32]}"'
            start = _range_start(range_header, self.headers.get("If-Range"), etag)
            if start > len(content):
                self._status_only(416, range_header, f"bytes */{len(content)}")
                return
            status = 206 if start else 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(content) - start))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}"
                )
            self.end_headers()
            body = content[start:] if with_body else b""
            fault = server._take_fault() if with_body else None
            sent = body if fault is None else body[: fault.after_bytes]
            # Recorded before the first byte leaves, so a client that has read the body
            # always finds its request in `server.requests`.
            server._record(ServedRequest(self.command, self.path, range_header, status, len(sent)))
            self.wfile.write(sent)
            if fault is not None:
                self._fail(fault)

        def _fail(self, fault: _Fault) -> None:
            self.wfile.flush()
            if fault.release is not None:
                fault.release.wait(_HOLD_LIMIT_S)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early

        def _status_only(self, status: int, range_header: str | None, span: str = "") -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            if span:
                self.send_header("Content-Range", span)
            self.end_headers()
            server._record(ServedRequest(self.command, self.path, range_header, status, 0))

    return Handler


def _range_start(range_header: str | None, if_range: str | None, etag: str) -> int:
    """Where the answer starts: the Range start, unless If-Range names another version."""
    match = _RANGE.fullmatch(range_header or "")
    if match is None or (if_range is not None and if_range != etag):
        return 0
    return int(match[1])
