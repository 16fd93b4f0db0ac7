"""The pool manager: pools, inventory, the control link, commands and shutdown.

SIGTERM or SIGINT (POOL-07, REL-06): report every pool draining, let in-flight work
finish within `shutdown_grace_s`, stop every engine (SIGTERM to its process group,
then SIGKILL), report the final state, and exit 0. No engine process survives.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from specs.control.v1 import control_pb2 as pb

from pool_managerd.config import ENGINES, ManagerConfig
from pool_managerd.control_link import ControlLink
from pool_managerd.control_translate import inventory_to_wire, pool_to_wire
from pool_managerd.inventory import Inventory, probe_inventory
from pool_managerd.pool import Pool

__all__ = ["PoolManager", "serve"]

VERSION = "0.1.0"
log = logging.getLogger("pool_managerd")


class PoolManager:
    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.changed = asyncio.Event()
        self.pools = {p.id: Pool(p, config, self.changed) for p in config.pools}
        self._inventory: Inventory | None = None
        self._seq = 0
        self._background: set[asyncio.Task[None]] = set()

    def hello(self) -> pb.Hello:
        return pb.Hello(
            host_id=self.config.host_id, manager_version=VERSION, inventory=self._inventory_wire()
        )

    def snapshot(self) -> pb.Snapshot:
        self._seq += 1
        return pb.Snapshot(
            seq=self._seq,
            pools=[pool_to_wire(p.status()) for p in self.pools.values()],
            inventory=self._inventory_wire(),
        )

    def _inventory_wire(self) -> pb.Inventory:
        inventory = self._inventory or probe_inventory()
        return inventory_to_wire(inventory, sorted(ENGINES))

    async def refresh_inventory(self) -> None:
        self._inventory = await asyncio.to_thread(probe_inventory)

    async def on_command(self, command: pb.Command) -> pb.CommandResult:
        kind = command.WhichOneof("kind")
        if kind == "drain":
            pool = self.pools.get(command.drain.pool_id)
            if pool is None:
                return pb.CommandResult(
                    ok=False, error_code="NOT_FOUND", message=f"no pool {command.drain.pool_id}"
                )
            task = asyncio.create_task(pool.drain(command.drain.deadline_ms / 1000.0))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return pb.CommandResult(ok=True)
        if kind == "stop":
            pool = self.pools.get(command.stop.pool_id)
            if pool is None:
                return pb.CommandResult(
                    ok=False, error_code="NOT_FOUND", message=f"no pool {command.stop.pool_id}"
                )
            await pool.stop(grace_s=5.0)
            return pb.CommandResult(ok=True)
        return pb.CommandResult(
            ok=False,
            error_code="INVALID_PARAMS",
            message=f"command {kind} is not supported by this pool manager",
        )

    async def start(self) -> None:
        await self.refresh_inventory()
        for pool in self.pools.values():
            await pool.start()

    async def shutdown(self) -> None:
        grace = self.config.shutdown_grace_s
        log.info(
            "shutting down: draining %d pools (grace %.0f s)",
            len(self.pools),
            grace,
            extra={"action": "shutdown"},
        )
        await asyncio.gather(*(p.drain(max(0.0, grace - 5.0)) for p in self.pools.values()))


async def serve(config: ManagerConfig) -> int:
    manager = PoolManager(config)
    link = ControlLink(
        config.orchestrator,
        config.join_token,
        hello=manager.hello,
        snapshot=manager.snapshot,
        changed=manager.changed,
        on_command=manager.on_command,
        heartbeat_s=config.heartbeat_interval_ms / 1000.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.start()
    link_task = asyncio.create_task(link.run())
    await stop.wait()
    await manager.shutdown()
    await link.send_final_snapshot()
    link_task.cancel()
    await asyncio.gather(link_task, return_exceptions=True)
    log.info("pool-managerd stopped", extra={"action": "stopped"})
    return 0
