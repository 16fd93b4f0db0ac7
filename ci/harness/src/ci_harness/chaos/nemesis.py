"""The nemesis: a seeded fault schedule (pure) and the driver that injects it.

`schedule(seed, ...)` decides everything that can be decided ahead: for each fault its
kind, its start offset in the run, its host, which of several candidate processes
(`pick`) and how long it lasts. It is printed at the start of a run, so a failing run
can be replayed with the same seed. `Nemesis` executes it against a `Cluster` on a
fleet, one thread per fault; faults overlap in time, except that faults on the same
resource (the orchestrator, one host's pool manager, one host's link, one host's
workers or engines) take turns. Every fault is written to the history with its start
and end; a fault that finds no process to hit within its deadline is recorded as
skipped, not injected.

Fault kinds:

| kind                 | what                                                          |
|----------------------|---------------------------------------------------------------|
| `kill9-engine`       | SIGKILL a llama-server engine process                          |
| `kill9-worker`       | SIGKILL an in-process llama.cpp worker (`llorch worker`)       |
| `kill9-pool-manager` | SIGKILL a pool manager, start it again on the same state_dir   |
| `kill9-orchestrator` | SIGKILL orchestratord, start it again on the same state_dir,   |
|                      | config and ports                                              |
| `sigstop`            | SIGSTOP one of those processes for 1-5 s, then SIGCONT        |
| `partition`          | cut a host's namespace off the bridge for a few seconds, heal |

The fault durations are the schedule itself (the only sleeps of the harness); every
other wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from ci_harness.chaos.history import History
from ci_harness.cluster import Cluster

__all__ = ["FAULT_KINDS", "FaultPlan", "Nemesis", "Topology", "schedule"]

FAULT_KINDS = (
    "kill9-engine",
    "kill9-worker",
    "kill9-pool-manager",
    "kill9-orchestrator",
    "sigstop",
    "partition",
)
SIGSTOP_ROLES = ("orchestratord", "pool-managerd", "worker", "engine")
TARGET_WAIT_S = 60.0  # how long a fault waits for a process to hit before it is skipped
READY_WAIT_S = 60.0  # how long a restarted daemon may take to serve again


@dataclass(frozen=True, slots=True)
class Topology:
    """Which host runs which engine kind: `worker_host` the in-process llama.cpp pool,
    `engine_host` the llama-server pool."""

    worker_host: str
    engine_host: str

    @property
    def hosts(self) -> tuple[str, str]:
        return (self.worker_host, self.engine_host)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    seq: int
    kind: str
    at_s: float  # start offset from the nemesis's start
    role: str  # orchestratord, pool-managerd, worker, engine or link
    host: str | None  # None for the orchestrator
    pick: int  # which of the candidate processes (modulo their number)
    duration_s: float  # how long a SIGSTOP or a partition lasts (0 for a kill)

    @property
    def resource(self) -> str:
        return f"{self.role}@{self.host}" if self.host else self.role


def schedule(seed: int, per_kind: int, span_s: float, topology: Topology) -> list[FaultPlan]:
    """`per_kind` faults of every kind, their starts spread at random over `span_s`
    seconds; the same seed gives the same schedule."""
    rng = random.Random(seed)
    plans: list[tuple[float, str, str, str | None, float]] = []
    for kind in FAULT_KINDS:
        for _ in range(per_kind):
            at = rng.uniform(0.0, span_s)
            role, host, duration = _shape(rng, kind, topology)
            plans.append((at, kind, role, host, duration))
    plans.sort(key=lambda p: (p[0], p[1]))
    return [
        FaultPlan(seq, kind, round(at, 3), role, host, rng.randrange(1 << 16), round(duration, 3))
        for seq, (at, kind, role, host, duration) in enumerate(plans)
    ]


def _shape(rng: random.Random, kind: str, topology: Topology) -> tuple[str, str | None, float]:
    if kind == "kill9-engine":
        return "engine", topology.engine_host, 0.0
    if kind == "kill9-worker":
        return "worker", topology.worker_host, 0.0
    if kind == "kill9-pool-manager":
        return "pool-managerd", rng.choice(topology.hosts), 0.0
    if kind == "kill9-orchestrator":
        return "orchestratord", None, 0.0
    if kind == "partition":
        return "link", rng.choice(topology.hosts), rng.uniform(1.0, 4.0)
    role = rng.choice(SIGSTOP_ROLES)
    host = None if role == "orchestratord" else _host_for(rng, role, topology)
    return role, host, rng.uniform(1.0, 5.0)


def _host_for(rng: random.Random, role: str, topology: Topology) -> str:
    if role == "worker":
        return topology.worker_host
    if role == "engine":
        return topology.engine_host
    return rng.choice(topology.hosts)


# -- the driver ---------------------------------------------------------------------------------


class Nemesis:
    """Injects a schedule into a running cluster on a fleet (see the module doc)."""

    def __init__(self, cluster: Cluster, plans: list[FaultPlan], history: History) -> None:
        assert cluster.fleet is not None, "the nemesis partitions hosts: it needs a fleet"
        self._cluster = cluster
        self._plans = plans
        self._history = history
        self._locks = {p.resource: threading.Lock() for p in plans}
        self._spawns: queue.Queue[tuple[Callable[[], object], list[BaseException | None]]] = (
            queue.Queue()
        )
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        """Inject every fault at its time; returns when all have ended (restarted daemons
        serving again, links healed, processes continued). Call it from the thread that
        outlives the run (the main thread): restarted daemons are spawned here, because a
        child started with PR_SET_PDEATHSIG (`die_with_parent`) is signalled when the
        thread that forked it ends, not the process."""
        self._started = time.monotonic()
        for plan in self._plans:
            due = self._started + plan.at_s
            self._serve_spawns(until=lambda: time.monotonic() >= due)  # noqa: B023 - used here
            thread = threading.Thread(
                target=self._inject, args=(plan,), daemon=True, name=f"fault-{plan.seq}"
            )
            thread.start()
            self._threads.append(thread)
        self._serve_spawns(until=lambda: not any(t.is_alive() for t in self._threads))

    def _serve_spawns(self, until: Callable[[], bool]) -> None:
        while not until():
            try:
                spawn, done = self._spawns.get(timeout=0.02)
            except queue.Empty:
                continue
            try:
                spawn()
            except Exception as exc:  # noqa: BLE001 - handed to the fault that asked
                done.append(exc)
            done.append(None)

    def _spawn(self, spawn: Callable[[], object]) -> None:
        """Run `spawn` on the run() thread (see there) and wait until it has run."""
        done: list[BaseException | None] = []
        self._spawns.put((spawn, done))
        while not done:
            time.sleep(0.01)
        if done[0] is not None:
            raise done[0]

    def _inject(self, plan: FaultPlan) -> None:
        with self._locks[plan.resource]:
            try:
                outcome = self._action(plan)()
            except Exception as exc:  # noqa: BLE001 - recorded: a harness failure, not a verdict
                self.errors.append(f"fault {plan.seq} ({plan.kind}): {exc!r}")
                outcome = {"skipped": f"harness error: {exc!r}"}
        self._history.record("fault", plan=asdict(plan), **outcome)

    def _action(self, plan: FaultPlan) -> Callable[[], dict[str, Any]]:
        if plan.kind == "kill9-orchestrator":
            return self._kill_orchestrator
        if plan.kind == "kill9-pool-manager":
            return lambda: self._kill_manager(plan)
        if plan.kind == "partition":
            return lambda: self._partition(plan)
        if plan.kind == "sigstop":
            return lambda: self._sigstop(plan)
        return lambda: self._kill_child(plan)

    # -- faults ---------------------------------------------------------------------------

    def _kill_orchestrator(self) -> dict[str, Any]:
        start = time.monotonic()
        pid = self._cluster.kill("orchestratord")
        self._spawn(self._cluster.restart_orchestrator)
        return {"start": start, "end": time.monotonic(), "pid": pid}

    def _kill_manager(self, plan: FaultPlan) -> dict[str, Any]:
        assert plan.host is not None
        start = time.monotonic()
        pid = self._cluster.kill(f"pool-managerd-{plan.host}")
        status = self._status_file(plan.host)
        if status is not None:
            status.unlink(missing_ok=True)  # the killed manager's last word
        host = plan.host
        self._spawn(lambda: self._cluster.restart_manager(host))
        end = time.monotonic()
        ready = _await(lambda: self._host_ready(plan.host or ""), READY_WAIT_S)
        return {"start": start, "end": end, "pid": pid, "ready_after_s": ready}

    def _partition(self, plan: FaultPlan) -> dict[str, Any]:
        assert plan.host is not None and self._cluster.fleet is not None
        start = time.monotonic()
        self._cluster.fleet.partition(plan.host)
        try:
            _pause_until(start + plan.duration_s)
        finally:
            self._cluster.fleet.heal(plan.host)
        return {"start": start, "end": time.monotonic()}

    def _sigstop(self, plan: FaultPlan) -> dict[str, Any]:
        process = self._signal_target(plan, signal.SIGSTOP)
        if process is None:
            return {"skipped": f"no {plan.role} process to stop"}
        start = time.monotonic()
        try:
            _pause_until(start + plan.duration_s)
        finally:
            # Killed while stopped (another fault)? Then there is nothing to continue.
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)
        return {"start": start, "end": time.monotonic(), "pid": process.pid}

    def _kill_child(self, plan: FaultPlan) -> dict[str, Any]:
        start = time.monotonic()
        process = self._signal_target(plan, signal.SIGKILL)
        if process is None:
            return {"skipped": f"no {plan.role} process to kill"}
        return {"start": start, "end": start, "pid": process.pid}

    def _signal_target(self, plan: FaultPlan, sig: signal.Signals) -> psutil.Process | None:
        """Send `sig` to the fault's target; a target that exits as it is picked is
        picked again (three times). None when there was nothing to hit."""
        for _ in range(3):
            process = self._target(plan)
            if process is None:
                return None
            try:
                process.send_signal(sig)
            except psutil.NoSuchProcess:
                continue
            return process
        return None

    # -- targets ------------------------------------------------------------------------------

    def _target(self, plan: FaultPlan) -> psutil.Process | None:
        """The process a fault hits (`pick` among the candidates), waiting up to
        TARGET_WAIT_S for one to exist (an engine restarting, a manager starting)."""
        deadline = time.monotonic() + TARGET_WAIT_S
        while time.monotonic() < deadline:
            candidates = self._candidates(plan)
            if candidates:
                return candidates[plan.pick % len(candidates)]
            time.sleep(0.05)
        return None

    def _candidates(self, plan: FaultPlan) -> list[psutil.Process]:
        if plan.role == "orchestratord":
            return _alive(self._cluster.processes["orchestratord"].pid)
        manager = self._cluster.processes[f"pool-managerd-{plan.host}"]
        if plan.role == "pool-managerd":
            return _alive(manager.pid)
        marker = "worker_adapters.worker" if plan.role == "worker" else "llama-server"
        return [p for p in _children(manager.pid) if marker in _cmdline(p)]

    def _status_file(self, host: str) -> Path | None:
        path = self._cluster.hosts.get(host, {}).get("status_file")
        return Path(path) if path else None

    def _host_ready(self, host: str) -> bool:
        """The host's pools all ready: by the pool manager's own `status_file` when it has
        one (the orchestrator may be down or stopped by another fault), else by the API."""
        status = self._status_file(host)
        if status is not None:
            try:
                pools = json.loads(status.read_text())["pools"]
            except (OSError, ValueError, KeyError):
                return False
            return bool(pools) and all(state == "ready" for state in pools.values())
        pool_ids = [p["id"] for p in self._cluster.pools[host]]
        try:
            return all(self._cluster.pool(pool_id).get("ready") for pool_id in pool_ids)
        except httpx.HTTPError:
            return False


def _alive(pid: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
        return [process] if process.status() != psutil.STATUS_ZOMBIE else []
    except psutil.NoSuchProcess:
        return []


def _children(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _await(condition: Callable[[], Any], timeout_s: float) -> float | None:
    """Poll `condition` until true: the seconds it took, or None past `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return round(time.monotonic() - start, 3)
        time.sleep(0.05)
    return None


def _pause_until(deadline: float) -> None:
    """The schedule's own waits (a fault's start, a pause's length): not synchronisation."""
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)
