"""Reload a pool to another model (POOL-05, API-11), atomically for its clients.

    side-by-side     the new generation's estimated memory fits in the free memory of
                     the pool's device (with the estimator's margin):
        check model ─► start the new generation beside the old ─► wait until ready
        ├─ ready  ─► swap (new work goes to the new model) ─► retire the old in the
        │            background (drain: running jobs finish; then stop)
        └─ failed ─► stop the new generation; the old never stopped serving
    drain-then-swap  it does not fit, or the device is unknown:
        check model ─► out of service ─► retire the old (drain, stop) ─► start the new
        ├─ ready  ─► swap; back in service
        └─ failed ─► stop the new; start the old model again (roll back); back in service

A model that fails its check (missing, not GGUF, wrong digest) fails the reload before
anything stops. Any failure raises `ReloadFailed` naming the reason, which also stays in
the pool's `last_error` ("reload to X failed: ...; serving Y") until the next reload.
Requests that cannot start at all (unknown model, a path outside the host's model
roots, a deployment's pool, a reload already running) raise `ReloadRefused`.

Errors:

    ReloadError            code: the API error code the orchestrator answers with
    ├── ReloadRefused      nothing was tried (MODEL_NOT_FOUND, FORBIDDEN, ...)
    └── ReloadFailed       tried and rolled back (RELOAD_FAILED)

`choose_strategy` is pure; `target_config` resolves the model reference; `reload`
drives a `Pool` through its generations.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from catalog_core import (
    CatalogError,
    HfModelInfo,
    LoadConfig,
    estimate_hf_memory,
    estimate_memory,
    inspect_model,
)

from pool_managerd.config import PoolConfig
from pool_managerd.models import LocalModels, ModelNotHere
from pool_managerd.pool import Pool, PoolStopping, check_model, model_id_for

__all__ = [
    "ESTIMATE_MARGIN_PERCENT",
    "ReloadError",
    "ReloadFailed",
    "ReloadRefused",
    "Strategy",
    "choose_strategy",
    "reload",
    "target_config",
]

log = logging.getLogger("pool_managerd.reload")
Strategy = Literal["side-by-side", "drain-then-swap"]
ESTIMATE_MARGIN_PERCENT = 115  # the estimator is within 15 % of what llama.cpp takes (CAT-04)


class ReloadError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ReloadRefused(ReloadError):
    """The reload was not attempted; the pool is untouched."""


class ReloadFailed(ReloadError):
    """The new model did not become ready; the pool serves its previous model."""

    def __init__(self, message: str) -> None:
        super().__init__("RELOAD_FAILED", message)


def choose_strategy(needed_bytes: int, free_bytes: int | None) -> Strategy:
    """Side by side when the new generation fits beside the old, with the estimator's
    margin; drain-then-swap when it does not, or when free memory is unknown."""
    if free_bytes is None or needed_bytes <= 0:
        return "drain-then-swap"
    fits = needed_bytes * ESTIMATE_MARGIN_PERCENT <= free_bytes * 100
    return "side-by-side" if fits else "drain-then-swap"


def target_config(
    current: PoolConfig, ref: str, models: LocalModels, roots: tuple[Path, ...]
) -> PoolConfig:
    """The pool's config with the model named by `ref`: a model this host holds (id,
    alias, sha256, `file:` path) or an absolute path (optionally `file:`) under one of
    `roots`. ReloadRefused otherwise."""
    if current.deployment:
        raise ReloadRefused(
            "INVALID_PARAMS",
            f"pool {current.id} belongs to deployment {current.deployment}: "
            "change the deployment's model instead",
        )
    try:
        model = models.resolve(ref)
    except ModelNotHere:
        pass
    else:
        return replace(current, model=str(model.path), model_id=model.id, sha256=model.sha256)
    raw = ref.removeprefix("file:")
    if not raw.startswith("/"):
        raise ReloadRefused(
            "MODEL_NOT_FOUND",
            f"this host holds no model {ref!r} (give a model id, an alias or an absolute path)",
        )
    path = Path(raw).resolve()  # symlinks resolved: a link cannot lead out of the roots
    if not any(path.is_relative_to(root) for root in roots):
        raise ReloadRefused("FORBIDDEN", f"{path} is outside this host's model roots")
    return replace(current, model=str(path), model_id=model_id_for(path), sha256="")


@dataclass(frozen=True, slots=True)
class _Candidate:
    config: PoolConfig
    digest: str
    needed_bytes: int
    error: str


def _inspect(config: PoolConfig) -> _Candidate:
    """Check the model and estimate the new generation's memory (blocking file I/O)."""
    digest, error = check_model(config)
    if error:
        return _Candidate(config, digest, 0, error)
    try:
        info = inspect_model(Path(config.model))
    except CatalogError as exc:
        return _Candidate(config, digest, 0, f"model check failed: {exc}")
    if isinstance(info, HfModelInfo):  # vLLM: float32 weights, a cache of ctx x slots
        tokens = config.ctx * config.slots
        estimate = estimate_hf_memory(info, kv_cache_tokens=tokens, load_dtype="F32")
    else:
        estimate = estimate_memory(info, LoadConfig(ctx=config.ctx, slots=config.slots))
    return _Candidate(config, digest, estimate.total * config.replicas, "")


FreeBytes = Callable[[str], Awaitable[int | None]]


async def reload(
    pool: Pool,
    config: PoolConfig,
    free_bytes: FreeBytes,
    *,
    timeout_s: float,
    drain_deadline_s: float,
) -> str:
    """Reload `pool` to `config` (see module doc); returns what happened, in words.
    `free_bytes(device)` measures a device's free memory now (None: unknown)."""
    if pool.reloading or pool.draining:
        state = "reloading" if pool.reloading else "draining"
        raise ReloadRefused("POOL_UNREADY", f"pool {pool.config.id} is {state}")
    pool.reloading = True
    try:
        return await _reload(pool, config, free_bytes, timeout_s, drain_deadline_s)
    except PoolStopping as exc:
        raise ReloadFailed(f"{exc}; the reload was abandoned") from exc
    finally:
        pool.reloading = False
        pool.swapping = False


async def _reload(
    pool: Pool, config: PoolConfig, free_bytes: FreeBytes, timeout_s: float, deadline_s: float
) -> str:
    before = pool.model_id
    candidate = await asyncio.to_thread(_inspect, config)
    if candidate.error:
        _failed(pool, config, before, candidate.error)
    strategy = choose_strategy(candidate.needed_bytes, await free_bytes(config.device))
    _narrate(pool, f"reloads from {before} to {config.model_id} ({config.model}; {strategy})")
    if strategy == "side-by-side":
        await _side_by_side(pool, candidate, timeout_s, deadline_s)
    else:
        await _drain_then_swap(pool, candidate, timeout_s, deadline_s)
    pool.reload_error = ""
    done = f"pool {pool.config.id} reloaded from {before} to {pool.model_id} ({strategy})"
    _narrate(pool, f"serves {pool.model_id} now (reloaded {strategy})")
    return done


async def _side_by_side(
    pool: Pool, candidate: _Candidate, timeout_s: float, deadline_s: float
) -> None:
    fresh = pool.start_generation(candidate.config)
    error = await pool.wait_settled(fresh, timeout_s)
    if error:
        await pool.stop_drivers(fresh, grace_s=5.0)
        _failed(pool, candidate.config, pool.model_id, error)
    old = pool.replicas
    pool.swap(fresh, candidate.config, candidate.digest)
    pool.spawn(pool.retire(old, deadline_s))


async def _drain_then_swap(
    pool: Pool, candidate: _Candidate, timeout_s: float, deadline_s: float
) -> None:
    previous, digest = pool.config, pool.digest
    pool.swapping = True
    pool.changed()
    await pool.retire(pool.replicas, deadline_s)
    fresh = pool.start_generation(candidate.config)
    pool.report(fresh)
    error = await pool.wait_settled(fresh, timeout_s)
    if not error:
        pool.swap(fresh, candidate.config, candidate.digest)
        return
    await pool.stop_drivers(fresh, grace_s=5.0)
    restored = pool.start_generation(previous)
    pool.report(restored)
    again = await pool.wait_settled(restored, timeout_s)
    pool.swap(restored, previous, digest)
    rollback = "; the previous model is back" if not again else f"; roll back failed: {again}"
    _failed(pool, candidate.config, pool.model_id, error + rollback)


def _failed(pool: Pool, config: PoolConfig, serving: str, reason: str) -> None:
    message = f"reload to {config.model} failed: {reason}; serving {serving}"
    pool.reload_error = message
    pool.changed()
    log.warning(
        "pool %s %s",
        pool.config.id,
        message,
        extra={"pool_id": pool.config.id, "action": "reload", "target": pool.config.id},
    )
    raise ReloadFailed(message)


def _narrate(pool: Pool, what: str) -> None:
    log.info(
        "pool %s %s",
        pool.config.id,
        what,
        extra={"pool_id": pool.config.id, "action": "reload", "target": pool.config.id},
    )
