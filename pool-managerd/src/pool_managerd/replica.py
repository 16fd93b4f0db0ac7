"""`ReplicaDriver`: runs one engine replica through its lifecycle.

Events (process exit, health probe results, warm-up result, timers, commands) go into a
queue; the driver feeds each to the pure `lifecycle.transition` and carries out the
actions it returns: spawn the worker, warm it up, kill it, schedule a restart. Probes
use the same adapter the orchestrator uses (`native`), with their own timeout, on
their own connection, so they never queue behind user work (POOL-09).

Readiness (POOL-02): the process is started, it reports its port, its health probe
says `ready` (the worker answers `loading` while the weights load), and a one-token
warm-up generation succeeds. Only then is the replica `ready`. The warm-up is narrated
(`action: warmup`, before and after) ahead of the `loading -> ready` line.

When an engine's leader process exits, what is left of its process group is killed
(an engine server's helpers die with it). The engine's log is trimmed while it runs
(`process.trim_log`, checked with every probe), so a chatty engine cannot fill the disk.
Each engine start is recorded in `paths.record` (`records.py`) until the engine exits,
so a pool manager killed by SIGKILL leaves a trace of what its successor must stop.

A container engine (`Launch.container`) is the runtime's client process (`docker run`)
plus a container the runtime's daemon runs: killing the client does not stop the
container. So a leftover container of the replica's name is removed before each start,
and the container is removed (`RUNTIME rm -f`, bounded) whenever its client exits,
however it ended (a stop, a kill, a crash, the container's own exit), before the exit
is reported: a restart never finds the old one beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specs.net import host_port
from worker_adapters import End, Endpoint, Failed, GenerateRequest, Sampling, create_adapter
from worker_adapters.capabilities import honoured
from worker_adapters.errors import AdapterError
from worker_adapters.protocol import Adapter

from pool_managerd import lifecycle as lc
from pool_managerd.container_launch import ContainerRef
from pool_managerd.engines import Launch
from pool_managerd.network import HostNetwork
from pool_managerd.process import (
    EngineProcess,
    log_needs_trim,
    log_tail,
    remove_container,
    trim_log,
)
from pool_managerd.records import remove_record, write_record

__all__ = ["ReplicaDriver", "ReplicaPaths"]

log = logging.getLogger("pool_managerd.replica")
_PORT_WAIT_S = 120.0
_WARMUP_TIMEOUT_S = 120.0
_LOADING_PROBE_S = 0.1
_KILL_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class ReplicaPaths:
    log: Path
    port_file: Path
    workdir: Path
    record: Path  # `<name>.engine.json` under state_dir/run while the engine runs


class ReplicaDriver:
    def __init__(
        self,
        *,
        pool_id: str,
        index: int,
        engine: str,
        make_launch: Callable[[], Launch],
        api_key: str,
        network: HostNetwork,
        paths: ReplicaPaths,
        policy: lc.RestartPolicy,
        probe_interval_s: float,
        probe_timeout_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self.pool_id = pool_id
        self.index = index
        self.engine = engine
        self._make_launch = make_launch
        self._api_key = api_key
        self._network = network
        self._paths = paths
        self._policy = policy
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._on_change = on_change
        self.state = lc.ReplicaState()
        self.endpoint = ""  # advertised: what the orchestrator dials (FLT-01)
        self.tls = False
        self.incarnation = 0
        self.engine_version = ""
        self.slots_busy = 0
        self.load_progress: float | None = None  # the engine's, while it loads its weights
        self.probed_at = 0.0  # time.monotonic() of the last health answer (slots_busy's age)
        self._events: asyncio.Queue[lc.Event] = asyncio.Queue()
        self._process: EngineProcess | None = None
        self._containers: dict[int, ContainerRef] = {}  # by the runtime client's pid
        self._adapter: Adapter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()

    @property
    def log_path(self) -> Path:
        """The engine's log file (its output, POOL-06)."""
        return self._paths.log

    @property
    def ready(self) -> bool:
        return self.state.phase == "ready" and bool(self.endpoint)

    def post(self, event: lc.Event) -> None:
        self._events.put_nowait(event)

    async def run(self) -> None:
        """Process events until cancelled."""
        try:
            while True:
                event = await self._events.get()
                try:
                    self._handle(event)
                finally:
                    self._events.task_done()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._process is not None:
                await self._process.stop(0.5)
                await self._remove_container(self._process.pid)
                remove_record(self._paths.record, self._process.pid)
            await self._close_adapter()

    async def caught_up(self, timeout_s: float = 5.0) -> None:
        """Until every event posted so far has been handled (or `timeout_s` passed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._events.join(), timeout_s)

    def memory_bytes(self) -> int:
        """Resident memory of the engine process and its children (0 when not running)."""
        process = self._process
        return 0 if process is None else process.memory_bytes()

    async def stop(self, grace_s: float) -> None:
        """Stop the replica and wait until its process is gone (or it never ran)."""
        self._kill_grace_s = grace_s
        self.post(lc.Stop())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), grace_s + _KILL_GRACE_S)

    _kill_grace_s = _KILL_GRACE_S

    def _handle(self, event: lc.Event) -> None:
        before = self.state
        self.state, actions = lc.transition(
            self.state, event, now=time.monotonic(), policy=self._policy, jitter=random.random()
        )
        for action in actions:
            self._execute(action)
        if self.state.phase in ("stopped", "failed") and self._process is None:
            self._settled.set()
        if self.state != before:
            if self.state.phase != before.phase:
                log.info(
                    "pool %s replica %d: %s -> %s%s",
                    self.pool_id,
                    self.index,
                    before.phase,
                    self.state.phase,
                    f" ({self.state.last_error})" if self.state.last_error else "",
                    extra={"pool_id": self.pool_id, "action": "lifecycle"},
                )
            self._on_change()

    def _execute(self, action: lc.Action) -> None:
        match action:
            case lc.Spawn():
                self._spawn_task(self._launch())
            case lc.WarmUp():
                self._spawn_task(self._warm_up())
            case lc.Kill(reason):
                log.warning(
                    "pool %s replica %d: stopping engine: %s",
                    self.pool_id,
                    self.index,
                    reason,
                    extra={"pool_id": self.pool_id, "action": "kill"},
                )
                self._spawn_task(self._kill())
            case lc.ScheduleRestart(delay):
                log.info(
                    "pool %s replica %d: restart in %.2f s",
                    self.pool_id,
                    self.index,
                    delay,
                    extra={"pool_id": self.pool_id, "action": "backoff"},
                )
                asyncio.get_running_loop().call_later(delay, self.post, lc.RestartDue())

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- actions -------------------------------------------------------------------------

    async def _launch(self) -> None:
        self._paths.port_file.unlink(missing_ok=True)
        try:
            spec = self._make_launch()
            if spec.container is not None:
                await self._remove_leftover(spec.container)
            process = await EngineProcess.spawn(
                spec.command,
                env={**os.environ, **spec.env},
                log_path=self._paths.log,
                cwd=self._paths.workdir,
            )
        except (OSError, ValueError) as exc:
            self.post(lc.Exited(None, f"cannot start engine: {exc}"))
            return
        self._process = process
        if spec.container is not None:
            self._containers[process.pid] = spec.container
        write_record(
            self._paths.record,
            pool_id=self.pool_id,
            replica=self.index,
            engine=self.engine,
            pid=process.pid,
            command=spec.command,
        )
        self.incarnation = time.time_ns()  # one value per engine start, for the orchestrator
        self._spawn_task(self._watch_exit(process))
        port = spec.port if spec.port is not None else await self._wait_port(process)
        if port is None:
            return
        network = self._network
        self.endpoint = host_port(network.advertise_host, port)
        self.tls = spec.tls
        probe = Endpoint(
            host_port(network.probe_host, port),
            self._api_key,
            network.probe_tls if spec.tls else None,
        )
        self._adapter = create_adapter(spec.adapter, probe)
        self._spawn_task(self._probe_loop(self._adapter, process))

    async def _wait_port(self, process: EngineProcess) -> int | None:
        deadline = time.monotonic() + _PORT_WAIT_S
        while process.returncode is None and time.monotonic() < deadline:
            try:
                return int(self._paths.port_file.read_text().strip())
            except (OSError, ValueError):
                await asyncio.sleep(0.02)
        if process.returncode is None:
            self.post(lc.ProbeFailed("engine did not report its port in time"))
            await process.stop(_KILL_GRACE_S)
        return None

    async def _watch_exit(self, process: EngineProcess) -> None:
        code = await process.wait()
        process.reap_group()
        await self._remove_container(process.pid)
        remove_record(self._paths.record, process.pid)
        if self._process is process:
            self._process = None
        self.endpoint = ""
        self.tls = False
        self.incarnation = 0
        self.engine_version = ""
        self.load_progress = None
        await self._close_adapter()
        self.post(lc.Exited(code, log_tail(self._paths.log, lines=6)))

    async def _probe_loop(self, adapter: Adapter, process: EngineProcess) -> None:
        while process.returncode is None:
            try:
                health = await asyncio.wait_for(adapter.health(), self._probe_timeout_s)
            except (AdapterError, TimeoutError) as exc:
                self.post(lc.ProbeFailed(str(exc) or type(exc).__name__))
            else:
                self.slots_busy = health.slots_busy
                self.load_progress = health.load_progress if health.state == "loading" else None
                self.probed_at = time.monotonic()
                if health.state == "ready" and not self.engine_version:
                    await self._read_props(adapter)
                self.post(lc.Health(health.state, health.message))
            loading = self.state.phase in ("starting", "loading")
            if not loading and log_needs_trim(self._paths.log):
                await asyncio.to_thread(trim_log, self._paths.log)
            await asyncio.sleep(_LOADING_PROBE_S if loading else self._probe_interval_s)

    async def _read_props(self, adapter: Adapter) -> None:
        with contextlib.suppress(AdapterError, TimeoutError):
            props = await asyncio.wait_for(adapter.props(), self._probe_timeout_s)
            self.engine_version = props.engine_version

    async def _warm_up(self) -> None:
        adapter = self._adapter
        if adapter is None:
            self.post(lc.WarmedUp(False, "engine is not reachable"))
            return
        # Greedy where the engine honours a temperature (the mock does not: API-16).
        greedy = "temperature" in honoured(self.engine, "completion")
        request = GenerateRequest(
            f"warmup-{self.pool_id}-{self.index}-{time.time_ns()}",
            Sampling(max_tokens=1, temperature=0.0 if greedy else None),
            prompt="Hello",
        )
        self._narrate("warms up with a one-token generation")
        started = time.monotonic()
        outcome = "no terminal event"
        try:
            async with asyncio.timeout(_WARMUP_TIMEOUT_S):
                async for event in adapter.submit(request):
                    if isinstance(event, End):
                        ok = event.tokens_out >= 1 or event.finish_reason == "stop"
                        elapsed_ms = (time.monotonic() - started) * 1000.0
                        self._narrate(
                            f"finishes its warm-up: {event.tokens_out} token in {elapsed_ms:.0f} ms"
                            if ok
                            else "warm-up produced no token"
                        )
                        self.post(lc.WarmedUp(ok, "" if ok else "the engine produced no token"))
                        return
                    if isinstance(event, Failed):
                        outcome = f"{event.code}: {event.message}"
        except TimeoutError:
            outcome = f"no answer within {_WARMUP_TIMEOUT_S:.0f} s"
        except AdapterError as exc:
            outcome = str(exc) or type(exc).__name__
        self._narrate(f"warm-up fails: {outcome}", level=logging.WARNING)
        self.post(lc.WarmedUp(False, outcome))

    def _narrate(self, what: str, level: int = logging.INFO) -> None:
        log.log(
            level,
            "pool %s replica %d %s",
            self.pool_id,
            self.index,
            what,
            extra={"pool_id": self.pool_id, "action": "warmup", "target": self.pool_id},
        )

    async def _kill(self) -> None:
        process = self._process
        if process is not None:
            await process.stop(self._kill_grace_s)

    async def _remove_leftover(self, container: ContainerRef) -> None:
        """Remove `container` (a leftover before a start, or the one whose client exited)."""
        why = await remove_container(container.runtime, container.name)
        if why:
            log.warning(
                "pool %s replica %d: cannot remove container %s: %s",
                self.pool_id,
                self.index,
                container.name,
                why,
                extra={"pool_id": self.pool_id, "action": "container"},
            )

    async def _remove_container(self, pid: int) -> None:
        """Remove the container of the engine start whose runtime client was `pid`."""
        container = self._containers.pop(pid, None)
        if container is not None:
            await self._remove_leftover(container)

    async def _close_adapter(self) -> None:
        adapter, self._adapter = self._adapter, None
        if adapter is not None:
            await adapter.close()
