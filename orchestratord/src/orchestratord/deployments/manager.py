"""`DeploymentManager`: desired state in, Preload/Stop commands out (API-11, PLC-04/06/07).

Each pass of the reconcile loop (every tick, and whenever the registry changes) takes
every deployment, reads its pools from the registry and the demand for its model from
the queue, asks `reconciler.desired_replicas` how many pools it should have, stops the
extra or idle ones, and places missing ones with `placement.choose_device` on the hosts'
measured free memory — net of the preloads still in flight, so one pass never puts two
pools into the same free bytes. When nothing fits, the deployment is pending and keeps
the per-host reasons. Commands go through a `CommandPort` (the control link); a failed
Preload excludes that host for the deployment for `HOST_RETRY_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from catalog_core import ContextLayout, LoadConfig, MemoryEstimate, estimate_memory

from orchestratord.deployments.model import (
    DeploymentSpec,
    DeviceView,
    HostView,
    PlacementChoice,
    Rejection,
)
from orchestratord.deployments.placement import choose_device, estimate_kind
from orchestratord.deployments.reconciler import PoolFacts, desired_replicas
from orchestratord.registry import ModelFileInfo, PoolInfo, PoolRegistry

__all__ = ["CommandPort", "DeploymentManager", "DeploymentState", "PoolPlan"]

log = logging.getLogger("orchestratord.deployments")
HOST_RETRY_S = 30.0
PENDING_TIMEOUT_S = 120.0
# The in-process worker is a Python process around llama.cpp: interpreter, gRPC and
# llama-cpp-python take about this much resident memory before any model buffer.
_RUNTIME_OVERHEAD = {"llamacpp-inproc": 160 << 20}
_LAYOUT = {"llamacpp-inproc": ContextLayout.PER_SLOT}
# On a GPU the pool starts with every layer there (pool-managerd: `gpu_layers`), and the
# estimate is of the GPU's memory (`LoadConfig.offload`) plus, once per process, what the
# CUDA runtime holds beyond llama.cpp's buffers (context, cuBLAS, ggml's CUDA pool).
# Measured on an H100 (driver 580, CUDA 12, llama.cpp of llama-cpp-python 0.3.36, the 1B
# f16 model of bench/gpu_llamacpp.py, after serving jobs): nvidia-smi's per-process
# memory less llama.cpp's own CUDA0 buffers was 691.5 MiB for the in-process worker (two
# loads, one per slot: it is once per process) and 697.8 MiB for llama-server (less the
# estimate of its buffers); bench/results/gpu_suite-h100-2026-12-07-second.json.
GPU_RUNTIME_OVERHEAD = 692 << 20


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """What a Preload asks a pool manager to start."""

    pool_id: str
    deployment: str
    model: str
    engine: str
    ctx: int
    slots: int
    device: str
    aliases: tuple[str, ...]
    memory_estimated_bytes: int


class CommandPort(Protocol):
    async def preload(self, host_id: str, plan: PoolPlan) -> None: ...

    async def stop(self, host_id: str, pool_id: str) -> None: ...


@dataclass(slots=True)
class _Pending:
    host_id: str
    device_id: str
    bytes: int
    since: float


@dataclass(slots=True)
class DeploymentState:
    spec: DeploymentSpec
    estimate: MemoryEstimate | None = None  # on a CPU (host memory)
    gpu_estimate: MemoryEstimate | None = None  # on a GPU, every layer offloaded
    model: ModelFileInfo | None = None
    pending: dict[str, _Pending] = field(default_factory=dict)
    reasons: tuple[Rejection, ...] = ()
    last_error: str = ""
    last_scale_up: float = float("-inf")
    idle_since: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, float] = field(default_factory=dict)  # host -> retry after

    def names(self) -> frozenset[str]:
        """Model names jobs may use for this deployment."""
        model_names = self.model.names() if self.model is not None else frozenset()
        return frozenset({self.spec.name, self.spec.model, *self.spec.aliases}) | model_names


class DeploymentManager:
    def __init__(
        self,
        registry: PoolRegistry,
        commands: CommandPort,
        queued_for: Callable[[frozenset[str]], int],
        in_flight: Callable[[str], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._commands = commands
        self._queued_for = queued_for
        self._in_flight = in_flight
        self._clock = clock
        self._states: dict[str, DeploymentState] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping: set[str] = set()  # pools whose Stop was sent and not yet answered

    # -- desired state -------------------------------------------------------------------

    def put(self, spec: DeploymentSpec) -> DeploymentState:
        state = self._states.get(spec.name)
        if state is None:
            state = self._states[spec.name] = DeploymentState(spec)
        else:
            state.spec, state.estimate, state.model = spec, None, None
            state.gpu_estimate = None
        self.wake()
        return state

    def get(self, name: str) -> DeploymentState | None:
        return self._states.get(name)

    def all(self) -> list[DeploymentState]:
        return [self._states[n] for n in sorted(self._states)]

    def delete(self, name: str) -> bool:
        state = self._states.pop(name, None)
        if state is None:
            return False
        for pool in self.pools_of(name):
            self._spawn(self._stop(pool.host_id, pool.pool_id, "deployment deleted"))
        return True

    def serving(self, model: str) -> DeploymentState | None:
        """The deployment jobs for `model` belong to, if any."""
        return next((s for s in self.all() if model in s.names()), None)

    def pools_of(self, name: str) -> list[PoolInfo]:
        return [p for p in self._registry.pools() if p.deployment == name]

    def wake(self) -> None:
        """Reconcile soon. Nothing to reconcile without deployments (`put` wakes again)."""
        if self._states:
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------

    async def run(self, period_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period_s):  # no task per wait, unlike wait_for
                    await self._wake.wait()
            self._wake.clear()
            self.reconcile()

    def reconcile(self) -> None:
        now = self._clock()
        for state in self.all():
            self._reconcile_one(state, now)

    def _reconcile_one(self, state: DeploymentState, now: float) -> None:
        spec = state.spec
        pools = self.pools_of(spec.name)
        self._forget_arrived(state, pools, now)
        facts = [self._facts(state, p, now) for p in pools]
        decision = desired_replicas(
            spec,
            facts,
            len(state.pending),
            self._queued_for(state.names()),
            now,
            state.last_scale_up,
        )
        for pool_id in decision.stop:
            if pool_id in self._stopping:
                continue  # its stop is on its way; the next snapshot shows it gone
            pool = next(p for p in pools if p.pool_id == pool_id)
            self._stopping.add(pool_id)
            self._spawn(self._stop(pool.host_id, pool_id, decision.reason or "scale down"))
        missing = decision.replicas - (len([f for f in facts if not f.failed]) + len(state.pending))
        if missing > 0 and decision.reason.startswith("queue pressure"):
            state.last_scale_up = now
        for _ in range(max(0, missing)):
            if not self._place_one(state, now):
                break
        if missing <= 0:
            state.reasons = ()

    def _forget_arrived(self, state: DeploymentState, pools: list[PoolInfo], now: float) -> None:
        seen = {p.pool_id for p in pools}
        for pool_id, pending in list(state.pending.items()):
            if pool_id in seen or now - pending.since > PENDING_TIMEOUT_S:
                del state.pending[pool_id]

    def _facts(self, state: DeploymentState, pool: PoolInfo, now: float) -> PoolFacts:
        in_flight = self._in_flight(pool.pool_id)
        if in_flight or not pool.ready:
            state.idle_since.pop(pool.pool_id, None)
        else:
            state.idle_since.setdefault(pool.pool_id, now)
        return PoolFacts(
            pool.pool_id,
            pool.ready,
            pool.state == "failed",
            pool.slots_total,
            in_flight,
            state.idle_since.get(pool.pool_id),
        )

    # -- placement -----------------------------------------------------------------------

    def _model(self, spec: DeploymentSpec) -> ModelFileInfo | None:
        for host in self._registry.hosts():
            for model in host.inventory.models:
                if spec.model in model.names():
                    return model
        return None

    def _estimate(self, state: DeploymentState) -> MemoryEstimate | None:
        if state.estimate is None:
            model = self._model(state.spec)
            if model is None:
                return None
            spec = state.spec
            config = LoadConfig(
                ctx=spec.ctx,
                slots=spec.slots,
                layout=_LAYOUT.get(spec.engine, ContextLayout.SHARED),
                runtime_overhead_bytes=_RUNTIME_OVERHEAD.get(spec.engine, 0),
            )
            state.model, state.estimate = model, estimate_memory(model, config)
            gpu = replace(config, offload=True, runtime_overhead_bytes=GPU_RUNTIME_OVERHEAD)
            state.gpu_estimate = estimate_memory(model, gpu)
        return state.estimate

    @staticmethod
    def _needed(state: DeploymentState) -> dict[str, int]:
        """Bytes one more pool needs, by device kind."""
        assert state.estimate is not None and state.gpu_estimate is not None
        return {"cpu": state.estimate.total, "gpu": state.gpu_estimate.total}

    def _hosts(self, state: DeploymentState, now: float) -> list[HostView]:
        reserved: dict[tuple[str, str], int] = {}
        for other in self._states.values():
            for pending in other.pending.values():
                key = (pending.host_id, pending.device_id)
                reserved[key] = reserved.get(key, 0) + pending.bytes
        views = []
        for host in self._registry.hosts():
            devices = tuple(
                DeviceView(
                    d.id,
                    d.kind,
                    d.memory_total_bytes,
                    max(0, d.memory_free_bytes - reserved.get((host.host_id, d.id), 0)),
                    d.compute_capability,
                    d.cordoned,
                    d.simulated,
                )
                for d in host.inventory.devices
            )
            excluded = state.excluded.get(host.host_id, 0.0) > now
            views.append(
                HostView(
                    host_id=host.host_id,
                    live=self._registry.host_live(host.host_id, now) and not excluded,
                    cordoned=host.cordoned,
                    engines=host.inventory.engines,
                    models=frozenset(n for m in host.inventory.models for n in m.names()),
                    devices=devices,
                    deployment_pools=sum(
                        1 for p in host.pools.values() if p.deployment == state.spec.name
                    )
                    + sum(1 for p in state.pending.values() if p.host_id == host.host_id),
                )
            )
        return views

    def _place_one(self, state: DeploymentState, now: float) -> bool:
        estimate = self._estimate(state)
        if estimate is None:
            state.reasons = (Rejection("*", "*", f"no host holds model {state.spec.model!r}"),)
            return False
        keys = frozenset({state.spec.model, *(state.model.names() if state.model else ())})
        hosts = self._hosts(state, now)
        needed = self._needed(state)
        choice = choose_device(state.spec, needed, hosts, keys)
        if not isinstance(choice, PlacementChoice):
            state.reasons = choice
            log.warning(
                "deployment %s pending: nothing fits (%s)",
                state.spec.name,
                "; ".join(f"{r.host_id}/{r.device_id}: {r.reason}" for r in choice[:6]),
                extra={"action": "deployment.pending", "target": state.spec.name},
            )
            return False
        state.reasons = ()
        kind = next(
            (
                estimate_kind(d)
                for h in hosts
                if h.host_id == choice.host_id
                for d in h.devices
                if d.id == choice.device_id
            ),
            "cpu",
        )
        bytes_needed = needed.get(kind, needed["cpu"])
        plan = self._plan(state, choice, bytes_needed)
        state.pending[plan.pool_id] = _Pending(choice.host_id, choice.device_id, bytes_needed, now)
        self._spawn(self._preload(state, choice.host_id, plan))
        return True

    def _plan(self, state: DeploymentState, choice: PlacementChoice, needed: int) -> PoolPlan:
        spec = state.spec
        taken = {p.pool_id for p in self._registry.pools()} | set(state.pending)
        index = next(i for i in range(len(taken) + 1) if f"{spec.name}-{i}" not in taken)
        model = state.model.id if state.model is not None else spec.model
        return PoolPlan(
            f"{spec.name}-{index}",
            spec.name,
            model,
            spec.engine,
            spec.ctx,
            spec.slots,
            choice.device_id,
            tuple(sorted({spec.name, *spec.aliases})),
            needed,
        )

    # -- commands ------------------------------------------------------------------------

    async def _preload(self, state: DeploymentState, host_id: str, plan: PoolPlan) -> None:
        log.info(
            "deployment %s: preloading %s on %s/%s (estimate %d bytes)",
            plan.deployment,
            plan.pool_id,
            host_id,
            plan.device,
            plan.memory_estimated_bytes,
            extra={"action": "deployment.preload", "target": plan.pool_id, "host_id": host_id},
        )
        try:
            await self._commands.preload(host_id, plan)
        except Exception as exc:  # noqa: BLE001 - any failure: exclude the host, retry elsewhere
            state.pending.pop(plan.pool_id, None)
            state.excluded[host_id] = self._clock() + HOST_RETRY_S
            state.last_error = f"preload on {host_id} failed: {exc}"
            log.error(
                "deployment %s: %s",
                plan.deployment,
                state.last_error,
                extra={"action": "deployment.preload", "target": plan.pool_id},
            )
        self.wake()

    async def _stop(self, host_id: str, pool_id: str, reason: str) -> None:
        log.info(
            "stopping pool %s on %s: %s",
            pool_id,
            host_id,
            reason,
            extra={"action": "deployment.stop", "target": pool_id, "host_id": host_id},
        )
        try:
            await self._commands.stop(host_id, pool_id)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.error(
                "stopping pool %s failed: %s",
                pool_id,
                exc,
                extra={"action": "deployment.stop", "target": pool_id},
            )
        finally:
            self._stopping.discard(pool_id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
