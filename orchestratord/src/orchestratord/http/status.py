"""The status page (OBS-04) and the one snapshot it reads.

    GET /, GET /ui           the page (HTML; its script and style under /ui/…)
    GET /v2/status           one snapshot, JSON
    GET /v2/status/events    a snapshot every second, SSE (`event: status`); `?count=N`
                             ends the stream after N

A snapshot holds the hosts (devices, free memory), the pools (state, last error, tokens/s),
the queue (depth by priority and by model, with an ETA), the deployments, the recent jobs
(`translate.task_summary`: timings queued -> started -> first token -> end, tokens,
state) and the fleet's tokens/s. Hosts, pools and deployments read as `GET /v2/hosts`,
`/v2/pools` and `/v2/deployments` answer them (the same functions render them).

Reads only: the page has no control. A client key sees the fleet and its own jobs only;
an admin key, or any reader when no keys are configured (loopback), sees every job. The
page and its assets hold no data and are open to all; the two data routes need a key
like every read. The browser sends the key as `Authorization: Bearer` (the page asks
for it and keeps it in `sessionStorage`; the stream is read with `fetch`, as
`EventSource` cannot send headers): a key never goes into a URL, where logs would
keep it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestratord.core import Orchestrator
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.errors import ApiError, Detail
from orchestratord.http.body import query_integer
from orchestratord.http.control import deployment_json
from orchestratord.http.sse import SseResponse
from orchestratord.http.translate import task_summary
from orchestratord.http.viewer import Viewer, viewer_of
from orchestratord.http.views import host_json, pool_json
from orchestratord.jobs.ledger import wall_ms
from orchestratord.placement import PoolView
from orchestratord.tasks import TaskRecord

__all__ = [
    "RECENT_JOBS",
    "SNAPSHOT_INTERVAL_S",
    "RateMeter",
    "Viewer",
    "queue_eta_ms",
    "status_routes",
    "viewer_of",
]

SNAPSHOT_INTERVAL_S = 1.0
MAX_STREAM_COUNT = 86_400  # a day of snapshots
RECENT_JOBS = 50  # jobs a snapshot lists: every live one first, then the newest ended
_RATE_WINDOW_S = 5.0
_FINISHED_SCANNED = RECENT_JOBS * 20  # ended jobs looked through for a viewer's own
# The page's files (package data), by the name they are served under.
_ASSETS = {
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    # Only this origin's own script, style and API: nothing fetched from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def queue_eta_ms(
    queued: int, model: str, views: Iterable[PoolView], job_ms: Mapping[str, float]
) -> int | None:
    """How long until the last of `queued` jobs for `model` may start: the jobs beyond
    the free slots of the ready pools serving it, in waves of all their slots, each a
    job's measured length. None when no ready pool serves the model (it waits for a
    load) or no job of it has ended yet (nothing measured)."""
    serving = [v for v in views if v.serves(model) and v.ready and v.lease_fresh and not v.draining]
    if not serving:
        return None
    free = sum(v.slots_free for v in serving)
    if queued <= free:
        return 0
    length = job_ms.get(model)
    if length is None:
        return None
    slots = max(1, sum(v.slots_total for v in serving))
    return round((queued - free) / slots * length)


@dataclass(slots=True)
class RateMeter:
    """A rate per second of counters that only grow (tokens streamed, per pool), over
    the last `window_s` seconds of samples. Time is passed in (monotonic seconds)."""

    window_s: float = _RATE_WINDOW_S
    _samples: deque[tuple[float, dict[str, int]]] = field(default_factory=deque)

    def observe(self, now: float, totals: dict[str, int]) -> dict[str, float]:
        """Add a sample; the rate of each counter since the oldest sample in the window
        (the first sample has none: every rate is 0)."""
        samples = self._samples
        if not samples or now > samples[-1][0]:
            samples.append((now, totals))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()
        first_at, first = samples[0]
        elapsed = now - first_at
        if elapsed <= 0:
            return dict.fromkeys(totals, 0.0)
        return {
            name: max(0, count - first.get(name, 0)) / elapsed for name, count in totals.items()
        }


class StatusBoard:
    """Builds snapshots from the orchestrator's own objects, for one viewer at a time."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        deployments: DeploymentManager,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._orchestrator = orchestrator
        self._deployments = deployments
        self._clock = clock
        self._meter = RateMeter()

    def snapshot(self, viewer: Viewer) -> dict[str, object]:
        orchestrator = self._orchestrator
        registry = orchestrator.registry
        now, now_ms = self._clock(), wall_ms()
        rates = self._meter.observe(now, orchestrator.tasks.tokens_streamed())
        views = orchestrator.views(now)
        live = orchestrator.tasks.live()
        pools = []
        for pool in registry.pools():
            body = pool_json(registry, pool, now)
            body["tokens_per_s"] = round(rates.get(pool.pool_id, 0.0), 2)
            pools.append(body)
        return {
            "generated_at_ms": now_ms,
            "viewer": {"api_key": viewer.key_name, "sees_all_jobs": viewer.sees_all},
            "tokens_per_s": round(sum(rates.values()), 2),
            "hosts": [host_json(registry, host, now) for host in registry.hosts()],
            "pools": pools,
            "queue": self._queue(live, views),
            "deployments": [deployment_json(self._deployments, s) for s in self._deployments.all()],
            "jobs": self._jobs(live, viewer, now_ms),
        }

    def _queue(self, live: list[TaskRecord], views: tuple[PoolView, ...]) -> dict[str, object]:
        by_model: dict[str, int] = {}
        for record in live:
            if record.state == "queued":
                by_model[record.spec.model] = by_model.get(record.spec.model, 0) + 1
        job_ms = self._orchestrator.ledger.job_ms
        models = [
            {"model": model, "queued": count, "eta_ms": queue_eta_ms(count, model, views, job_ms)}
            for model, count in sorted(by_model.items())
        ]
        etas = [m["eta_ms"] for m in models]
        return {
            "depth": sum(by_model.values()),
            "by_priority": self._orchestrator.queue_depth(),
            "by_model": models,
            "eta_ms": None if None in etas else max((e for e in etas if e is not None), default=0),
        }

    def _jobs(self, live: list[TaskRecord], viewer: Viewer, now_ms: int) -> list[object]:
        shown = sorted(
            (r for r in live if viewer.sees(r)), key=lambda r: r.created_at_ms, reverse=True
        )[:RECENT_JOBS]
        if len(shown) < RECENT_JOBS:
            ended = self._orchestrator.tasks.recent_finished(_FINISHED_SCANNED)
            shown += [r for r in ended if viewer.sees(r)][: RECENT_JOBS - len(shown)]
        return [task_summary(r, now_ms) for r in shown]


def stream_count(params: Mapping[str, str]) -> int | None:
    """`count` of `GET /v2/status/events`: snapshots before the stream ends (None: no
    end); any other query parameter is refused."""
    unknown = sorted(set(params) - {"count"})
    if unknown:
        raise ApiError(
            "INVALID_PARAMS",
            f"{unknown[0][:64]}: unknown query parameter (expected count)",
            details=[Detail("unknown query parameter", field=unknown[0][:64])],
        )
    if "count" not in params:
        return None
    count = query_integer(params["count"])
    if count is None or not 1 <= count <= MAX_STREAM_COUNT:
        raise ApiError(
            "INVALID_PARAMS",
            f"count: must be an integer from 1 to {MAX_STREAM_COUNT}",
            details=[Detail(f"an integer from 1 to {MAX_STREAM_COUNT}", field="count")],
        )
    return count


def status_routes(orchestrator: Orchestrator, deployments: DeploymentManager) -> list[Route]:
    board = StatusBoard(orchestrator, deployments)
    page = _asset_bytes("status.html")
    assets = {name: _asset_bytes(name) for name in _ASSETS}

    def viewer(request: Request) -> Viewer:
        name = request.scope.get("state", {}).get("api_key")
        return viewer_of(orchestrator.quotas, str(name) if name is not None else None)

    async def status_page(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def status_asset(request: Request) -> Response:
        name = str(request.path_params["asset"])
        if name not in _ASSETS:
            raise ApiError("NOT_FOUND", f"no asset {name[:64]!r}; the page's: {sorted(_ASSETS)}")
        return Response(assets[name], media_type=_ASSETS[name], headers=_PAGE_HEADERS)

    async def status_json(request: Request) -> Response:
        body = json.dumps(board.snapshot(viewer(request)))
        return Response(body, media_type="application/json")

    async def status_events(request: Request) -> Response:
        who = viewer(request)
        left = stream_count(request.query_params)

        async def frames() -> AsyncIterator[bytes]:
            # Until the orchestrator stops admitting (SIGTERM): then the stream ends,
            # so that no reader holds the shutdown up. With `count`, after that many.
            sent = 0
            while not orchestrator.intake.draining:
                body = json.dumps(board.snapshot(who), separators=(",", ":"))
                yield f"event: status\ndata: {body}\n\n".encode()
                sent += 1
                if left is not None and sent >= left:
                    return
                await asyncio.sleep(SNAPSHOT_INTERVAL_S)

        return SseResponse(frames(), headers=_SSE_HEADERS)

    return [
        Route("/", status_page, methods=["GET"]),
        Route("/ui", status_page, methods=["GET"]),
        Route("/ui/{asset}", status_asset, methods=["GET"]),
        Route("/v2/status", status_json, methods=["GET"]),
        Route("/v2/status/events", status_events, methods=["GET"]),
    ]


def _asset_bytes(name: str) -> bytes:
    return resources.files("orchestratord.http").joinpath("ui", name).read_bytes()
