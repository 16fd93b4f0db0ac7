"""Client authentication (SEC-01): bearer API keys, when any are configured.

Every route except the ops endpoints (`/healthz`, `/readyz`, `/openapi.yaml`,
`/metrics`) needs `Authorization: Bearer <key>`; a missing or unknown key is 401
`UNAUTHORIZED`. The key's name (never the key) is put in the scope
(`state["api_key"]`) for quotas and logs.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestratord.errors import ApiError
from orchestratord.http.errors import error_response
from orchestratord.quotas import Quotas

__all__ = ["AuthMiddleware"]

_OPEN = frozenset({"/healthz", "/readyz", "/openapi.yaml", "/metrics"})


class AuthMiddleware:
    def __init__(self, app: ASGIApp, quotas: Quotas) -> None:
        self._app = app
        self._quotas = quotas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._quotas.enabled or scope["path"] in _OPEN:
            await self._app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        key = self._quotas.identify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            state = scope.get("state", {})
            error = ApiError(
                "UNAUTHORIZED", "a valid API key is required: Authorization: Bearer <key>"
            )
            await error_response(error, str(state.get("correlation_id", "")))(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key.name
        await self._app(scope, receive, send)
