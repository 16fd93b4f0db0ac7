"""Engine records under `state_dir/run`, the state_dir lock, and recovery at start.

Each running engine has a record `state_dir/run/<name>.engine.json` (`<name>` is its
replica's: `<pool>-r<i>` or `<pool>-r<i>.g<n>`), written right after its process starts
and removed when it exits (`ReplicaDriver`). The record holds no secret: ids, the pid,
the start time, the boot and the command line (engine keys travel in the environment,
never on the command line).

`recover_engines(run_dir, grace_s)` runs once at start, before any engine is spawned:
it reads the records a previous pool manager left, the live processes and the boot id,
lets `recovery.plan_recovery` decide, stops the process groups it says to stop and
removes every record (see `recovery` for the choice: stop, not adopt). Then
`recover_containers` removes every container labelled with this pool manager's id
(container mode: the runtime client stopped above may have left its container running).

`StateLock` is an exclusive `flock` on `state_dir/run/manager.lock` held for the pool
manager's life: a second pool manager on the same state_dir would otherwise stop the
first one's engines as leftovers. The kernel releases it when its holder dies, SIGKILL
included.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pool_managerd.container_launch import MANAGER_LABEL, container_runtime
from pool_managerd.process import (
    boot_id,
    list_containers,
    process_facts,
    remove_container,
    scan_processes,
    stop_group,
)
from pool_managerd.recovery import (
    EngineRecord,
    Forget,
    RecoveryAction,
    StopGroup,
    plan_recovery,
)

__all__ = [
    "RECORD_SUFFIX",
    "Recovered",
    "StateLock",
    "StateLocked",
    "load_records",
    "recover_containers",
    "recover_engines",
    "remove_record",
    "write_record",
]

log = logging.getLogger("pool_managerd.records")
RECORD_SUFFIX = ".engine.json"


class StateLocked(RuntimeError):
    """Another live pool manager holds this state_dir."""


class StateLock:
    """The pool manager's exclusive hold on its state_dir (see module doc)."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "manager.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
            os.close(self._fd)
            raise StateLocked(
                f"{run_dir.parent} is in use by another pool-managerd (pid {holder or '?'})"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


_EXEC_SETTLE_READS = 200


def write_record(
    path: Path,
    *,
    pool_id: str,
    replica: int,
    engine: str,
    pid: int,
    command: Sequence[str] | None = None,
) -> bool:
    """Record a just-started engine (blocking: a /proc read, one small file written
    atomically). False when the process is already gone (nothing to record) or the
    file cannot be written (logged). `command`: what was executed; /proc is read again
    (a few hundred reads at most) until it shows it, because the spawner returns once
    exec closed the close-on-exec files, a moment before the kernel sets the new
    command line: a record of the old one would make the next start forget a live
    engine as a reused pid."""
    facts = process_facts(pid)
    for _ in range(_EXEC_SETTLE_READS if command is not None else 0):
        if facts is None or facts.cmdline == tuple(command or ()):
            break
        time.sleep(0.0005)
        facts = process_facts(pid)
    if facts is None:
        return False
    record = EngineRecord(
        name=path.name.removesuffix(RECORD_SUFFIX),
        pool_id=pool_id,
        replica=replica,
        engine=engine,
        pid=pid,
        start_ticks=facts.start_ticks,
        boot_id=boot_id(),
        cmdline=facts.cmdline,
    )
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(asdict(record)))
        partial.replace(path)
    except OSError as exc:  # the engine runs on; only a SIGKILL of ours would orphan it
        log.error(
            "pool %s replica %d: cannot record engine pid %d in %s: %s",
            pool_id,
            replica,
            pid,
            path,
            exc,
            extra={"pool_id": pool_id, "action": "record"},
        )
        return False
    return True


def remove_record(path: Path, pid: int | None = None) -> None:
    """Remove a record; given `pid`, only if it is that engine's (blocking, tiny)."""
    if pid is not None:
        record = _read(path) if path.exists() else None
        if record is None or record.pid != pid:
            return
    path.unlink(missing_ok=True)


def _read(path: Path) -> EngineRecord | None:
    try:
        raw = json.loads(path.read_text())
        return EngineRecord(
            name=str(raw["name"]),
            pool_id=str(raw["pool_id"]),
            replica=int(raw["replica"]),
            engine=str(raw["engine"]),
            pid=int(raw["pid"]),
            start_ticks=int(raw["start_ticks"]),
            boot_id=str(raw["boot_id"]),
            cmdline=tuple(str(part) for part in raw["cmdline"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable engine record %s: %s", path, exc)
        return None


def load_records(run_dir: Path) -> dict[Path, EngineRecord]:
    """Every readable record under `run_dir`, by path (unreadable ones are logged)."""
    found = {}
    for path in sorted(run_dir.glob(f"*{RECORD_SUFFIX}")):
        record = _read(path)
        if record is not None:
            found[path] = record
    return found


@dataclass(frozen=True, slots=True)
class Recovered:
    stopped: int  # engines (process groups) stopped
    forgotten: int  # records of engines no longer running
    survivors: tuple[int, ...]  # pids that outlived SIGKILL (should be none)
    runtimes: frozenset[str] = frozenset()  # container runtimes the records' engines ran on


def _observe(run_dir: Path) -> tuple[dict[Path, EngineRecord], set[Path], list[RecoveryAction]]:
    """Records, unreadable record files, and the plan (blocking: reads run/ and /proc)."""
    records = load_records(run_dir)
    unreadable = set(run_dir.glob(f"*{RECORD_SUFFIX}")) - set(records)
    return records, unreadable, plan_recovery(list(records.values()), scan_processes(), boot_id())


async def recover_engines(run_dir: Path, grace_s: float) -> Recovered:
    """Stop the engines a previous pool manager left (see module doc)."""
    records, unreadable, actions = await asyncio.to_thread(_observe, run_dir)
    paths = {record: path for path, record in records.items()}
    stopped, survivors = 0, []
    for action in actions:
        record = action.record
        if isinstance(action, StopGroup):
            log.warning(
                "pool %s replica %d: stopping engine pid %d (%s) left by a previous "
                "pool manager: %s",
                record.pool_id,
                record.replica,
                record.pid,
                record.engine,
                action.reason,
                extra={"pool_id": record.pool_id, "action": "recover"},
            )
            stopped += 1
            if not await stop_group(record.pid, action.pids, grace_s):
                left = [pid for pid in action.pids if process_facts(pid) is not None]
                if left:  # kept: the next start tries again
                    log.error(
                        "pool %s replica %d: processes %s of the engine survived SIGKILL",
                        record.pool_id,
                        record.replica,
                        left,
                        extra={"pool_id": record.pool_id, "action": "recover"},
                    )
                    survivors += left
                    continue
        elif isinstance(action, Forget):
            log.info(
                "pool %s replica %d: forgetting engine pid %d: %s",
                record.pool_id,
                record.replica,
                record.pid,
                action.reason,
                extra={"pool_id": record.pool_id, "action": "recover"},
            )
        remove_record(paths[record])
    for path in unreadable:
        remove_record(path)
    runtimes = frozenset(filter(None, (container_runtime(r.cmdline) for r in records.values())))
    return Recovered(stopped, len(actions) - stopped, tuple(survivors), runtimes)


async def recover_containers(runtimes: set[str], manager: str) -> int:
    """Remove every container labelled with this pool manager's id (`manager`) on
    `runtimes`: after `recover_engines` stopped their runtime clients, what is left of
    them is a predecessor's container. None is adopted (same reasons as for processes,
    `recovery`), so a start never runs a second set beside them. Returns how many."""
    removed = 0
    for runtime in sorted(runtimes):
        names, error = await list_containers(runtime, f"{MANAGER_LABEL}={manager}")
        if error:
            log.error(
                "cannot list the containers of this pool manager on %s: %s",
                runtime,
                error,
                extra={"action": "recover"},
            )
        for name in names:
            why = await remove_container(runtime, name)
            if why:
                log.error(
                    "cannot remove container %s left by a previous pool manager: %s",
                    name,
                    why,
                    extra={"action": "recover"},
                )
                continue
            log.warning(
                "removed container %s left by a previous pool manager",
                name,
                extra={"action": "recover"},
            )
            removed += 1
    return removed
