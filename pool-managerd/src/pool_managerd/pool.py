"""`Pool`: one configured pool, its model facts, and its replicas.

Provisioning (the first lifecycle phase): the model file must exist, read as GGUF, and
match its configured sha256 when one is given; the digest is always computed and
reported. Then every replica is started. `status()` is the pool as the snapshot
reports it: ready when some replica is ready and the pool is not draining.

The replicas serving now are one *generation*; a reload (`pool_managerd.reload`) starts
another generation from a new config beside them (or after them), waits for it with
`wait_settled`, and then `swap`s it in and `retire`s the old one. Log and port files
carry the generation (`<pool>-r<i>.log`, then `<pool>-r<i>.g<n>.log`), so two
generations never share a file.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog_core import CatalogError, inspect_model, model_digest
from catalog_core.model_id import model_id_for
from specs.net import is_loopback

from pool_managerd import lifecycle as lc
from pool_managerd.config import ManagerConfig, PoolConfig
from pool_managerd.engines import (
    ENGINE_ADAPTERS,
    ENGINE_FEATURES,
    FOLDER_ENGINES,
    launch,
    serves_tls,
)
from pool_managerd.network import HostNetwork
from pool_managerd.records import RECORD_SUFFIX
from pool_managerd.replica import ReplicaDriver, ReplicaPaths

__all__ = ["Pool", "PoolStatus", "PoolStopping", "ReplicaStatus", "check_model", "model_id_for"]

log = logging.getLogger("pool_managerd.pool")
_RANK = ("ready", "draining", "loading", "starting", "backoff", "provisioning", "stopped", "failed")
_SETTLED_BAD = frozenset({"backoff", "failed", "stopped"})
_RETIRE_SETTLE_S = 1.0  # jobs placed just before a swap reach the old engine's gauge by then
# A drain is in every snapshot at once; jobs placed before the orchestrator saw it reach
# the engine's busy gauge within this (also what every shutdown waits at least).
_DRAIN_SETTLE_S = 0.5


class PoolStopping(RuntimeError):
    """The pool is stopping: it starts no new generation."""


def model_format_error(engine: str, path: Path, *, container: bool = False) -> str:
    """Why `path` is the wrong kind of model for `engine` ("" when it is the right one):
    vLLM and TGI load a Hugging Face folder, the llama.cpp engines a GGUF file; Triton
    in a container its model repository (a folder, not checked further)."""
    if engine == "openai-compatible":
        return ""
    if engine == "triton" and container:
        if path.is_dir():
            return ""
        return f"engine triton in a container needs a model repository folder; {path} is not one"
    if engine in FOLDER_ENGINES and not path.is_dir():
        return f"engine {engine} needs a Hugging Face model folder; {path} is not a folder"
    if engine not in FOLDER_ENGINES and path.is_dir():
        return f"engine {engine} needs a GGUF file; {path} is a folder"
    return ""


def check_model(config: PoolConfig) -> tuple[str, str]:
    """(sha256, error) of a pool's model: a GGUF file (header readable) or, for vLLM, a
    Hugging Face folder (config.json and safetensors headers readable; the folder
    digest), and its digest as configured. Blocking file I/O and hashing: call from a
    thread."""
    if config.engine in ("mock", "openai-compatible") and not config.model:
        return "", ""
    path = Path(config.model)
    wrong_kind = model_format_error(config.engine, path, container=config.container is not None)
    if wrong_kind:
        return "", f"model check failed: {wrong_kind}"
    if config.engine == "triton" and config.container is not None:
        return "", ""  # a Triton model repository: the server itself checks it
    try:
        inspect_model(path)
        digest = model_digest(path)
    except (CatalogError, OSError) as exc:
        return "", f"model check failed: {exc}"
    expected = config.sha256.lower()
    if expected and expected != digest:
        return digest, f"model digest mismatch: {path} has sha256 {digest}, expected {expected}"
    return digest, ""


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    index: int
    endpoint: str
    ready: bool
    slots_total: int
    incarnation: int
    api_key: str
    tls: bool = False


@dataclass(frozen=True, slots=True)
class PoolStatus:
    pool_id: str
    state: str
    ready: bool
    draining: bool
    engine: str
    engine_version: str
    adapter: str
    model_id: str
    model_digest: str
    model_aliases: tuple[str, ...]
    ctx: int
    slots_total: int
    slots_busy: int
    last_error: str
    restarts: int
    features: tuple[str, ...]
    replicas: tuple[ReplicaStatus, ...]
    device: str = "cpu"
    deployment: str = ""
    memory_estimated_bytes: int = 0
    memory_actual_bytes: int = 0
    load_progress: float | None = None


def load_progress(replicas: Iterable[tuple[str, float | None]]) -> float | None:
    """A pool's load progress from its replicas' (phase, engine-reported progress): the
    least of those loading that report one; None when none does."""
    loading = [p for phase, p in replicas if phase in ("starting", "loading") and p is not None]
    return min(loading) if loading else None


class Pool:
    def __init__(
        self,
        config: PoolConfig,
        manager: ManagerConfig,
        on_change: asyncio.Event,
        network: HostNetwork,
    ) -> None:
        self.config = config
        self._manager = manager
        self._network = network
        self._changed = on_change
        self._replica_changed = asyncio.Event()
        self._api_key = secrets.token_urlsafe(24)
        self.model_id = config.model_id or (
            model_id_for(Path(config.model)) if config.model else config.id
        )
        self.digest = ""
        self.draining = False
        self.swapping = False  # a drain-then-swap reload has taken the pool out of service
        self.reloading = False
        self.stopping = False  # stop() was called: no generation starts any more
        self.provision_error = ""
        self.reload_error = ""
        self._generation = 0
        self._restarts_retired = 0  # restarts of replaced generations (the counter only rises)
        self.replicas = [self._driver(config, index, 0) for index in range(config.replicas)]
        self._runners: dict[ReplicaDriver, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._drain_task: asyncio.Task[None] | None = None

    def _driver(self, config: PoolConfig, index: int, generation: int) -> ReplicaDriver:
        state = self._manager.state_dir
        name = f"{config.id}-r{index}" + (f".g{generation}" if generation else "")
        paths = ReplicaPaths(
            log=state / "logs" / f"{name}.log",
            port_file=state / "run" / f"{name}.port",
            workdir=state,
            record=state / "run" / f"{name}{RECORD_SUFFIX}",
        )
        return ReplicaDriver(
            pool_id=config.id,
            index=index,
            engine=config.engine,
            make_launch=lambda: launch(
                config, self._manager, paths.port_file, self._api_key, self._network
            ),
            api_key=self._api_key,
            network=self._network,
            paths=paths,
            policy=self._manager.restart,
            probe_interval_s=self._manager.probe_interval_ms / 1000.0,
            probe_timeout_s=self._manager.probe_timeout_ms / 1000.0,
            on_change=self._on_replica_change,
        )

    def _on_replica_change(self) -> None:
        self._changed.set()
        self._replica_changed.set()

    def changed(self) -> None:
        """Something the snapshot reports changed: send one now."""
        self._changed.set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, owned by the pool (cancelled by `stop`)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _run(self, drivers: list[ReplicaDriver]) -> None:
        for driver in drivers:
            self._runners[driver] = asyncio.create_task(driver.run())

    async def start(self) -> None:
        (self._manager.state_dir / "run").mkdir(parents=True, exist_ok=True)
        tls = await asyncio.to_thread(serves_tls, self.config)  # reads a binary once
        self._warn_plaintext_engine(tls)
        self._run(self.replicas)
        self.digest, error = await asyncio.to_thread(check_model, self.config)
        self.provision_error = error
        for replica in self.replicas:
            replica.post(lc.ProvisionFailed(error) if error else lc.Start())
        if not error:
            log.info(
                "pool %s: model %s verified (sha256 %s)",
                self.config.id,
                self.config.model,
                self.digest[:12],
                extra={"pool_id": self.config.id, "action": "provision"},
            )
        self._changed.set()

    def _warn_plaintext_engine(self, serves_tls: bool) -> None:
        """TLS is on, but this engine cannot serve it (see `engines`): say at every start
        that its traffic and per-pool key cross the network unencrypted."""
        network = self._network
        if network.engine_tls is None or serves_tls or is_loopback(network.advertise_host):
            return
        log.warning(
            "pool %s: engine %s serves plaintext HTTP at %s although this host has TLS: its "
            "tokens and per-pool key cross the network unencrypted (llama-server serves "
            "TLS when built with -DLLAMA_OPENSSL=ON; or keep this host on a trusted network)",
            self.config.id,
            self.config.engine,
            network.advertise_host,
            extra={"pool_id": self.config.id, "action": "insecure"},
        )

    # -- generations (used by reload) -----------------------------------------------------

    def start_generation(self, config: PoolConfig, model_error: str = "") -> list[ReplicaDriver]:
        """Start the replicas of `config` (its model already checked: `model_error` fails
        them at once) beside the current ones; they serve nothing until `swap` (or
        `report`). PoolStopping once the pool is stopping."""
        if self.stopping:
            raise PoolStopping(f"pool {self.config.id} is stopping")
        self._generation += 1
        drivers = [
            self._driver(config, index, self._generation) for index in range(config.replicas)
        ]
        self._run(drivers)
        for driver in drivers:
            driver.post(lc.ProvisionFailed(model_error) if model_error else lc.Start())
        return drivers

    async def wait_settled(self, drivers: list[ReplicaDriver], timeout_s: float) -> str:
        """Wait until every driver is ready ('') or one has crashed, failed or stopped
        (its error), or `timeout_s` passed. A first crash counts: a reload does not wait
        through back-off for a model that does not load."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        while True:
            self._replica_changed.clear()
            bad = [d for d in drivers if d.state.phase in _SETTLED_BAD]
            if bad:
                return bad[0].state.last_error or f"the engine is {bad[0].state.phase}"
            if all(d.ready for d in drivers):
                return ""
            left = until - loop.time()
            if left <= 0:
                return f"the engine was not ready within {timeout_s:.0f} s"
            try:
                await asyncio.wait_for(self._replica_changed.wait(), left)
            except TimeoutError:
                continue

    def swap(self, drivers: list[ReplicaDriver], config: PoolConfig, digest: str) -> None:
        """Make `drivers` (of `config`) the replicas that serve; the caller retires the
        old ones."""
        self.report(drivers)
        self.config = config
        self.model_id = config.model_id or model_id_for(Path(config.model))
        self.digest = digest
        self.provision_error = ""
        self._changed.set()

    def report(self, drivers: list[ReplicaDriver]) -> None:
        """Report `drivers` as the pool's replicas from now on (the restarts of the ones
        they replace stay counted)."""
        if drivers is not self.replicas:
            self._restarts_retired += sum(r.state.restarts for r in self.replicas)
            self.replicas = drivers
            self._changed.set()

    async def retire(self, drivers: list[ReplicaDriver], deadline_s: float) -> None:
        """Drain `drivers`: no new work, in-flight jobs finish until the deadline, then
        stop them."""
        for driver in drivers:
            driver.post(lc.Drain())
        await self._wait_idle(drivers, deadline_s, _RETIRE_SETTLE_S)
        await self.stop_drivers(drivers, grace_s=5.0)

    async def _wait_idle(
        self, drivers: list[ReplicaDriver], deadline_s: float, settle_s: float
    ) -> None:
        """Until every driver is idle or `deadline_s` passed. Idle means: a health answer
        given after `settle_s` (jobs placed just before the drain have reached the engine
        by then) reports no busy slot; a replica that stops answering (paused, hung) is
        waited for until the deadline."""
        loop = asyncio.get_running_loop()
        settled_at = time.monotonic() + min(settle_s, deadline_s)
        until = loop.time() + deadline_s

        def idle(driver: ReplicaDriver) -> bool:
            running = driver.state.phase in ("ready", "draining")
            return not running or (driver.probed_at >= settled_at and not driver.slots_busy)

        # Busy slots are a fact of the engines, refreshed by the health probes: poll it.
        while loop.time() < until and not all(idle(d) for d in drivers):  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def stop_drivers(self, drivers: list[ReplicaDriver], grace_s: float) -> None:
        await asyncio.gather(*(d.stop(grace_s) for d in drivers))
        runners = [self._runners.pop(d) for d in drivers if d in self._runners]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._changed.set()

    # -- drain and stop ---------------------------------------------------------------------

    def begin_drain(self, deadline_s: float) -> None:
        """`drain` in the background, owned by the pool (`undrain` can call it off)."""
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(deadline_s))

    async def drain(self, deadline_s: float) -> None:
        """Stop taking work, let running jobs finish until the deadline, then stop."""
        self.draining = True
        for replica in self.replicas:
            replica.post(lc.Drain())
        self._changed.set()
        await self._wait_idle(self.replicas, deadline_s, _DRAIN_SETTLE_S)
        await self.stop(grace_s=5.0)

    async def undrain(self) -> None:
        """Back in service after a drain: a drain still waiting for running jobs is called
        off and its replicas serve on; a drain that stopped the engines (or is stopping
        them) is followed by a fresh start of the pool's replicas, the model checked
        again. Nothing to do for a pool that is not draining."""
        task = self._drain_task
        if not self.draining:
            return
        if task is not None and not task.done() and not self.stopping:
            task.cancel()  # it waits for running jobs: nothing is stopped yet
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        self.draining = False
        if not self.stopping:
            for replica in self.replicas:
                replica.post(lc.Undrain())
            # The next snapshot (sent before the command's result) shows them serving.
            await asyncio.gather(*(r.caught_up() for r in self.replicas))
        else:
            self.stopping = False
            await self._restart_replicas()
        log.info(
            "pool %s is back in service",
            self.config.id,
            extra={"pool_id": self.config.id, "action": "undrain"},
        )
        self._changed.set()

    async def _restart_replicas(self) -> None:
        """Start the pool's replicas afresh (after they were all stopped)."""
        self.digest, self.provision_error = await asyncio.to_thread(check_model, self.config)
        self.report(self.start_generation(self.config, self.provision_error))

    async def stop(self, grace_s: float) -> None:
        """Stop every replica of every generation (serving, starting or retiring)."""
        self.stopping = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.stop_drivers(list(self._runners), grace_s)

    # -- report ---------------------------------------------------------------------------

    def status(self) -> PoolStatus:
        config = self.config
        phases = [r.state.phase for r in self.replicas]
        state = min(phases, key=_RANK.index) if phases else "stopped"
        out_of_service = self.draining or self.swapping
        ready = any(r.ready for r in self.replicas) and not out_of_service
        errors = [r.state.last_error for r in self.replicas if r.state.last_error]
        replicas = tuple(
            ReplicaStatus(
                r.index,
                r.endpoint,
                r.ready and not out_of_service,
                config.slots,
                r.incarnation,
                self._api_key,
                r.tls,
            )
            for r in self.replicas
        )
        versions = [r.engine_version for r in self.replicas if r.engine_version]
        features = ENGINE_FEATURES[config.engine] + (
            ("embedding",) if config.embeddings and config.engine != "mock" else ()
        )
        return PoolStatus(
            pool_id=config.id,
            state="draining" if self.draining and state != "stopped" else state,
            ready=ready,
            draining=self.draining,
            engine=config.engine,
            engine_version=versions[0] if versions else "",
            adapter=ENGINE_ADAPTERS[config.engine],
            model_id=self.model_id,
            model_digest=self.digest,
            model_aliases=config.aliases,
            ctx=config.ctx,
            slots_total=config.slots * config.replicas,
            slots_busy=sum(r.slots_busy for r in self.replicas),
            last_error=self.provision_error or self.reload_error or (errors[0] if errors else ""),
            restarts=self._restarts_retired + sum(r.state.restarts for r in self.replicas),
            features=features,
            replicas=replicas,
            device=config.device,
            deployment=config.deployment,
            memory_estimated_bytes=config.memory_estimated_bytes,
            memory_actual_bytes=sum(r.memory_bytes() for r in self.replicas),
            load_progress=load_progress((r.state.phase, r.load_progress) for r in self.replicas),
        )
