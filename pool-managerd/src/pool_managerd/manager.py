"""The pool manager: pools, inventory, the control link, commands and shutdown.

Static pools come from the config; deployment pools arrive as `Preload` commands and
leave with `Stop` (POOL-05, PLC-04/06). `Reload` swaps a static pool's model
(`pool_managerd.reload`; the result is the outcome in words, or the reason it failed).
`Cordon` marks the host or one device (POOL-08; persisted). `Drain` takes a pool out of
service in the background; `Undrain` puts it back (`Pool.undrain`). Every command's
result is sent after a fresh snapshot, so the orchestrator sees a command's effect
before its result. Inventory: the CPU and GPUs measured (NVML), plus devices declared in the
config (simulated), whose free memory is their total minus foreign use minus the
estimates of the pools placed on them.

SIGTERM or SIGINT (POOL-07, REL-06): report every pool draining, let in-flight work
finish within `shutdown_grace_s`, stop every engine (SIGTERM to its process group, then
SIGKILL), report the final state, and exit 0. No engine process survives.

After a SIGKILL (issue 11): at start, before any engine is spawned, the engines the
previous pool manager left running are found by their records under `state_dir/run`
and stopped (`records.recover_engines`; why stop and not adopt: `recovery`), so a
restart never runs a second set beside them. The state_dir is locked for the pool
manager's life (`records.StateLock`): a second pool manager on it exits with code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import replace
from pathlib import Path

from catalog_core import sha256_file
from specs.control.v1 import control_pb2 as pb
from specs.tls import TlsMaterial

from pool_managerd.config import ConfigError, ManagerConfig, PoolConfig
from pool_managerd.container_launch import manager_id
from pool_managerd.control_link import ControlLink
from pool_managerd.control_translate import inventory_to_wire, pool_to_wire
from pool_managerd.cordon import CordonState
from pool_managerd.inventory import Device, Inventory, probe_inventory
from pool_managerd.metrics import serve_metrics
from pool_managerd.models import LocalModels, ModelNotHere
from pool_managerd.network import HostNetwork, settle_network
from pool_managerd.pool import Pool
from pool_managerd.process import read_log
from pool_managerd.records import StateLock, recover_containers, recover_engines
from pool_managerd.reload import ReloadError, reload, target_config

__all__ = ["PoolManager", "serve"]

VERSION = "0.1.0"
log = logging.getLogger("pool_managerd")
_LIVE_STATES = frozenset({"provisioning", "starting", "loading", "ready", "draining", "backoff"})
_LOG_CHUNK_BYTES = 256 << 10  # the most one TailLog answer carries (the link's messages stay small)
_CATALOG_POLL_S = 2.0  # how often the local catalog is checked for new models
_RECOVER_GRACE_S = 5.0  # a left-over engine gets what a stopping one gets (Pool.stop)


def _ok() -> pb.CommandResult:
    return pb.CommandResult(ok=True)


def _refuse(code: str, message: str) -> pb.CommandResult:
    return pb.CommandResult(ok=False, error_code=code, message=message)


class PoolManager:
    def __init__(self, config: ManagerConfig, network: HostNetwork) -> None:
        self.config = config
        self.network = network
        self.changed = asyncio.Event()
        self.pools = {p.id: Pool(p, config, self.changed, network) for p in config.pools}
        self.models = LocalModels([])
        self.cordon = CordonState.load(config.state_dir)
        self._hardware: Inventory | None = None
        self._seq = 0
        self.shutting_down = False

    # -- reports -------------------------------------------------------------------------

    def inventory(self) -> Inventory:
        hardware = self._hardware or probe_inventory()
        devices = [replace(d, cordoned=d.id in self.cordon.devices) for d in hardware.devices]
        for sim in self.config.devices:
            placed = sum(
                p.config.memory_estimated_bytes
                for p in self.pools.values()
                if p.config.device == sim.id and p.status().state in _LIVE_STATES
            )
            free = max(0, sim.memory_total_bytes - sim.foreign_used_bytes - placed)
            devices.append(
                Device(
                    sim.id,
                    sim.kind,
                    sim.name,
                    sim.memory_total_bytes,
                    free,
                    sim.compute_capability,
                    simulated=True,
                    cordoned=sim.id in self.cordon.devices,
                )
            )
        return replace(hardware, devices=tuple(devices))

    def _inventory_wire(self) -> pb.Inventory:
        return inventory_to_wire(self.inventory(), list(self.config.engines), self.models.all())

    def hello(self) -> pb.Hello:
        return pb.Hello(
            host_id=self.config.host_id,
            manager_version=VERSION,
            inventory=self._inventory_wire(),
            cordoned=self.cordon.host,
        )

    def snapshot(self) -> pb.Snapshot:
        self._seq += 1
        pools = [pool_to_wire(p.status()) for p in self.pools.values()]
        return pb.Snapshot(
            seq=self._seq, pools=pools, inventory=self._inventory_wire(), cordoned=self.cordon.host
        )

    async def refresh_inventory(self) -> None:
        self._hardware = await asyncio.to_thread(probe_inventory)

    # -- commands ------------------------------------------------------------------------

    async def on_command(self, command: pb.Command) -> pb.CommandResult:
        kind = command.WhichOneof("kind")
        log.info("command %s received", kind, extra={"action": f"command.{kind}"})
        if kind == "preload":
            return await self._preload(command.preload.spec)
        if kind == "drain":
            return self._drain(command.drain.pool_id, command.drain.deadline_ms / 1000.0)
        if kind == "undrain":
            return await self._undrain(command.undrain.pool_id)
        if kind == "stop":
            return await self._stop(command.stop.pool_id)
        if kind == "reload":
            return await self._reload(command.reload.pool_id, command.reload.model)
        if kind == "verify_model":
            return await self._verify(command.verify_model.model)
        if kind == "tail_log":
            return await self._tail_log(command.tail_log)
        if kind == "cordon":
            self.cordon.set(command.cordon.cordoned, command.cordon.device)
            self.changed.set()
            return _ok()
        return _refuse("INVALID_PARAMS", f"command {kind} is not supported by this pool manager")

    async def _preload(self, spec: pb.PoolSpec) -> pb.CommandResult:
        if spec.pool_id in self.pools:
            existing = self.pools[spec.pool_id].config
            if existing.deployment == spec.deployment:
                return _ok()  # idempotent: a retried command finds the pool it made
            return _refuse("INVALID_PARAMS", f"pool {spec.pool_id} already exists")
        if spec.engine not in self.config.engines:
            return _refuse("INVALID_PARAMS", f"engine {spec.engine} is not available here")
        try:
            model = self.models.resolve(spec.model)
        except ModelNotHere as exc:
            return _refuse("MODEL_NOT_FOUND", str(exc))
        config = PoolConfig(
            id=spec.pool_id,
            model=str(model.path),
            engine=spec.engine,
            model_id=model.id,
            sha256=model.sha256,
            aliases=tuple(spec.model_aliases),
            ctx=spec.ctx or 2048,
            slots=spec.slots or 1,
            replicas=spec.replicas or 1,
            device=spec.device or "cpu",
            deployment=spec.deployment,
            memory_estimated_bytes=spec.memory_estimated_bytes,
            threads=self.config.worker_threads,
        )
        pool = Pool(config, self.config, self.changed, self.network)
        self.pools[config.id] = pool
        await pool.start()
        log.info(
            "pool %s of deployment %s preloading on %s",
            config.id,
            config.deployment,
            config.device,
            extra={"pool_id": config.id, "action": "preload"},
        )
        return _ok()

    async def _verify(self, ref: str) -> pb.CommandResult:
        try:
            model = self.models.resolve(ref)
        except ModelNotHere as exc:
            return _refuse("MODEL_NOT_FOUND", str(exc))
        actual = await asyncio.to_thread(sha256_file, model.path)
        if actual != model.sha256:
            return _refuse(
                "DIGEST_MISMATCH", f"{model.path} has sha256 {actual}, expected {model.sha256}"
            )
        return pb.CommandResult(ok=True, message=actual)

    async def _reload(self, pool_id: str, ref: str) -> pb.CommandResult:
        pool = self.pools.get(pool_id)
        if pool is None:
            return _refuse("NOT_FOUND", f"no pool {pool_id}")
        try:
            config = target_config(pool.config, ref, self.models, self.config.allowed_model_roots())
            message = await reload(
                pool,
                config,
                self._free_bytes,
                timeout_s=self.config.reload_timeout_s,
                drain_deadline_s=self.config.reload_drain_deadline_s,
            )
        except ReloadError as exc:
            return _refuse(exc.code, str(exc))
        return pb.CommandResult(ok=True, message=message)

    async def _free_bytes(self, device_id: str) -> int | None:
        """Free memory of a device, measured now (None: no such device here)."""
        await self.refresh_inventory()
        found = [d for d in self.inventory().devices if d.id == device_id]
        return found[0].memory_free_bytes if found else None

    def _drain(self, pool_id: str, deadline_s: float) -> pb.CommandResult:
        pool = self.pools.get(pool_id)
        if pool is None:
            return _refuse("NOT_FOUND", f"no pool {pool_id}")
        pool.begin_drain(deadline_s)
        return _ok()

    async def _undrain(self, pool_id: str) -> pb.CommandResult:
        """Back in service (idempotent: a pool that is not draining is left as it is)."""
        pool = self.pools.get(pool_id)
        if pool is None:
            return _refuse("NOT_FOUND", f"no pool {pool_id}")
        if pool.reloading:
            return _refuse("POOL_UNREADY", f"pool {pool_id} is reloading")
        if self.shutting_down:  # its engines must stay stopped: the process is leaving
            return _refuse("POOL_UNREADY", "the pool manager is shutting down")
        await pool.undrain()
        return _ok()

    async def _tail_log(self, ask: pb.TailLog) -> pb.CommandResult:
        """A chunk of one replica's engine log (`llorch logs POOL`)."""
        pool = self.pools.get(ask.pool_id)
        if pool is None:
            return _refuse("NOT_FOUND", f"no pool {ask.pool_id}")
        if ask.replica >= len(pool.replicas):
            return _refuse("NOT_FOUND", f"pool {ask.pool_id} has no replica {ask.replica}")
        path = pool.replicas[ask.replica].log_path
        limit = min(ask.max_bytes or _LOG_CHUNK_BYTES, _LOG_CHUNK_BYTES)
        text, after, size = await asyncio.to_thread(read_log, path, ask.offset, limit)
        chunk = pb.LogChunk(file=path.name, text=text, next_offset=after, size=size)
        return pb.CommandResult(ok=True, log=chunk)

    async def _stop(self, pool_id: str) -> pb.CommandResult:
        pool = self.pools.get(pool_id)
        if pool is None:
            return _ok()  # idempotent
        await pool.stop(grace_s=5.0)
        if pool.config.deployment:
            # Deployment pools leave; static ones stay, stopped. A second Stop may have
            # removed it while this one waited.
            self.pools.pop(pool_id, None)
        self.changed.set()
        return _ok()

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        recovered = await recover_engines(self.config.state_dir / "run", _RECOVER_GRACE_S)
        if recovered.stopped or recovered.forgotten:
            log.warning(
                "stopped %d engines left running by a previous pool manager "
                "(%d more records were of engines already gone)",
                recovered.stopped,
                recovered.forgotten,
                extra={"action": "recover"},
            )
        # Containers may be left where this config runs them, and where the previous
        # pool manager did (its records name the runtime: the config may have changed).
        runtimes = {p.container.runtime for p in self.config.pools if p.container is not None}
        runtimes |= recovered.runtimes
        if runtimes:
            await recover_containers(runtimes, manager_id(self.config))
        await self.refresh_inventory()
        self.models = await asyncio.to_thread(
            LocalModels.load, self.config.models, self.config.state_dir
        )
        for pool in self.pools.values():
            await pool.start()

    async def watch_catalog(self, stop: asyncio.Event) -> None:
        """Offer models added to the local catalog while running: its files' sizes and
        times are compared every `_CATALOG_POLL_S`; on a change new entries are loaded
        and the next snapshot carries them (the orchestrator can then place them)."""
        base = self.config.state_dir / "catalog.sqlite"
        files = (base, base.with_name(base.name + "-wal"))

        def stamp() -> tuple[tuple[int, int], ...]:
            found = []
            for path in files:
                try:
                    info = path.stat()
                except OSError:
                    found.append((0, 0))
                    continue
                found.append((info.st_size, info.st_mtime_ns))
            return tuple(found)

        seen = stamp()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _CATALOG_POLL_S)
            now = stamp()
            if now == seen or stop.is_set():
                continue
            seen = now
            models = await asyncio.to_thread(
                self.models.with_new_catalog_entries, self.config.state_dir
            )
            if models is not self.models:
                self.models = models
                self.changed.set()

    async def watch_inventory(self, stop: asyncio.Event, period_s: float) -> None:
        """Measure the GPUs again every `period_s`: their free memory moves as engines
        load and as processes outside llorch come and go, and placement reads it from the
        next snapshot. A host without a GPU keeps the inventory read at start."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)
            hardware = self._hardware
            if stop.is_set() or hardware is None:
                continue
            if any(d.kind == "gpu" for d in hardware.devices):
                await self.refresh_inventory()

    async def shutdown(self) -> None:
        self.shutting_down = True
        grace = self.config.shutdown_grace_s
        log.info(
            "shutting down: draining %d pools (grace %.0f s)",
            len(self.pools),
            grace,
            extra={"action": "shutdown"},
        )
        await asyncio.gather(*(p.drain(max(0.0, grace - 5.0)) for p in self.pools.values()))


async def serve(config: ManagerConfig, tls: TlsMaterial | None) -> int:
    """Run until SIGTERM/SIGINT; StateLocked when another pool manager holds state_dir."""
    try:
        lock = StateLock(config.state_dir / "run")
    except OSError as exc:
        raise ConfigError(f"state_dir {config.state_dir} is not usable: {exc}") from exc
    try:
        return await _serve(config, tls)
    finally:
        lock.release()


async def _serve(config: ManagerConfig, tls: TlsMaterial | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    network = await settle_network(config, tls, stop)
    if network is None:
        return 0
    manager = PoolManager(config, network)
    link = ControlLink(
        config.orchestrator,
        config.join_token,
        tls=tls,
        hello=manager.hello,
        snapshot=manager.snapshot,
        changed=manager.changed,
        on_command=manager.on_command,
        heartbeat_s=config.heartbeat_interval_ms / 1000.0,
    )
    await manager.start()
    if config.metrics_port is not None:
        port = serve_metrics(
            config.metrics_host,
            config.metrics_port,
            config.state_dir / "run",
            lambda: [p.status() for p in manager.pools.values()],
            manager.inventory,
        )
        log.info("metrics on %s:%d", config.metrics_host, port, extra={"action": "metrics"})

    def publish_status(path: Path, written: dict[str, object]) -> dict[str, object]:
        """`status_file`: {joined, api_url, pools: {id: state}}, replaced atomically on
        change; `api_url` is the fleet's API as the orchestrator announced it."""
        pools = {pool_id: p.status().state for pool_id, p in manager.pools.items()}
        now: dict[str, object] = {
            "joined": link.connected.is_set(),
            "api_url": link.api_url,
            "pools": pools,
        }
        if now != written:
            partial = path.with_name(path.name + ".partial")
            partial.write_text(json.dumps(now))
            partial.replace(path)
        return now

    link_task = asyncio.create_task(link.run())
    catalog_task = asyncio.create_task(manager.watch_catalog(stop))
    inventory_task = asyncio.create_task(
        manager.watch_inventory(stop, config.heartbeat_interval_ms / 1000.0)
    )
    status: dict[str, object] = {}
    while config.status_file is not None and not stop.is_set():
        status = publish_status(config.status_file, status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await stop.wait()
    await manager.shutdown()
    await link.send_final_snapshot()
    link_task.cancel()
    await asyncio.gather(link_task, catalog_task, inventory_task, return_exceptions=True)
    if config.status_file is not None:
        link.connected.clear()
        publish_status(config.status_file, status)
    log.info("pool-managerd stopped", extra={"action": "stopped"})
    return 0
