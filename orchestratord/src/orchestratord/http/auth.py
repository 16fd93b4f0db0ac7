"""Client authentication and roles (SEC-01, SEC-05): bearer API keys, when any are
configured.

`ROUTE_ROLES` is the one table of which route needs which role: `None` for the ops
endpoints (`/healthz`, `/readyz`, `/metrics`, the API document and its page) and the
status page's files (`/`, `/ui`, `/ui/{asset}`: no data), open to all; `client` for jobs
and reads, `admin` for what changes the fleet (deployments, drain, reload, cordon,
catalog writes). An admin key may do everything a client key may. Every other route
needs `Authorization: Bearer <key>`: a missing or unknown key is 401 `UNAUTHORIZED`, a
key of the wrong role 403 `FORBIDDEN` naming the role needed. The key's name (never the
key) is put in the scope (`state["api_key"]`) for quotas and logs. With no keys
configured (loopback only) everything is open.

The table must list every route the app serves (a test compares it with the app and
with the OpenAPI document's `security`). It fails closed: a path it does not know needs
an admin key (a client key gets 403 where an admin key would get 404), so a route added
without an entry is never open to clients. Patterns match as Starlette's do (`[^/]+`
per parameter, on the decoded path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestratord.errors import ApiError
from orchestratord.http.errors import error_response
from orchestratord.quotas import ApiKey, Quotas, Role, permits

__all__ = ["ROUTE_ROLES", "AuthMiddleware", "authorize", "required_role"]

# (method, route pattern as served, required role; None: open to all)
ROUTE_ROLES: tuple[tuple[str, str, Role | None], ...] = (
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/openapi.yaml", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/docs/assets/{name}", None),
    ("GET", "/metrics", None),
    ("POST", "/v2/tasks", "client"),
    ("GET", "/v2/tasks", "client"),
    ("GET", "/v2/tasks/{task_id}", "client"),
    ("GET", "/v2/tasks/{task_id}/events", "client"),
    ("POST", "/v2/tasks/{task_id}/cancel", "client"),
    ("GET", "/v2/sessions/{session_id}", "client"),
    ("DELETE", "/v2/sessions/{session_id}", "client"),
    ("GET", "/v2/meta/capabilities", "client"),
    ("POST", "/v2/tokenize", "client"),
    ("POST", "/v2/detokenize", "client"),
    ("POST", "/v1/chat/completions", "client"),
    ("POST", "/v1/completions", "client"),
    ("POST", "/v1/embeddings", "client"),
    ("GET", "/v1/models", "client"),
    ("GET", "/v2/pools", "client"),
    ("GET", "/v2/pools/{pool_id}", "client"),
    ("GET", "/v2/pools/{pool_id}/logs", "admin"),
    ("POST", "/v2/pools/{pool_id}/drain", "admin"),
    ("POST", "/v2/pools/{pool_id}/undrain", "admin"),
    ("POST", "/v2/pools/{pool_id}/reload", "admin"),
    ("GET", "/v2/deployments", "client"),
    ("GET", "/v2/deployments/{name}", "client"),
    ("PUT", "/v2/deployments/{name}", "admin"),
    ("DELETE", "/v2/deployments/{name}", "admin"),
    ("GET", "/v2/hosts", "client"),
    ("POST", "/v2/hosts/{host_id}/cordon", "admin"),
    ("GET", "/v2/catalog/models", "client"),
    ("GET", "/v2/catalog/models/{model_id}", "client"),
    ("POST", "/v2/catalog/models/{model_id}/verify", "admin"),
    ("POST", "/v2/catalog/models/{model_id}/state", "admin"),
    # The status page (OBS-04): the page and its files hold no data; the snapshot does.
    ("GET", "/", None),
    ("GET", "/ui", None),
    ("GET", "/ui/{asset}", None),
    ("GET", "/v2/status", "client"),
    ("GET", "/v2/status/events", "client"),
)

_PARAM = re.compile(r"\{[^}]+\}")
_RANK: dict[Role | None, int] = {None: 0, "client": 1, "admin": 2}


@dataclass(frozen=True, slots=True)
class _Rules:
    exact: dict[tuple[str, str], Role | None]
    exact_paths: dict[str, Role | None]  # the weakest role any method of the path needs
    patterns: tuple[tuple[re.Pattern[str], str, Role | None], ...]


def _compile(table: tuple[tuple[str, str, Role | None], ...]) -> _Rules:
    exact: dict[tuple[str, str], Role | None] = {}
    paths: dict[str, Role | None] = {}
    patterns = []
    for method, route, role in table:
        if "{" in route:
            parts = [re.escape(part) for part in _PARAM.split(route)]
            patterns.append((re.compile("^" + "[^/]+".join(parts) + "$"), method, role))
            continue
        exact[(method, route)] = role
        known = paths.get(route, "admin")
        paths[route] = role if _RANK[role] < _RANK[known] else known
    return _Rules(exact, paths, tuple(patterns))


_RULES = _compile(ROUTE_ROLES)


def required_role(method: str, path: str) -> Role | None:
    """The role a request needs: None when open to all. HEAD is GET. A known path with
    a method it does not serve needs the weakest role of that path (the answer is a
    405); an unknown path needs an admin key (fail closed; the answer is a 404)."""
    method = "GET" if method == "HEAD" else method
    if (method, path) in _RULES.exact:
        return _RULES.exact[(method, path)]
    if path in _RULES.exact_paths:
        return _RULES.exact_paths[path]
    weakest: Role | None = "admin"
    for regex, route_method, role in _RULES.patterns:
        if regex.match(path) is None:
            continue
        if route_method == method:
            return role
        weakest = role if _RANK[role] < _RANK[weakest] else weakest
    return weakest


def authorize(key: ApiKey | None, needed: Role) -> ApiError | None:
    """The refusal for a request that needs `needed` made with `key`, or None."""
    if key is None:
        return ApiError("UNAUTHORIZED", "a valid API key is required: Authorization: Bearer <key>")
    if not permits(key.role, needed):
        return ApiError(
            "FORBIDDEN",
            f"this needs an API key with role {needed}; key {key.name!r} has role {key.role} "
            "(an api_keys entry without a role is a client key)",
        )
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, quotas: Quotas) -> None:
        self._app = app
        self._quotas = quotas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._quotas.enabled:
            await self._app(scope, receive, send)
            return
        needed = required_role(scope["method"], scope["path"])
        if needed is None:
            await self._app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        key = self._quotas.identify(token.strip()) if scheme.lower() == "bearer" else None
        error = authorize(key, needed)
        if error is not None:
            correlation_id = str(scope.get("state", {}).get("correlation_id", ""))
            await error_response(error, correlation_id, scope["path"])(scope, receive, send)
            return
        if key is not None:  # always, once authorized
            scope.setdefault("state", {})["api_key"] = key.name
        await self._app(scope, receive, send)
