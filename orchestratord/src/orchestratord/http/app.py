"""The Starlette application: routes of the data plane and the ops endpoints.

Handlers are thin: parse and validate (`translate`), call the `Orchestrator`, render.
Every error is the API-07 envelope (OpenAI's error body under `/v1/`); unknown routes
are 404 `NOT_FOUND`, wrong methods 405 `INVALID_PARAMS` with `Allow`, and anything
unexpected 500 `INTERNAL` with no internals leaked.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST
from specs.api.models import TaskRequest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from orchestratord.control_link import ControlCommands
from orchestratord.core import Orchestrator
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.errors import ApiError
from orchestratord.http.apidocs import apidoc_routes
from orchestratord.http.auth import AuthMiddleware
from orchestratord.http.body import parse_body, path_param, read_json_body
from orchestratord.http.catalog import catalog_routes
from orchestratord.http.control import control_routes
from orchestratord.http.errors import error_response
from orchestratord.http.meta import meta_routes
from orchestratord.http.middleware import CorrelationIdMiddleware
from orchestratord.http.openai import openai_routes
from orchestratord.http.sse import SseResponse
from orchestratord.http.status import status_routes
from orchestratord.http.task_list import listing_query, visible_tasks
from orchestratord.http.translate import (
    TASK_ID_HEADER,
    submission_for,
    task_from_wire,
    task_summary,
)
from orchestratord.http.viewer import Viewer, viewer_of
from orchestratord.http.views import pool_json
from orchestratord.job_trace import client_trace
from orchestratord.tasks import TaskRecord

__all__ = ["build_app"]

log = logging.getLogger("orchestratord.http")
_TASK_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _api_key(request: Request) -> str | None:
    name = request.scope.get("state", {}).get("api_key")
    return str(name) if name is not None else None


def _viewer(orchestrator: Orchestrator, request: Request) -> Viewer:
    return viewer_of(orchestrator.quotas, _api_key(request))


def _correlation_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("correlation_id", ""))


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _parse_task(raw: bytes) -> TaskRequest:
    return parse_body(TaskRequest, raw, "task")


def _task_id(request: Request) -> str:
    task_id = str(request.path_params["task_id"])
    if not _TASK_ID.match(task_id):
        raise ApiError("INVALID_PARAMS", "task id must be 1-128 characters of [A-Za-z0-9._:-]")
    return task_id


def build_app(
    orchestrator: Orchestrator, deployments: DeploymentManager, commands: ControlCommands
) -> CorrelationIdMiddleware:
    """The ASGI app. The correlation-id middleware wraps everything, error pages included."""
    starlette = _starlette(orchestrator, deployments, commands)
    return CorrelationIdMiddleware(AuthMiddleware(DataPlane(starlette), orchestrator.quotas))


Endpoint = Callable[[Request], Awaitable[Response]]
_HOT = frozenset(
    {
        ("POST", "/v2/tasks"),
        ("GET", "/v2/tasks/{task_id}/events"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
    }
)
_EVENTS_PREFIX, _EVENTS_SUFFIX = "/v2/tasks/", "/events"


class DataPlane:
    """The data plane's routes (`_HOT`: submit, events, the OpenAI streams) called
    directly, the rest through Starlette. Same endpoints and the same exception
    handlers as Starlette's (an `ApiError` is its envelope, anything else a logged 500
    `INTERNAL`), without its router, its two exception middlewares and their `send`
    wrappers: fewer layers on every request and every streamed chunk."""

    def __init__(self, app: Starlette) -> None:
        self._app = app
        self._exact: dict[tuple[str, str], Endpoint] = {}
        self._events: Endpoint | None = None
        for route in app.routes:
            if not isinstance(route, Route):
                continue
            for method in route.methods or ():
                if (method, route.path) not in _HOT:
                    continue
                endpoint = cast(Endpoint, route.endpoint)
                if "{" in route.path:
                    self._events = endpoint
                else:
                    self._exact[(method, route.path)] = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        endpoint = self._exact.get((method, path))
        if endpoint is None and method == "GET" and path.startswith(_EVENTS_PREFIX):
            task_id = path[len(_EVENTS_PREFIX) : -len(_EVENTS_SUFFIX)]
            if path.endswith(_EVENTS_SUFFIX) and task_id and "/" not in task_id:
                endpoint = self._events
                scope["path_params"] = {"task_id": task_id}
        if endpoint is None:
            await self._app(scope, receive, send)
            return
        scope["app"] = self._app
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except ApiError as exc:
            response = await _api_error(request, exc)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        except Exception as exc:  # noqa: BLE001 - Starlette's last resort, as its handler
            response = await _internal_error(request, exc)
        await response(scope, receive, send)


def _wire_text(body: bytes, wire: TaskRequest) -> str:
    """The request as the journal keeps it: the body as it came (it parsed as a
    `TaskRequest`, so it reads back as one), else encoded again."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return wire.model_dump_json(exclude_none=True)


def _starlette(
    orchestrator: Orchestrator, deployments: DeploymentManager, commands: ControlCommands
) -> Starlette:
    config = orchestrator.config

    async def submit_task(request: Request) -> Response:
        body = await read_json_body(request, config.max_body_bytes)
        wire = _parse_task(body)
        spec = task_from_wire(
            wire,
            correlation_id=_correlation_id(request),
            max_prompt_bytes=config.max_prompt_bytes,
            api_key=_api_key(request),
        )
        streamed = "text/event-stream" in request.headers.get("accept", "")
        submission = submission_for(
            request.headers,
            wire,
            "v2-stream" if streamed else "v2",
            two_step=not streamed,
            wire_text=functools.partial(_wire_text, body, wire),
        )
        record = await orchestrator.submit(
            spec, submission, trace_parent=client_trace(request.headers)
        )
        if streamed:
            return _stream(record, None)
        return _json(
            {
                "task_id": record.task_id,
                "queue_position": record.queue_position,
                "predicted_start_ms": record.predicted_start_ms,
                "events_url": f"/v2/tasks/{record.task_id}/events",
            },
            status=202,
        )

    async def task_events(request: Request) -> Response:
        record = await _existing(_task_id(request), request)
        last = request.headers.get("last-event-id")
        if last is not None and not (last.isdigit() and len(last) <= 20):
            raise ApiError("INVALID_PARAMS", "Last-Event-ID must be a non-negative integer")
        return _stream(record, int(last) if last is not None else None)

    def _stream(record: TaskRecord, after_id: int | None) -> Response:
        try:
            subscriber = record.events.subscribe(after_id)
        except ValueError as exc:
            raise ApiError("INVALID_PARAMS", f"cannot resume: {exc}") from None
        heartbeat_s = config.sse_heartbeat_ms / 1000.0

        async def frames() -> AsyncIterator[bytes]:
            try:
                while (chunk := await subscriber.next_chunk(heartbeat_s)) is not None:
                    yield chunk
            finally:
                subscriber.detach()
                if not record.done:
                    orchestrator.subscriber_left(record.task_id)

        return SseResponse(frames(), headers={**_SSE_HEADERS, TASK_ID_HEADER: record.task_id})

    async def _existing(task_id: str, request: Request) -> TaskRecord:
        """The job, if the caller may see it (`viewer`): another key's job is answered
        as an unknown one, so its existence does not leak."""
        record = await orchestrator.lookup(task_id)
        if record is None or not _viewer(orchestrator, request).sees(record):
            raise ApiError("NOT_FOUND", f"no task {task_id}")
        return record

    async def get_task(request: Request) -> Response:
        return _json(_status(await _existing(_task_id(request), request)))

    async def list_tasks(request: Request) -> Response:
        query = listing_query(request.query_params)
        viewer = _viewer(orchestrator, request)
        tasks = orchestrator.tasks
        shown = visible_tasks(tasks.live(), tasks.recent_finished(query.limit), query, viewer)
        return _json({"tasks": [task_summary(record) for record in shown]})

    async def cancel_task(request: Request) -> Response:
        """204 whatever the id (API-05); another key's job is left alone, as an
        unknown id is (the answer must not tell that it exists)."""
        task_id = _task_id(request)
        record = orchestrator.tasks.get(task_id)
        if record is not None and _viewer(orchestrator, request).sees(record):
            orchestrator.cancel(task_id)
        return Response(status_code=204)

    async def list_pools(request: Request) -> Response:
        now, registry = time.monotonic(), orchestrator.registry
        return _json({"pools": [pool_json(registry, p, now) for p in registry.pools()]})

    async def get_pool(request: Request) -> Response:
        pool_id = path_param(request, "pool_id", 128)
        pool = orchestrator.registry.pool(pool_id)
        if pool is None:
            raise ApiError("NOT_FOUND", f"no pool {pool_id}")
        return _json(pool_json(orchestrator.registry, pool, time.monotonic()))

    async def get_session(request: Request) -> Response:
        session_id = path_param(request, "session_id", 128)
        now = time.monotonic()
        session = orchestrator.sessions.get(_api_key(request), session_id, now)
        if session is None:
            raise ApiError("NOT_FOUND", f"no session {session_id} (never opened, or expired)")
        replica = (
            orchestrator.registry.replica(session.pool_id, session.replica)
            if session.pool_id is not None and session.replica is not None
            else None
        )
        tokens_left, time_left = session.budgets_remaining()
        return _json(
            {
                "session_id": session.session_id,
                "ttl_ms_remaining": session.ttl_remaining_ms(now),
                "turns": session.turns,
                "max_turns": session.options.max_turns,
                "pool_id": session.pool_id,
                "kv_warm": replica is not None and replica.incarnation == session.incarnation,
                "tokens_used": session.tokens_used,
                "time_used_ms": round(session.time_used_ms, 3),
                "tokens_budget_remaining": tokens_left,
                "time_budget_remaining_ms": time_left,
            }
        )

    async def delete_session(request: Request) -> Response:
        orchestrator.sessions.delete(_api_key(request), path_param(request, "session_id", 128))
        return Response(status_code=204)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready = sum(1 for p in orchestrator.registry.pools() if p.ready)
        if ready:
            return _json({"status": "ok", "pools_ready": ready})
        return _json({"status": "unready", "pools_ready": 0, "reason": "no pool is ready"}, 503)

    async def metrics(request: Request) -> Response:
        return Response(orchestrator.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    routes = [  # the data plane first: Starlette tries routes in order
        Route("/v2/tasks", submit_task, methods=["POST"]),
        Route("/v2/tasks/{task_id}/events", task_events, methods=["GET"]),
        *openai_routes(orchestrator),
        Route("/v2/tasks", list_tasks, methods=["GET"]),
        Route("/v2/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/v2/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
        Route("/v2/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/v2/sessions/{session_id}", delete_session, methods=["DELETE"]),
        Route("/v2/pools", list_pools, methods=["GET"]),
        Route("/v2/pools/{pool_id}", get_pool, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *apidoc_routes(),
        Route("/metrics", metrics, methods=["GET"]),
        *meta_routes(orchestrator),
        *control_routes(deployments, orchestrator.registry, commands, config.max_body_bytes),
        *catalog_routes(orchestrator.catalog, commands, config.max_body_bytes),
        *status_routes(orchestrator, deployments),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.metrics = orchestrator.metrics
    return app


def _status(record: TaskRecord) -> dict[str, object]:
    state = record.shown_state
    ended = state == record.state
    error = record.error if ended else None
    return {
        "task_id": record.task_id,
        "state": state,
        "model": record.spec.model,
        "workload": record.spec.workload,
        "priority": record.spec.priority,
        "session_id": record.spec.session_id,
        "pool_id": record.pool_id,
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "attempts": record.attempts,
        "created_at_ms": record.created_at_ms,
        "started_at_ms": record.started_at_ms,
        "finished_at_ms": record.finished_at_ms if ended else None,
        "ttft_ms": record.ttft_ms,
        "decode_time_ms": record.decode_time_ms,
        "finish_reason": record.finish_reason,
        "error": None
        if error is None
        else {
            "code": error.code,
            "message": error.message,
            "retriable": error.retriable,
            **(
                {"retry_after_ms": error.retry_after_ms} if error.retry_after_ms is not None else {}
            ),
        },
    }


_SUBMISSIONS = frozenset({"/v2/tasks"})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if request.method == "POST" and request.url.path in _SUBMISSIONS:
        request.app.state.metrics.rejected.labels(exc.code).inc()
    return error_response(exc, _correlation_id(request), request.url.path)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route of this path serves (Starlette's own 405 names only the
    first route's), HEAD with GET, for the `Allow` header of a 405."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            methods.update(route.methods or ())
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    headers: dict[str, str] = {}
    if exc.status_code == 404:
        error = ApiError("NOT_FOUND", f"no route {path}")
    elif exc.status_code == 405:
        allowed = allowed_methods(request.app.routes, request.scope)
        headers["Allow"] = ", ".join(allowed)
        error = ApiError(
            "INVALID_PARAMS",
            f"method {request.method} is not allowed here; allowed: {headers['Allow']}",
            status=405,
        )
    else:
        error = ApiError("INVALID_PARAMS", str(exc.detail), status=exc.status_code)
    return error_response(error, _correlation_id(request), path, headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        extra={"correlation_id": _correlation_id(request)},
    )
    error = ApiError("INTERNAL", "internal error")
    return error_response(error, _correlation_id(request), request.url.path)
