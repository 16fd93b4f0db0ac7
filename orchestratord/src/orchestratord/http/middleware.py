"""Correlation ids on every response (API-08), as a plain ASGI middleware.

The client's `X-Correlation-Id` is echoed when it is well formed, a fresh one is
generated when it is absent, and a malformed one is refused with `INVALID_PARAMS` (400,
in OpenAI's error shape on `/v1/...`, with a fresh id on the response). The
id is put in the ASGI scope (`scope["state"]["correlation_id"]`) for handlers and logs.
Being outermost, it is also the last resort: an exception that escapes everything below
before the response started becomes the 500 `INTERNAL` envelope, never a plain-text 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestratord.errors import ApiError
from orchestratord.http.errors import error_response

__all__ = ["CorrelationIdMiddleware"]

log = logging.getLogger("orchestratord.http")
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HEADER = b"x-correlation-id"


class CorrelationIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        if given is None:
            correlation_id = uuid.uuid4().hex
        else:
            correlation_id = given.decode("latin-1")
            if not _VALID.match(correlation_id):
                fresh = uuid.uuid4().hex
                error = ApiError(
                    "INVALID_PARAMS", "X-Correlation-Id must be 1-128 characters of [A-Za-z0-9._:-]"
                )
                response = error_response(error, fresh, scope["path"])
                response.headers["X-Correlation-Id"] = fresh
                await response(scope, receive, send)
                return
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        header = (_HEADER, correlation_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
                started = True
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        except BaseException as exc:
            task = asyncio.current_task()
            if started or (task is not None and task.cancelling()):
                raise  # nothing can be said any more, or the server is stopping
            # The last resort: whatever escaped the handlers (a bare CancelledError from
            # a closed engine channel, an error in a middleware) is still the envelope,
            # never the server's plain-text 500.
            log.error(
                "unhandled %s on %s %s",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
                exc_info=exc,
                extra={"correlation_id": correlation_id},
            )
            error = ApiError("INTERNAL", "internal error")
            response = error_response(error, correlation_id, scope["path"])
            await response(scope, receive, send_with_id)
