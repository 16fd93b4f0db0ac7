"""Control-plane routes: deployments, hosts, cordon, drain, undrain, reload and a pool's
engine log (API-11, POOL-05/06/08).

Wire bodies are the generated models; replies are assembled here from the deployment
manager's and the registry's state. Engine credentials never appear (SEC-04).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pydantic
from specs.api.models import (
    CordonRequest,
    DeploymentRequest,
    DrainRequest,
    ReloadRequest,
    UndrainRequest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestratord.control_link import CommandFailed, ControlCommands
from orchestratord.deployments import Constraints, DeploymentSpec
from orchestratord.deployments.manager import DeploymentManager, DeploymentState
from orchestratord.errors import STATUS_BY_CODE, ApiError, Detail
from orchestratord.http.body import parse_body, path_param, query_integer, read_json_body
from orchestratord.http.views import host_json
from orchestratord.registry import PoolRegistry

__all__ = ["control_routes"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
# A reload waits for the new model to load and warm up, after a drain when the two do
# not fit together, and for a roll back when it fails: the pool manager's limits
# (`reload_drain_deadline_s` + 2 × `reload_timeout_s`, 900 s by default) fit in this.
RELOAD_WAIT_S = 1800.0


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _parse(model: type[pydantic.BaseModel], raw: bytes) -> Any:
    return parse_body(model, raw)


_LOG_TAIL_BYTES = 8192  # `GET /v2/pools/{id}/logs` without an offset: the last 8 KiB
_LOG_MAX_BYTES = 256 << 10


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A query parameter as an integer in [low, high]; INVALID_PARAMS naming it else."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = query_integer(raw)
    if value is None or not low <= value <= high:
        raise ApiError(
            "INVALID_PARAMS",
            f"{name} must be an integer from {low} to {high}",
            details=[Detail("out of range or not an integer", field=name)],
        )
    return value


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )


def _name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not _NAME.match(name):
        raise ApiError(
            "INVALID_PARAMS",
            "a deployment name is 1-64 characters of [a-z0-9.-], starting with a letter or digit",
        )
    return name


def spec_from_wire(name: str, body: DeploymentRequest) -> DeploymentSpec:
    replicas = body.replicas
    low = replicas.min if replicas and replicas.min is not None else 1
    high = replicas.max if replicas and replicas.max is not None else max(1, low)
    if low > high:
        raise ApiError(
            "INVALID_PARAMS",
            "replicas.min must not exceed replicas.max",
            details=[Detail("min > max", field="replicas")],
        )
    constraints = body.constraints
    return DeploymentSpec(
        name=name,
        model=body.model,
        engine=body.engine or "llamacpp-inproc",
        ctx=body.ctx or 4096,
        slots=body.slots or 1,
        min_replicas=low,
        max_replicas=high,
        policy=body.policy or "spread",
        constraints=Constraints(
            hosts=frozenset(h.root for h in constraints.hosts or ())
            if constraints
            else frozenset(),
            device_kind=constraints.device_kind if constraints else None,
            min_compute_capability=constraints.min_compute_capability if constraints else None,
        ),
        idle_unload_after_ms=body.idle_unload_after_ms,
        aliases=tuple(a.root for a in body.aliases or ()),
    )


def _spec_json(spec: DeploymentSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": spec.model,
        "engine": spec.engine,
        "ctx": spec.ctx,
        "slots": spec.slots,
        "replicas": {"min": spec.min_replicas, "max": spec.max_replicas},
        "policy": spec.policy,
        "aliases": list(spec.aliases),
        "constraints": {
            k: v
            for k, v in (
                ("hosts", sorted(spec.constraints.hosts)),
                ("device_kind", spec.constraints.device_kind),
                ("min_compute_capability", spec.constraints.min_compute_capability),
            )
            if v
        },
    }
    if spec.idle_unload_after_ms is not None:
        body["idle_unload_after_ms"] = spec.idle_unload_after_ms
    return body


def deployment_json(manager: DeploymentManager, state: DeploymentState) -> dict[str, Any]:
    pools = manager.pools_of(state.spec.name)
    ready = sum(1 for p in pools if p.ready)
    if state.reasons:
        phase = "pending"
    elif not pools and not state.pending:
        phase = "idle" if state.spec.min_replicas == 0 else "loading"
    else:
        phase = "ready" if ready >= max(1, state.spec.min_replicas) else "loading"
    estimate = state.estimate
    return {
        "name": state.spec.name,
        "spec": _spec_json(state.spec),
        "phase": phase,
        "pools": [
            {
                "pool_id": p.pool_id,
                "host_id": p.host_id,
                "device": p.device,
                "state": p.state,
                "ready": p.ready,
                "memory_estimated_bytes": p.memory_estimated_bytes,
                "memory_actual_bytes": p.memory_actual_bytes,
                "load_progress": None if p.load_progress is None else round(p.load_progress, 4),
            }
            for p in pools
        ],
        "pending_pools": len(state.pending),
        "pending_reasons": [
            {"host_id": r.host_id, "device_id": r.device_id, "reason": r.reason}
            for r in state.reasons
        ],
        "estimate": None
        if estimate is None
        else {
            "weights": estimate.weights,
            "kv_cache": estimate.kv_cache,
            "compute_buffer": estimate.compute_buffer,
            "overhead": estimate.overhead,
            "total": estimate.total,
        },
        "last_error": state.last_error,
    }


def control_routes(
    manager: DeploymentManager,
    registry: PoolRegistry,
    commands: ControlCommands,
    max_body_bytes: int,
) -> list[Route]:
    async def put_deployment(request: Request) -> Response:
        name = _name(request)
        body: DeploymentRequest = _parse(
            DeploymentRequest, await read_json_body(request, max_body_bytes)
        )
        state = manager.put(spec_from_wire(name, body))
        manager.reconcile()
        return _json(deployment_json(manager, state))

    async def get_deployment(request: Request) -> Response:
        name = _name(request)
        state = manager.get(name)
        if state is None:
            raise ApiError("NOT_FOUND", f"no deployment {name}")
        return _json(deployment_json(manager, state))

    async def delete_deployment(request: Request) -> Response:
        manager.delete(_name(request))
        return Response(status_code=204)

    async def list_deployments(request: Request) -> Response:
        return _json({"deployments": [deployment_json(manager, s) for s in manager.all()]})

    async def list_hosts(request: Request) -> Response:
        now = time.monotonic()
        hosts = [host_json(registry, host, now) for host in registry.hosts()]
        return _json({"hosts": hosts})

    async def cordon_host(request: Request) -> Response:
        host_id = path_param(request, "host_id", 128)
        body: CordonRequest = _parse(CordonRequest, await read_json_body(request, max_body_bytes))
        if registry.host(host_id) is None:
            raise ApiError("NOT_FOUND", f"no host {host_id}")
        try:
            await commands.cordon(host_id, body.cordoned, body.device or "")
        except CommandFailed as exc:
            raise ApiError(
                "POOL_UNREADY", f"host {host_id}: {exc}", retriable=True, retry_after_ms=1000
            ) from exc
        registry.set_cordon(host_id, body.cordoned, body.device or "")
        manager.wake()
        return Response(status_code=204)

    async def drain_pool(request: Request) -> Response:
        pool_id = path_param(request, "pool_id", 128)
        body: DrainRequest = _parse(DrainRequest, await read_json_body(request, max_body_bytes))
        pool = registry.pool(pool_id)
        if pool is None:
            raise ApiError("NOT_FOUND", f"no pool {pool_id}")
        try:
            deadline_ms = 30_000 if body.deadline_ms is None else body.deadline_ms
            await commands.drain(pool.host_id, pool_id, deadline_ms)
        except CommandFailed as exc:
            raise ApiError(
                "POOL_UNREADY",
                f"pool {pool_id}: {exc}",
                retriable=True,
                retry_after_ms=1000,
                pool_id=pool_id,
            ) from exc
        registry.mark_draining(pool_id)
        return Response(status_code=202)

    async def undrain_pool(request: Request) -> Response:
        pool_id = path_param(request, "pool_id", 128)
        if _has_body(request):  # optional; when given, an empty object
            _parse(UndrainRequest, await read_json_body(request, max_body_bytes))
        pool = registry.pool(pool_id)
        if pool is None:
            raise ApiError("NOT_FOUND", f"no pool {pool_id}")
        try:
            await commands.undrain(pool.host_id, pool_id)
        except CommandFailed as exc:
            if exc.code == "NOT_FOUND":  # the host no longer has it
                raise ApiError("NOT_FOUND", f"pool {pool_id}: {exc}") from exc
            raise ApiError(
                "POOL_UNREADY",
                f"pool {pool_id}: {exc}",
                retriable=True,
                retry_after_ms=1000,
                pool_id=pool_id,
            ) from exc
        return Response(status_code=202)

    async def reload_pool(request: Request) -> Response:
        pool_id = path_param(request, "pool_id", 128)
        body: ReloadRequest = _parse(ReloadRequest, await read_json_body(request, max_body_bytes))
        pool = registry.pool(pool_id)
        if pool is None:
            raise ApiError("NOT_FOUND", f"no pool {pool_id}")
        previous = pool.model_id
        try:
            message = await commands.reload(pool.host_id, pool_id, body.model, RELOAD_WAIT_S)
        except CommandFailed as exc:
            code = exc.code if exc.code in STATUS_BY_CODE else "INTERNAL"
            raise ApiError(
                code,
                f"pool {pool_id}: {exc}",
                retriable=code == "POOL_UNREADY",
                retry_after_ms=1000 if code == "POOL_UNREADY" else None,
                pool_id=pool_id,
            ) from exc
        current = registry.pool(pool_id) or pool
        return _json(
            {
                "pool_id": pool_id,
                "previous_model_id": previous,
                "model_id": current.model_id,
                "model_digest": current.model_digest,
                "message": message,
            }
        )

    async def pool_logs(request: Request) -> Response:
        pool_id = str(request.path_params["pool_id"])
        replica = _int_param(request, "replica", 0, 0, 1 << 16)
        offset = _int_param(request, "offset", -_LOG_TAIL_BYTES, -(1 << 53), 1 << 53)
        max_bytes = _int_param(request, "max_bytes", _LOG_MAX_BYTES, 1, _LOG_MAX_BYTES)
        pool = registry.pool(pool_id)
        if pool is None:
            raise ApiError("NOT_FOUND", f"no pool {pool_id}")
        try:
            chunk = await commands.tail_log(pool.host_id, pool_id, replica, offset, max_bytes)
        except CommandFailed as exc:
            code = exc.code if exc.code in ("NOT_FOUND", "INVALID_PARAMS") else "POOL_UNREADY"
            raise ApiError(code, f"pool {pool_id}: {exc}", pool_id=pool_id) from exc
        return _json(
            {
                "pool_id": pool_id,
                "host_id": pool.host_id,
                "replica": replica,
                "file": chunk.file,
                "text": chunk.text,
                "next_offset": chunk.next_offset,
                "size": chunk.size,
            }
        )

    return [
        Route("/v2/pools/{pool_id}/logs", pool_logs, methods=["GET"]),
        Route("/v2/pools/{pool_id}/drain", drain_pool, methods=["POST"]),
        Route("/v2/pools/{pool_id}/undrain", undrain_pool, methods=["POST"]),
        Route("/v2/pools/{pool_id}/reload", reload_pool, methods=["POST"]),
        Route("/v2/deployments", list_deployments, methods=["GET"]),
        Route("/v2/deployments/{name}", put_deployment, methods=["PUT"]),
        Route("/v2/deployments/{name}", get_deployment, methods=["GET"]),
        Route("/v2/deployments/{name}", delete_deployment, methods=["DELETE"]),
        Route("/v2/hosts", list_hosts, methods=["GET"]),
        Route("/v2/hosts/{host_id}/cordon", cordon_host, methods=["POST"]),
    ]
