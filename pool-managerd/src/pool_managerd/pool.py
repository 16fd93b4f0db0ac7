"""`Pool`: one configured pool, its model facts, and its replicas.

Provisioning (the first lifecycle phase): the model file must exist, read as GGUF, and
match its configured sha256 when one is given; the digest is always computed and
reported. Then every replica is started. `status()` is the pool as the snapshot
reports it: ready when some replica is ready and the pool is not draining.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from catalog_core import CatalogError, inspect_gguf, sha256_file

from pool_managerd import lifecycle as lc
from pool_managerd.config import ManagerConfig, PoolConfig
from pool_managerd.engines import ENGINE_ADAPTERS, ENGINE_FEATURES, launch
from pool_managerd.replica import ReplicaDriver, ReplicaPaths

__all__ = ["Pool", "PoolStatus", "ReplicaStatus", "model_id_for"]

log = logging.getLogger("pool_managerd.pool")
_RANK = ("ready", "draining", "loading", "starting", "backoff", "provisioning", "stopped", "failed")


def model_id_for(path: Path) -> str:
    """Catalog id of a model file: its file name without `.gguf`, lower-cased, slugged."""
    stem = path.name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    index: int
    endpoint: str
    ready: bool
    slots_total: int
    incarnation: int
    api_key: str


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


class Pool:
    def __init__(
        self, config: PoolConfig, manager: ManagerConfig, on_change: asyncio.Event
    ) -> None:
        self.config = config
        self._manager = manager
        self._changed = on_change
        self._api_key = secrets.token_urlsafe(24)
        self.model_id = config.model_id or (
            model_id_for(Path(config.model)) if config.model else config.id
        )
        self.digest = ""
        self.draining = False
        self.provision_error = ""
        self.replicas = [self._driver(index) for index in range(config.replicas)]
        self._runners: list[asyncio.Task[None]] = []

    def _driver(self, index: int) -> ReplicaDriver:
        state = self._manager.state_dir
        name = f"{self.config.id}-r{index}"
        paths = ReplicaPaths(
            log=state / "logs" / f"{name}.log",
            port_file=state / "run" / f"{name}.port",
            workdir=state,
        )
        return ReplicaDriver(
            pool_id=self.config.id,
            index=index,
            make_launch=lambda: launch(self.config, self._manager, paths.port_file, self._api_key),
            api_key=self._api_key,
            paths=paths,
            policy=self._manager.restart,
            probe_interval_s=self._manager.probe_interval_ms / 1000.0,
            probe_timeout_s=self._manager.probe_timeout_ms / 1000.0,
            on_change=self._changed.set,
        )

    async def start(self) -> None:
        (self._manager.state_dir / "run").mkdir(parents=True, exist_ok=True)
        self._runners = [asyncio.create_task(r.run()) for r in self.replicas]
        error = await asyncio.to_thread(self._provision)
        for replica in self.replicas:
            replica.post(lc.ProvisionFailed(error) if error else lc.Start())
        self._changed.set()

    def _provision(self) -> str:
        """Check the model (blocking file I/O); returns an error message or ''."""
        if self.config.engine in ("mock", "openai-compatible") and not self.config.model:
            return ""
        path = Path(self.config.model)
        try:
            inspect_gguf(path)
            self.digest = sha256_file(path)
        except (CatalogError, OSError) as exc:
            self.provision_error = f"model check failed: {exc}"
            return self.provision_error
        expected = self.config.sha256.lower()
        if expected and expected != self.digest:
            self.provision_error = (
                f"model digest mismatch: {path} has sha256 {self.digest}, expected {expected}"
            )
            return self.provision_error
        log.info(
            "pool %s: model %s verified (sha256 %s)",
            self.config.id,
            path,
            self.digest[:12],
            extra={"pool_id": self.config.id, "action": "provision"},
        )
        return ""

    async def drain(self, deadline_s: float) -> None:
        """Stop taking work, let running jobs finish until the deadline, then stop."""
        self.draining = True
        for replica in self.replicas:
            replica.post(lc.Drain())
        self._changed.set()
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        # Busy slots are a fact of the engines, refreshed by the health probes: poll it.
        while loop.time() < until and any(r.slots_busy for r in self.replicas):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await self.stop(grace_s=5.0)

    async def stop(self, grace_s: float) -> None:
        await asyncio.gather(*(r.stop(grace_s) for r in self.replicas))
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._changed.set()

    def status(self) -> PoolStatus:
        config = self.config
        phases = [r.state.phase for r in self.replicas]
        state = min(phases, key=_RANK.index) if phases else "stopped"
        ready = any(r.ready for r in self.replicas) and not self.draining
        errors = [r.state.last_error for r in self.replicas if r.state.last_error]
        replicas = tuple(
            ReplicaStatus(
                r.index,
                r.endpoint,
                r.ready and not self.draining,
                config.slots,
                r.incarnation,
                self._api_key,
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
            last_error=self.provision_error or (errors[0] if errors else ""),
            restarts=sum(r.state.restarts for r in self.replicas),
            features=features,
            replicas=replicas,
            device=config.device,
            deployment=config.deployment,
            memory_estimated_bytes=config.memory_estimated_bytes,
            memory_actual_bytes=sum(r.memory_bytes() for r in self.replicas),
        )
