"""`DataPlane`: the hot routes are called directly with Starlette's error handling kept;
every other request still goes through Starlette's router."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from types import SimpleNamespace
from typing import Any

from orchestratord.errors import ApiError
from orchestratord.http.app import DataPlane, _api_error, _http_error, _internal_error
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build() -> tuple[DataPlane, Starlette, Counter]:
    async def submit(request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("fail") == "api":
            raise ApiError("INVALID_PARAMS", "prompt: too long")
        if body.get("fail") == "bug":
            raise RuntimeError("secret internals /srv/keys")
        return JSONResponse({"via": "submit", "app": request.app is app})

    async def events(request: Request) -> Response:
        return JSONResponse({"task_id": request.path_params["task_id"]})

    async def pools(request: Request) -> Response:
        return JSONResponse({"via": "starlette"})

    app = Starlette(
        routes=[
            Route("/v2/tasks", submit, methods=["POST"]),
            Route("/v2/tasks/{task_id}/events", events, methods=["GET"]),
            Route("/v2/pools", pools, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    rejected = Counter("rejected", "test", ["code"], registry=CollectorRegistry())
    app.state.metrics = SimpleNamespace(rejected=rejected)
    return DataPlane(app), app, rejected


async def call(app: DataPlane, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "state": {"correlation_id": "c-1"},
    }
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal given
        if given:
            return {"type": "http.disconnect"}
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


async def test_a_hot_route_is_called_directly_and_sees_the_starlette_app() -> None:
    plane, _, _ = build()
    assert await call(plane, "POST", "/v2/tasks", b"{}") == (200, {"via": "submit", "app": True})


async def test_the_events_route_gets_its_task_id_from_the_path() -> None:
    plane, _, _ = build()
    assert await call(plane, "GET", "/v2/tasks/t-42/events") == (200, {"task_id": "t-42"})


async def test_other_routes_and_near_misses_go_through_starlette() -> None:
    plane, _, _ = build()
    assert await call(plane, "GET", "/v2/pools") == (200, {"via": "starlette"})
    status, body = await call(plane, "GET", "/v2/tasks/a/b/events")
    assert status == 404 and body["code"] == "NOT_FOUND"
    status, body = await call(plane, "GET", "/v2/tasks")  # wrong method for the hot path
    assert status == 405 and body["code"] == "INVALID_PARAMS"


async def test_an_api_error_is_its_envelope_and_counted_as_a_rejected_submission() -> None:
    plane, _, rejected = build()
    status, body = await call(plane, "POST", "/v2/tasks", b'{"fail": "api"}')
    assert status == 400
    assert body["code"] == "INVALID_PARAMS" and "too long" in body["message"]
    assert rejected.labels("INVALID_PARAMS")._value.get() == 1


async def test_an_unexpected_error_is_a_500_that_leaks_nothing() -> None:
    plane, _, _ = build()
    status, body = await call(plane, "POST", "/v2/tasks", b'{"fail": "bug"}')
    assert status == 500
    assert body["code"] == "INTERNAL" and body["correlation_id"] == "c-1"
    assert "secret" not in json.dumps(body) and "/srv" not in json.dumps(body)
