"""What a starting pool manager does with the engines a previous one left running.

Every engine is the leader of its own process group and session (`process.py`), so a
pool manager that dies by SIGKILL leaves its engines running: without this, its next
start would spawn a second set beside them (issue 11). Each engine start is recorded in
`state_dir/run/<pool>-r<i>[.g<n>].engine.json` (`records.py`): its pid (which is also
its process group id), its start time in clock ticks since boot (`/proc/<pid>/stat`
field 22), the boot it ran in, and its command line; the record is removed when the
engine exits.

**The choice: stop, for every engine kind.** A starting pool manager stops what it
finds (SIGTERM to the process group, a grace, SIGKILL) before it starts any engine, and
only then starts fresh ones: never a second set on the same device. It does not adopt
them, because adoption is not sound yet for any kind: each pool's engine API key is
made afresh at every start and kept only in memory and in the engines' environments
(never on disk), so adopting would mean reading it back out of `/proc/<pid>/environ`
or storing it at rest; and what the dead manager knew of each engine (its crash
history, its incarnation as the orchestrator knows it, whether it was warmed up or
mid-reload) is gone. Adoption per engine kind can build on these records later. The
cost is one model load per replica after a crash of the pool manager. Jobs running on
those engines end with a retriable `WORKER_RESET` (or are re-queued before their first
token), as after an engine crash.

`plan_recovery(records, processes, boot_id)` is the pure decision, one named check per
rule, each reason carried as data:

| record says               | live process facts                 | action              |
|---------------------------|------------------------------------|---------------------|
| another boot              | (anything)                         | forget              |
| pid P, start T, command C | P alive, started at T, runs C      | stop its group      |
| pid P                     | P alive, other start or command    | forget (pid reused) |
| pid P                     | P gone, members of group P left    | stop its group      |
| pid P                     | P gone, no member of group P left  | forget              |

A reused pid is never signalled. A group whose leader is gone is still the engine's: the
kernel does not reuse a pid while a process group or session of that id lives.
Zombies count as gone. The driver (`records.recover_engines`) executes the actions and
removes every record it handled.

Container engines (`container_launch.py`) follow the same choice: the record is their
`docker run` client's, whose group is stopped as above; the container the runtime's
daemon runs outlives its client, so afterwards `records.recover_containers` removes
every container labelled with this pool manager's id. None is adopted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "EngineRecord",
    "Forget",
    "ProcessFacts",
    "RecoveryAction",
    "StopGroup",
    "plan_recovery",
]


@dataclass(frozen=True, slots=True)
class EngineRecord:
    """One engine start, as its pool manager recorded it."""

    name: str  # the record's name: `<pool>-r<i>` or `<pool>-r<i>.g<n>`
    pool_id: str
    replica: int
    engine: str
    pid: int  # the leader; also the process group and session id
    start_ticks: int  # /proc/<pid>/stat starttime: clock ticks after boot
    boot_id: str
    cmdline: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    """One live process as /proc shows it (zombies are left out)."""

    pid: int
    pgid: int
    sid: int
    start_ticks: int
    cmdline: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StopGroup:
    """SIGTERM the process group, wait `grace`, SIGKILL: `pids` must be gone after."""

    record: EngineRecord
    pids: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Nothing of this engine runs (or what runs is not it): drop the record."""

    record: EngineRecord
    reason: str


RecoveryAction = StopGroup | Forget


def plan_recovery(
    records: list[EngineRecord], processes: Mapping[int, ProcessFacts], boot_id: str
) -> list[RecoveryAction]:
    """One action per record (see the module's table)."""
    return [_decide(record, processes, boot_id) for record in records]


def _decide(
    record: EngineRecord, processes: Mapping[int, ProcessFacts], boot_id: str
) -> RecoveryAction:
    reason = _other_boot(record, boot_id)
    if reason:
        return Forget(record, reason)
    leader = processes.get(record.pid)
    if leader is not None:
        reason = _pid_reused(record, leader)
        if reason:
            return Forget(record, reason)
        return StopGroup(record, _members(record, processes), "its engine still runs")
    members = _members(record, processes)
    if members:
        return StopGroup(record, members, "its engine exited but left processes in its group")
    return Forget(record, "its engine is gone")


def _other_boot(record: EngineRecord, boot_id: str) -> str:
    if record.boot_id != boot_id:
        return "recorded before the machine rebooted"
    return ""


def _pid_reused(record: EngineRecord, leader: ProcessFacts) -> str:
    """A process with the recorded pid that is not the engine (started at another time
    or running another command): the pid was reused, and it must not be signalled."""
    if leader.start_ticks != record.start_ticks:
        return f"pid {record.pid} now belongs to a process started at another time"
    if leader.cmdline != record.cmdline:
        return f"pid {record.pid} now runs another command"
    if leader.pgid != record.pid:
        return f"pid {record.pid} is no longer the leader of its process group"
    return ""


def _members(record: EngineRecord, processes: Mapping[int, ProcessFacts]) -> tuple[int, ...]:
    """Pids of the engine's process group (its session too: it was started in its own)."""
    return tuple(
        sorted(p.pid for p in processes.values() if p.pgid == record.pid and p.sid == record.pid)
    )
